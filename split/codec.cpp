#include "split/codec.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/util/error.h"

namespace fedsplit {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the split wire format is little-endian");

constexpr char kMagic[4] = {'F', 'S', 'X', '1'};
constexpr uint8_t kIdsKind = 5;
constexpr int kMaxDims = 8;

enum class WireDtype : uint8_t { float32 = 0, float16 = 1, bfloat16 = 2, int64 = 3 };

WireDtype wire_dtype(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return WireDtype::float32;
    case torch::kHalf: return WireDtype::float16;
    case torch::kBFloat16: return WireDtype::bfloat16;
    case torch::kLong: return WireDtype::int64;
    default: TORCH_CHECK(false, "split codec: cannot send tensors of type ", t, " (float32, float16, bfloat16 only)");
  }
}

void put(std::string& out, const void* data, size_t n) { out.append(static_cast<const char*>(data), n); }

template <class T>
void put_value(std::string& out, T v) {
  put(out, &v, sizeof(T));
}

void put_tensor(std::string& out, const torch::Tensor& t) {
  const auto c = t.contiguous();
  put(out, c.data_ptr(), static_cast<size_t>(c.numel()) * c.element_size());
}

std::string header(uint8_t kind, WireDtype dtype, const torch::Tensor& t, uint8_t index_bytes) {
  TORCH_CHECK(t.dim() >= 1 && t.dim() <= kMaxDims, "split codec: tensors of 1 to ", kMaxDims,
              " dimensions, got ", t.sizes());
  std::string out(kMagic, 4);
  put_value<uint8_t>(out, kind);
  put_value<uint8_t>(out, static_cast<uint8_t>(dtype));
  put_value<uint8_t>(out, static_cast<uint8_t>(t.dim()));
  put_value<uint8_t>(out, index_bytes);
  for (int64_t s : t.sizes()) put_value<int64_t>(out, s);
  return out;
}

// Reads a message front to back; every read checks the bytes left first.
class Reader {
 public:
  Reader(const std::string& bytes, const std::string& what) : bytes_(bytes), what_(what) {}

  [[noreturn]] void fail(const std::string& why) const {
    throw FormatError("split message (" + what_ + "): " + why + "; the peer runs another version or the bytes were damaged");
  }
  const char* take(size_t n, const char* field) {
    if (n > bytes_.size() - pos_)
      fail("truncated at " + std::string(field) + " (" + std::to_string(bytes_.size()) + " bytes)");
    const char* p = bytes_.data() + pos_;
    pos_ += n;
    return p;
  }
  template <class T>
  T value(const char* field) {
    T v;
    std::memcpy(&v, take(sizeof(T), field), sizeof(T));
    return v;
  }
  // A CPU tensor of `numel` elements of `dtype` copied from the next bytes.
  torch::Tensor tensor(int64_t numel, torch::ScalarType dtype, const char* field) {
    const size_t element = c10::elementSize(dtype);
    if (static_cast<uint64_t>(numel) > (bytes_.size() - pos_) / element)
      fail("truncated at " + std::string(field) + " (" + std::to_string(bytes_.size()) + " bytes)");
    auto t = torch::empty({numel}, torch::TensorOptions().dtype(dtype));
    if (numel > 0) std::memcpy(t.data_ptr(), take(static_cast<size_t>(numel) * element, field), numel * element);
    return t;
  }
  void finish() const {
    if (pos_ != bytes_.size())
      fail(std::to_string(bytes_.size() - pos_) + " bytes past the end of the payload");
  }
  size_t left() const { return bytes_.size() - pos_; }

 private:
  const std::string& bytes_;
  std::string what_;
  size_t pos_ = 0;
};

struct Header {
  uint8_t kind = 0;
  WireDtype dtype = WireDtype::float32;
  uint8_t index_bytes = 0;
  std::vector<int64_t> sizes;
  int64_t numel = 1;
  int64_t row_length() const { return sizes.back(); }
  int64_t rows() const { return row_length() == 0 ? 0 : numel / row_length(); }
};

Header read_header(Reader& in) {
  Header h;
  if (std::memcmp(in.take(4, "magic"), kMagic, 4) != 0) in.fail("bad magic (not a split tensor message)");
  h.kind = in.value<uint8_t>("kind");
  const auto dtype = in.value<uint8_t>("dtype");
  const auto ndim = in.value<uint8_t>("ndim");
  h.index_bytes = in.value<uint8_t>("index width");
  if (h.kind > kIdsKind) in.fail("unknown codec kind " + std::to_string(h.kind));
  if (dtype > static_cast<uint8_t>(WireDtype::int64)) in.fail("unknown dtype " + std::to_string(dtype));
  h.dtype = static_cast<WireDtype>(dtype);
  if ((h.kind == kIdsKind) != (h.dtype == WireDtype::int64)) in.fail("dtype does not fit the codec kind");
  if (ndim < 1 || ndim > kMaxDims) in.fail("ndim " + std::to_string(ndim) + " outside 1.." + std::to_string(kMaxDims));
  const bool topk = h.kind == static_cast<uint8_t>(CodecKind::topk);
  if (topk ? (h.index_bytes != 2 && h.index_bytes != 4) : h.index_bytes != 0)
    in.fail("index width " + std::to_string(h.index_bytes) + " does not fit the codec kind");
  for (int i = 0; i < ndim; ++i) {
    const auto s = in.value<int64_t>("sizes");
    if (s < 0) in.fail("negative size " + std::to_string(s));
    if (s > 0 && h.numel > std::numeric_limits<int64_t>::max() / s) in.fail("sizes overflow");
    h.numel *= s;
    h.sizes.push_back(s);
  }
  // The encoder picks the index width from D; the check also bounds D (and the zeros decode_topk
  // allocates) by 65536 per row for the usual narrow indices.
  if (topk && (h.index_bytes == 2) != (h.row_length() <= 65536)) in.fail("index width does not fit the row length");
  return h;
}

torch::ScalarType torch_dtype(WireDtype d) {
  switch (d) {
    case WireDtype::float32: return torch::kFloat;
    case WireDtype::float16: return torch::kHalf;
    case WireDtype::bfloat16: return torch::kBFloat16;
    case WireDtype::int64: return torch::kLong;
  }
  return torch::kFloat;
}

void encode_int8(std::string& out, const torch::Tensor& rows) {
  const auto scale = rows.abs().amax(1) / 127.0f;
  const auto inverse = torch::where(scale > 0, 1.0f / scale, torch::zeros_like(scale));
  const auto q = (rows * inverse.unsqueeze(1)).round().clamp(-127, 127).to(torch::kInt8);
  put_tensor(out, scale);
  put_tensor(out, q);
}

torch::Tensor decode_int8(Reader& in, const Header& h) {
  const auto scale = in.tensor(h.rows(), torch::kFloat, "int8 scales");
  if (!torch::isfinite(scale).all().item<bool>() || (scale < 0).any().item<bool>())
    in.fail("int8 scales must be finite and >= 0");
  const auto q = in.tensor(h.numel, torch::kInt8, "int8 values");
  if (h.rows() == 0) return q.to(torch::kFloat);
  return q.reshape({h.rows(), h.row_length()}).to(torch::kFloat) * scale.unsqueeze(1);
}

void encode_topk(std::string& out, const torch::Tensor& rows, int64_t k) {
  put_value<uint32_t>(out, static_cast<uint32_t>(k));
  if (k == 0 || rows.size(0) == 0) return;
  const auto indices = std::get<0>(std::get<1>(rows.abs().topk(k, 1, /*largest=*/true, /*sorted=*/false)).sort(1));
  put_tensor(out, rows.gather(1, indices));
  // uint16 indices are written as int16's bytes (indices above 32767 wrap into the sign bit).
  put_tensor(out, rows.size(1) <= 65536 ? indices.to(torch::kInt32).to(torch::kInt16) : indices.to(torch::kInt32));
}

torch::Tensor decode_topk(Reader& in, const Header& h) {
  const auto k = static_cast<int64_t>(in.value<uint32_t>("topk count"));
  const int64_t D = h.row_length(), R = h.rows();
  if (k > D || (D > 0 && k == 0)) in.fail("topk count " + std::to_string(k) + " outside 1.." + std::to_string(D));
  if (R > 0 && k > 0 && static_cast<uint64_t>(R) > in.left() / static_cast<uint64_t>(k))
    in.fail("truncated at topk values");
  const auto values = in.tensor(R * k, torch::kFloat, "topk values");
  const bool narrow = h.index_bytes == 2;
  auto raw = in.tensor(R * k, narrow ? torch::kInt16 : torch::kInt32, "topk indices");
  // uint16 indices travel in int16's bytes: reinterpret as unsigned.
  auto indices = narrow ? raw.to(torch::kInt32).bitwise_and(0xffff).to(torch::kLong) : raw.to(torch::kLong);
  auto out = torch::zeros({R, D});
  if (R == 0 || k == 0) return out;
  indices = indices.reshape({R, k});
  const bool in_range = (indices.select(1, 0) >= 0).all().item<bool>() && (indices.select(1, k - 1) < D).all().item<bool>();
  const bool ascending = k == 1 || (indices.diff(1, 1) > 0).all().item<bool>();
  if (!in_range || !ascending) in.fail("topk indices out of range or not strictly ascending per row");
  return out.scatter_(1, indices, values.reshape({R, k}));
}

}  // namespace

Codec parse_codec(const std::string& text, const std::string& key) {
  const std::string accepted = "use fp32, fp16, bf16, int8 or topk:F with 0 < F <= 1 (e.g. topk:0.1)";
  Codec c;
  if (text == "fp32") c.kind = CodecKind::fp32;
  else if (text == "fp16") c.kind = CodecKind::fp16;
  else if (text == "bf16") c.kind = CodecKind::bf16;
  else if (text == "int8") c.kind = CodecKind::int8;
  else if (text.rfind("topk:", 0) == 0) {
    const std::string number = text.substr(5);
    size_t used = 0;
    double f = 0;
    try {
      f = std::stod(number, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (number.empty() || used != number.size() || !(f > 0 && f <= 1))
      throw ConfigError(key + " = '" + text + "': the topk fraction must be a number in (0, 1]; " + accepted);
    c.kind = CodecKind::topk;
    c.topk_fraction = f;
  } else {
    throw ConfigError(key + " = '" + text + "' is not a codec; " + accepted);
  }
  return c;
}

std::string to_string(const Codec& codec) {
  switch (codec.kind) {
    case CodecKind::fp32: return "fp32";
    case CodecKind::fp16: return "fp16";
    case CodecKind::bf16: return "bf16";
    case CodecKind::int8: return "int8";
    case CodecKind::topk: {
      std::string s = std::to_string(codec.topk_fraction);
      while (s.size() > 1 && s.back() == '0') s.pop_back();
      if (s.back() == '.') s.pop_back();
      return "topk:" + s;
    }
  }
  return "fp32";
}

int64_t topk_count(double fraction, int64_t row_length) {
  if (row_length <= 0) return 0;
  // The small slack keeps products such as 0.3 * 10 = 3.0000000000000004 at 3.
  const auto k = static_cast<int64_t>(std::ceil(fraction * static_cast<double>(row_length) - 1e-9));
  return std::min(std::max<int64_t>(k, 1), row_length);
}

std::string encode_tensor(const torch::Tensor& tensor, const Codec& codec) {
  const auto dtype = wire_dtype(tensor.scalar_type());
  TORCH_CHECK(dtype != WireDtype::int64, "split codec: encode_tensor takes floating-point tensors; use encode_token_ids");
  const auto t = tensor.detach().to(torch::kCPU).contiguous();
  const int64_t D = t.dim() >= 1 ? t.size(-1) : 1;
  const bool topk = codec.kind == CodecKind::topk;
  std::string out = header(static_cast<uint8_t>(codec.kind), dtype, t, topk ? (D <= 65536 ? 2 : 4) : 0);
  const auto flat = t.to(torch::kFloat).reshape({-1});
  const auto rows = D == 0 ? flat.reshape({0, 0}) : flat.reshape({-1, D});
  switch (codec.kind) {
    case CodecKind::fp32: put_tensor(out, flat); break;
    case CodecKind::fp16: put_tensor(out, flat.to(torch::kHalf)); break;
    case CodecKind::bf16: put_tensor(out, flat.to(torch::kBFloat16)); break;
    case CodecKind::int8: encode_int8(out, rows); break;
    case CodecKind::topk: encode_topk(out, rows, topk_count(codec.topk_fraction, D)); break;
  }
  return out;
}

torch::Tensor decode_tensor(const std::string& bytes, const std::string& what) {
  Reader in(bytes, what);
  const Header h = read_header(in);
  if (h.kind == kIdsKind) in.fail("token ids where a tensor was expected");
  torch::Tensor flat;
  switch (static_cast<CodecKind>(h.kind)) {
    case CodecKind::fp32: flat = in.tensor(h.numel, torch::kFloat, "fp32 values"); break;
    case CodecKind::fp16: flat = in.tensor(h.numel, torch::kHalf, "fp16 values"); break;
    case CodecKind::bf16: flat = in.tensor(h.numel, torch::kBFloat16, "bf16 values"); break;
    case CodecKind::int8: flat = decode_int8(in, h); break;
    case CodecKind::topk: flat = decode_topk(in, h); break;
  }
  in.finish();
  return flat.to(torch_dtype(h.dtype)).reshape(h.sizes);
}

std::string encode_token_ids(const torch::Tensor& ids) {
  TORCH_CHECK(ids.scalar_type() == torch::kLong, "split codec: token ids must be int64, got ", ids.scalar_type());
  const auto t = ids.detach().to(torch::kCPU).contiguous();
  if (t.numel() > 0) {
    const auto [lo, hi] = torch::aminmax(t);
    TORCH_CHECK(lo.item<int64_t>() >= 0 && hi.item<int64_t>() <= std::numeric_limits<int32_t>::max(),
                "split codec: token ids must lie in [0, 2^31)");
  }
  std::string out = header(kIdsKind, WireDtype::int64, t, 0);
  put_tensor(out, t.to(torch::kInt32));
  return out;
}

torch::Tensor decode_token_ids(const std::string& bytes, const std::string& what) {
  Reader in(bytes, what);
  const Header h = read_header(in);
  if (h.kind != kIdsKind) in.fail("a tensor where token ids were expected");
  const auto ids = in.tensor(h.numel, torch::kInt32, "token ids");
  in.finish();
  if (h.numel > 0 && (ids < 0).any().item<bool>()) in.fail("negative token ids");
  return ids.to(torch::kLong).reshape(h.sizes);
}

}  // namespace fedsplit
