#include "core/io/hdf5.h"

#include <torch/torch.h>

#include <algorithm>

#include "core/util/error.h"
#include "core/util/fs.h"

namespace fedsplit::h5 {
namespace {

// HDF5 prints its own error stack to stderr by default; fedsplit reports one line instead.
struct SilenceHdf5 {
  SilenceHdf5() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};
const SilenceHdf5 silence_hdf5;

hid_t check(hid_t id, const std::string& what) {
  if (id < 0) throw IoError("HDF5: " + what);
  return id;
}
void check_status(herr_t status, const std::string& what) {
  if (status < 0) throw IoError("HDF5: " + what);
}

hid_t native_type(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return H5T_NATIVE_FLOAT;
    case torch::kDouble: return H5T_NATIVE_DOUBLE;
    case torch::kInt: return H5T_NATIVE_INT32;
    case torch::kLong: return H5T_NATIVE_INT64;
    case torch::kShort: return H5T_NATIVE_INT16;
    case torch::kByte: return H5T_NATIVE_UINT8;
    case torch::kChar: return H5T_NATIVE_INT8;
    default: return -1;
  }
}

torch::ScalarType scalar_type_of(hid_t type, const std::string& where) {
  const H5T_class_t cls = H5Tget_class(type);
  const size_t size = H5Tget_size(type);
  if (cls == H5T_FLOAT) {
    if (size == 4) return torch::kFloat;
    if (size == 8) return torch::kDouble;
  } else if (cls == H5T_INTEGER) {
    const bool is_signed = H5Tget_sign(type) == H5T_SGN_2;
    if (size == 8 && is_signed) return torch::kLong;
    if (size == 4 && is_signed) return torch::kInt;
    if (size == 2 && is_signed) return torch::kShort;
    if (size == 1) return is_signed ? torch::kChar : torch::kByte;
  }
  throw FormatError(where + ": unsupported HDF5 element type (class " + std::to_string(cls) + ", " +
                    std::to_string(size) + " bytes)");
}

std::string join(const std::string& base, const std::string& name) {
  if (base.empty() || base == "/") return "/" + name;
  return base + "/" + name;
}

}  // namespace

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = -1;
  }
  return *this;
}

void Handle::reset() {
  if (id_ >= 0 && closer_) closer_(id_);
  id_ = -1;
}

Group Group::create_file(const std::string& path, bool overwrite) {
  if (!overwrite && path_exists(path)) throw IoError(path + " already exists: choose another path or remove it");
  hid_t id = H5Fcreate(path.c_str(), overwrite ? H5F_ACC_TRUNC : H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT);
  if (id < 0) throw IoError("cannot create HDF5 file " + path + ": check the directory exists and is writable");
  return Group(Handle(id, H5Fclose), path, "/");
}

Group Group::open_file(const std::string& path, bool writable) {
  if (!path_exists(path)) throw IoError("cannot open " + path + ": no such file");
#if H5_VERSION_GE(1, 12, 0)
  const htri_t is_hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT);
#else
  const htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
#endif
  if (is_hdf5 <= 0)
    throw FormatError(path + " is not a readable HDF5 file (truncated or corrupt?): regenerate it");
  hid_t id = H5Fopen(path.c_str(), writable ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (id < 0) throw FormatError("cannot open HDF5 file " + path + " (truncated or corrupt?): regenerate it");
  return Group(Handle(id, H5Fclose), path, "/");
}

std::string Group::where(const std::string& child) const {
  return file_ + ":" + (child.empty() ? path_ : join(path_, child));
}

bool Group::has(const std::string& name) const {
  // Walk the path one link at a time: H5Lexists fails on a missing intermediate group.
  std::string prefix;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t slash = name.find('/', start);
    const std::string part = name.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    prefix = prefix.empty() ? part : prefix + "/" + part;
    if (H5Lexists(id(), prefix.c_str(), H5P_DEFAULT) <= 0) return false;
    if (slash == std::string::npos) break;
    start = slash + 1;
  }
  return true;
}

Group Group::create_group(const std::string& name) const {
  hid_t gid = H5Gcreate2(id(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  check(gid, "cannot create group " + where(name));
  return Group(Handle(gid, H5Gclose), file_, join(path_, name));
}

Group Group::group(const std::string& name) const {
  if (!has(name)) throw FormatError(where(name) + " is missing: the file was not written by this fedsplit version or is incomplete");
  hid_t gid = H5Gopen2(id(), name.c_str(), H5P_DEFAULT);
  check(gid, "cannot open group " + where(name));
  return Group(Handle(gid, H5Gclose), file_, join(path_, name));
}

std::vector<std::string> Group::children() const {
  // By index rather than H5Literate, whose callback signature changed between HDF5 1.10 and 1.12.
  H5G_info_t info;
  check_status(H5Gget_info(id(), &info), "cannot list " + where());
  std::vector<std::string> names;
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    const ssize_t len = H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) throw IoError("HDF5: cannot list " + where());
    std::string name(static_cast<size_t>(len), '\0');
    H5Lget_name_by_idx(id(), ".", H5_INDEX_NAME, H5_ITER_INC, i, name.data(), name.size() + 1, H5P_DEFAULT);
    names.push_back(std::move(name));
  }
  std::sort(names.begin(), names.end());
  return names;
}

void Group::write_tensor(const std::string& name, const at::Tensor& tensor, int64_t chunk_rows,
                         bool compress) const {
  torch::Tensor t = tensor.detach().to(torch::kCPU);
  if (t.scalar_type() == torch::kBool) t = t.to(torch::kByte);
  if (t.scalar_type() == torch::kBFloat16 || t.scalar_type() == torch::kHalf) t = t.to(torch::kFloat);
  t = t.contiguous();
  const hid_t type = native_type(t.scalar_type());
  if (type < 0) throw Error("cannot store a tensor of type " + std::string(c10::toString(t.scalar_type())) + " in HDF5");
  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  Handle space(check(H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
                     "cannot make dataspace for " + where(name)), H5Sclose);
  Handle props(check(H5Pcreate(H5P_DATASET_CREATE), "property list"), H5Pclose);
  if (chunk_rows > 0 && !dims.empty() && dims[0] > 0) {
    std::vector<hsize_t> chunk = dims;
    chunk[0] = std::min<hsize_t>(dims[0], static_cast<hsize_t>(chunk_rows));
    for (size_t i = 1; i < chunk.size(); ++i) chunk[i] = std::max<hsize_t>(chunk[i], 1);
    check_status(H5Pset_chunk(props.id(), static_cast<int>(chunk.size()), chunk.data()), "chunking");
    if (compress) check_status(H5Pset_deflate(props.id(), 4), "compression");
  }
  Handle ds(check(H5Dcreate2(id(), name.c_str(), type, space.id(), H5P_DEFAULT, props.id(), H5P_DEFAULT),
                  "cannot create dataset " + where(name) + " (does it exist already?)"),
            H5Dclose);
  if (t.numel() > 0)
    check_status(H5Dwrite(ds.id(), type, H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()),
                 "cannot write " + where(name) + " (disk full?)");
}

std::vector<int64_t> Group::shape(const std::string& name) const {
  if (!has(name)) throw FormatError(where(name) + " is missing: the file is incomplete or of another kind");
  Handle ds(check(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), "cannot open " + where(name)), H5Dclose);
  Handle space(check(H5Dget_space(ds.id()), "dataspace of " + where(name)), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(space.id());
  std::vector<hsize_t> dims(static_cast<size_t>(std::max(rank, 0)));
  H5Sget_simple_extent_dims(space.id(), dims.data(), nullptr);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

at::Tensor Group::read_tensor(const std::string& name) const {
  const auto dims = shape(name);
  return dims.empty() ? read_rows(name, 0, 1).reshape({}) : read_rows(name, 0, dims[0]);
}

at::Tensor Group::read_rows(const std::string& name, int64_t begin, int64_t end) const {
  const auto dims = shape(name);
  Handle ds(check(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), "cannot open " + where(name)), H5Dclose);
  Handle ftype(check(H5Dget_type(ds.id()), "type of " + where(name)), H5Tclose);
  const auto st = scalar_type_of(ftype.id(), where(name));
  Handle fspace(check(H5Dget_space(ds.id()), "dataspace of " + where(name)), H5Sclose);
  std::vector<int64_t> out_dims = dims;
  if (!dims.empty()) {
    if (begin < 0 || end < begin || end > dims[0])
      throw DataError(where(name) + ": rows [" + std::to_string(begin) + ", " + std::to_string(end) +
                      ") out of range (" + std::to_string(dims[0]) + " rows)");
    out_dims[0] = end - begin;
  }
  auto out = torch::empty(out_dims, torch::TensorOptions().dtype(st));
  if (out.numel() == 0) return out;
  Handle mspace;
  if (!dims.empty()) {
    std::vector<hsize_t> start(dims.size(), 0), count(dims.begin(), dims.end());
    start[0] = static_cast<hsize_t>(begin);
    count[0] = static_cast<hsize_t>(end - begin);
    check_status(H5Sselect_hyperslab(fspace.id(), H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
                 "row selection in " + where(name));
    mspace = Handle(check(H5Screate_simple(static_cast<int>(count.size()), count.data(), nullptr), "memspace"),
                    H5Sclose);
  }
  const herr_t status = H5Dread(ds.id(), native_type(st), dims.empty() ? H5S_ALL : mspace.id(),
                                dims.empty() ? H5S_ALL : fspace.id(), H5P_DEFAULT, out.data_ptr());
  if (status < 0) throw FormatError("cannot read " + where(name) + " (file truncated or corrupt?)");
  return out;
}

namespace {
void write_attr(hid_t obj, const std::string& where, const std::string& key, hid_t type, const void* data) {
  if (H5Aexists(obj, key.c_str()) > 0) H5Adelete(obj, key.c_str());
  Handle space(check(H5Screate(H5S_SCALAR), "scalar space"), H5Sclose);
  Handle attr(check(H5Acreate2(obj, key.c_str(), type, space.id(), H5P_DEFAULT, H5P_DEFAULT),
                    "cannot create attribute " + key + " on " + where),
              H5Aclose);
  check_status(H5Awrite(attr.id(), type, data), "cannot write attribute " + key + " on " + where);
}

Handle open_attr(hid_t obj, const std::string& where, const std::string& key) {
  if (H5Aexists(obj, key.c_str()) <= 0)
    throw FormatError(where + " has no attribute '" + key + "': the file is incomplete or of another kind");
  return Handle(check(H5Aopen(obj, key.c_str(), H5P_DEFAULT), "cannot open attribute " + key), H5Aclose);
}

Handle string_type() {
  Handle type(check(H5Tcopy(H5T_C_S1), "string type"), H5Tclose);
  check_status(H5Tset_size(type.id(), H5T_VARIABLE), "string type");
  check_status(H5Tset_cset(type.id(), H5T_CSET_UTF8), "string type");
  return type;
}
}  // namespace

void Group::set_attr(const std::string& key, const std::string& value) const {
  Handle type = string_type();
  const char* data = value.c_str();
  write_attr(id(), where(), key, type.id(), &data);
}
void Group::set_attr(const std::string& key, int64_t value) const {
  write_attr(id(), where(), key, H5T_NATIVE_INT64, &value);
}
void Group::set_attr(const std::string& key, double value) const {
  write_attr(id(), where(), key, H5T_NATIVE_DOUBLE, &value);
}
bool Group::has_attr(const std::string& key) const { return H5Aexists(id(), key.c_str()) > 0; }

std::string Group::attr_string(const std::string& key) const {
  Handle attr = open_attr(id(), where(), key);
  Handle type = string_type();
  char* data = nullptr;
  check_status(H5Aread(attr.id(), type.id(), &data), "cannot read attribute " + key + " of " + where());
  std::string out = data ? data : "";
  H5free_memory(data);
  return out;
}
int64_t Group::attr_int(const std::string& key) const {
  Handle attr = open_attr(id(), where(), key);
  int64_t v = 0;
  check_status(H5Aread(attr.id(), H5T_NATIVE_INT64, &v), "cannot read attribute " + key + " of " + where());
  return v;
}
double Group::attr_double(const std::string& key) const {
  Handle attr = open_attr(id(), where(), key);
  double v = 0;
  check_status(H5Aread(attr.id(), H5T_NATIVE_DOUBLE, &v), "cannot read attribute " + key + " of " + where());
  return v;
}

void Group::write_strings(const std::string& name, const std::vector<std::string>& values) const {
  Handle type = string_type();
  hsize_t n = values.size();
  Handle space(check(H5Screate_simple(1, &n, nullptr), "dataspace"), H5Sclose);
  Handle ds(check(H5Dcreate2(id(), name.c_str(), type.id(), space.id(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                  "cannot create dataset " + where(name)),
            H5Dclose);
  std::vector<const char*> ptrs;
  ptrs.reserve(values.size());
  for (const auto& v : values) ptrs.push_back(v.c_str());
  if (n > 0)
    check_status(H5Dwrite(ds.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()),
                 "cannot write " + where(name));
}

std::vector<std::string> Group::read_strings(const std::string& name) const {
  const auto dims = shape(name);
  if (dims.size() != 1) throw FormatError(where(name) + " is not a list of strings");
  Handle ds(check(H5Dopen2(id(), name.c_str(), H5P_DEFAULT), "cannot open " + where(name)), H5Dclose);
  Handle type = string_type();
  std::vector<char*> ptrs(static_cast<size_t>(dims[0]), nullptr);
  if (!ptrs.empty() && H5Dread(ds.id(), type.id(), H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()) < 0)
    throw FormatError("cannot read " + where(name) + " (file truncated or corrupt?)");
  std::vector<std::string> out;
  out.reserve(ptrs.size());
  for (char* p : ptrs) {
    out.emplace_back(p ? p : "");
    H5free_memory(p);
  }
  return out;
}

}  // namespace fedsplit::h5
