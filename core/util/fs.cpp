#include "core/util/fs.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/util/error.h"

namespace fedsplit {

namespace sfs = std::filesystem;

void write_atomically(const std::string& path, const std::function<void(const std::string&)>& write) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  try {
    write(tmp);
  } catch (...) {
    std::error_code ec;
    sfs::remove(tmp, ec);
    throw;
  }
  std::error_code ec;
  sfs::rename(tmp, path, ec);
  if (ec) {
    sfs::remove(tmp, ec);
    throw IoError("cannot move " + tmp + " into place as " + path + ": " + ec.message());
  }
}

void write_text_atomically(const std::string& path, const std::string& text) {
  write_atomically(path, [&](const std::string& tmp) {
    std::ofstream out(tmp, std::ios::binary);
    if (!out) throw IoError("cannot write " + tmp + ": check the directory exists and is writable");
    out << text;
    out.close();
    if (!out) throw IoError("failed writing " + tmp + " (disk full?)");
  });
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError("cannot read " + path + ": file missing or not readable");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void make_dirs(const std::string& path) {
  std::error_code ec;
  sfs::create_directories(path, ec);
  if (ec) throw IoError("cannot create directory " + path + ": " + ec.message());
}

bool path_exists(const std::string& path) {
  std::error_code ec;
  return sfs::exists(path, ec);
}

void remove_tree(const std::string& path) {
  ::nftw(path.c_str(), [](const char* p, const struct stat*, int, struct FTW*) { std::remove(p); return 0; }, 16,
         FTW_DEPTH | FTW_PHYS);
}

MappedFile::MappedFile(const std::string& path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) throw IoError("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd_, &st) != 0) {
    const int err = errno;
    ::close(fd_);
    throw IoError("cannot stat " + path + ": " + std::strerror(err));
  }
  size_ = static_cast<size_t>(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd_, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd_);
      throw IoError("cannot map " + path + ": " + std::strerror(err));
    }
    data_ = static_cast<const char*>(p);
  }
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) ::munmap(const_cast<char*>(data_), size_);
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace fedsplit
