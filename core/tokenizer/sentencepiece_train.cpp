// train_sentencepiece: validates the options, runs Debian's `spm_train` program (libsentencepiece
// cannot be linked beside LibTorch) under a temporary prefix next to the target, then renames the
// files into place.
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <sstream>

#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "core/util/log.h"

extern char** environ;

namespace fedsplit {

namespace {

namespace sfs = std::filesystem;

void validate(const SentencePieceTrainOptions& o) {
  const auto bad = [](const std::string& what) { throw ConfigError("train_sentencepiece: " + what); };
  if (o.model_prefix.empty()) bad("model_prefix is empty: give the output path without extension");
  if (o.vocab_size <= 0) bad("vocab_size is " + std::to_string(o.vocab_size) + ": it must be > 0");
  if (o.model_type != "bpe" && o.model_type != "unigram")
    bad("model_type '" + o.model_type + "' is unknown: use bpe or unigram");
  if (!(o.character_coverage > 0.0 && o.character_coverage <= 1.0))
    bad("character_coverage " + std::to_string(o.character_coverage) + " is outside (0, 1]");
  if (o.input_sentence_size < 0) bad("input_sentence_size is negative: use 0 for all sentences");
  if (o.max_sentence_length <= 0) bad("max_sentence_length must be > 0");
  if (o.num_threads <= 0) bad("num_threads must be > 0");
  std::error_code ec;
  if (o.input.empty() || !sfs::is_regular_file(o.input, ec))
    throw IoError("train_sentencepiece: input '" + o.input + "' is not a readable file: give a text file, one "
                  "sentence or paragraph per line");
}

void remove_files(const std::string& prefix) {
  std::error_code ec;
  for (const char* ext : {".model", ".vocab", ".log"}) sfs::remove(prefix + ext, ec);
}

// The last non-empty lines of the trainer's log: where it says what went wrong.
std::string log_tail(const std::string& path, size_t lines) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const IoError&) {
    return "(no log)";
  }
  std::vector<std::string> kept;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);)
    if (line.find_first_not_of(" \t\r") != std::string::npos) kept.push_back(line);
  std::string out;
  for (size_t i = kept.size() > lines ? kept.size() - lines : 0; i < kept.size(); ++i) out += (out.empty() ? "" : " | ") + kept[i];
  return out;
}

// Runs `argv` (looked up on PATH) with stdout and stderr going to `log`; returns its wait status.
int run_program(const std::vector<std::string>& argv, const std::string& log) {
  posix_spawn_file_actions_t actions;
  if (const int rc = posix_spawn_file_actions_init(&actions); rc != 0)
    throw IoError(std::string("train_sentencepiece: posix_spawn_file_actions_init: ") + std::strerror(rc));
  int rc = posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  if (rc != 0) {
    posix_spawn_file_actions_destroy(&actions);
    throw IoError(std::string("train_sentencepiece: cannot redirect the trainer's output: ") + std::strerror(rc));
  }
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  rc = posix_spawnp(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0)
    throw IoError("train_sentencepiece: cannot run " + argv[0] + " (" + std::strerror(rc) +
                  "): install the Debian package sentencepiece (scripts/setup)");
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw IoError(std::string("train_sentencepiece: waitpid failed: ") + std::strerror(errno));
  }
  return status;
}

}  // namespace

void train_sentencepiece(const SentencePieceTrainOptions& o) {
  validate(o);
  const sfs::path dir = sfs::path(o.model_prefix).parent_path();
  if (!dir.empty()) make_dirs(dir.string());
  // Unique per process and call, so concurrent trainings into one directory do not collide.
  static std::atomic<int> counter{0};
  const std::string tmp = o.model_prefix + ".tmp" + std::to_string(::getpid()) + "_" + std::to_string(counter++);

  // One argv entry per flag: paths with spaces or quotes need no escaping (no shell involved).
  const std::vector<std::string> argv = {
      "spm_train",
      "--input=" + o.input,
      "--model_prefix=" + tmp,
      "--vocab_size=" + std::to_string(o.vocab_size),
      "--model_type=" + o.model_type,
      std::string("--byte_fallback=") + (o.byte_fallback ? "true" : "false"),
      "--character_coverage=" + std::to_string(o.character_coverage),
      "--input_sentence_size=" + std::to_string(o.input_sentence_size),
      "--shuffle_input_sentence=true",
      "--max_sentence_length=" + std::to_string(o.max_sentence_length),
      "--num_threads=" + std::to_string(o.num_threads),
      "--unk_id=0",
      "--bos_id=1",
      "--eos_id=2",
      "--pad_id=-1",
  };
  log_info("training SentencePiece ", o.model_type, " (vocab ", o.vocab_size, ") on ", o.input);
  const int status = run_program(argv, tmp + ".log");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string how = WIFEXITED(status) ? "exit status " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status));
    const std::string tail = log_tail(tmp + ".log", 2);
    remove_files(tmp);
    // Failures here are almost always the options against this text (vocab_size too high or low).
    throw ConfigError("train_sentencepiece on " + o.input + " failed (spm_train " + how + "): " + tail +
                      ": adjust vocab_size or the other options");
  }
  std::error_code ec;
  // The .vocab goes first: a .model in place means the pair is complete.
  for (const char* ext : {".vocab", ".model"}) {
    sfs::rename(tmp + ext, o.model_prefix + ext, ec);
    if (ec) {
      remove_files(tmp);
      throw IoError("cannot move " + tmp + ext + " into place as " + o.model_prefix + ext + ": " + ec.message());
    }
  }
  sfs::remove(tmp + ".log", ec);
  log_info("wrote ", o.model_prefix, ".model and .vocab");
}

}  // namespace fedsplit
