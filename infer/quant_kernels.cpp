#include "infer/quant_kernels.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/util/error.h"
#include "infer/quant_kernels_impl.h"
#include "infer/thread_pool.h"

namespace fedsplit {
namespace quant_detail {
namespace {

float load_fp16(const uint8_t* p) {
  return fp16_to_fp32(static_cast<uint16_t>(p[0] | (p[1] << 8)));
}

// Integer dots of one block, written so that GCC vectorises them at -O2 (fixed trip count).
int32_t dot_i8_block(const int8_t* w, const int8_t* x) {
  int32_t sum = 0;
  for (int j = 0; j < kBlock; ++j) sum += static_cast<int32_t>(w[j]) * static_cast<int32_t>(x[j]);
  return sum;
}

int32_t dot_q4_block(const uint8_t* nibbles, const int8_t* x) {
  int32_t lo = 0;
  int32_t hi = 0;
  for (int j = 0; j < kBlock / 2; ++j) {
    lo += (static_cast<int32_t>(nibbles[j] & 0x0F) - 8) * static_cast<int32_t>(x[j]);
    hi += (static_cast<int32_t>(nibbles[j] >> 4) - 8) * static_cast<int32_t>(x[j + kBlock / 2]);
  }
  return lo + hi;
}

}  // namespace

float dot_q8_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks) {
  float acc = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * kQ8_0Bytes;
    const int32_t dot = dot_i8_block(reinterpret_cast<const int8_t*>(blk + 2), xq + b * kBlock);
    acc += load_fp16(blk) * xs[b] * static_cast<float>(dot);
  }
  return acc;
}

float dot_q4_0_portable(const uint8_t* row, const float* xs, const int8_t* xq, int64_t blocks) {
  float acc = 0.0f;
  for (int64_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = row + b * kQ4_0Bytes;
    const int32_t dot = dot_q4_block(blk + 2, xq + b * kBlock);
    acc += load_fp16(blk) * xs[b] * static_cast<float>(dot);
  }
  return acc;
}

}  // namespace quant_detail

namespace {

using namespace quant_detail;

std::atomic<bool> g_force_portable{false};
std::atomic<bool> g_no_vnni{false};

bool cpu_has_avx2() {
#if defined(FEDSPLIT_AVX2_KERNELS)
  // Every CPU with AVX2 and FMA (Haswell, Zen and later) also has F16C.
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

bool use_avx2() { return !g_force_portable.load(std::memory_order_relaxed) && cpu_has_avx2(); }

// AVX512-VNNI's dpbusd (with -VL and -BW for the 256- and 512-bit forms) replaces two or three
// AVX2 instructions per product; the results are identical.
bool cpu_has_vnni() {
#if defined(FEDSPLIT_AVX2_KERNELS)
  static const bool has = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512bw");
  return has && !g_no_vnni.load(std::memory_order_relaxed);
#else
  return false;
#endif
}

#if defined(FEDSPLIT_AVX2_KERNELS)
struct AvxKernels {
  GemmRows gemm;
  GemvRows gemv;
  GroupGemm groups;    // the interleaved layout's
  int64_t group_tile;  // its ActTiles::tile
  int32_t group_bias;  // its Bias (see ActTiles)
};

AvxKernels pick_avx(GgmlType type) {
  const bool q8 = type == GgmlType::Q8_0;
  if (cpu_has_vnni())
    return q8 ? AvxKernels{gemm_q8_0_vnni, gemv_q8_0_vnni, gemm_q8_0x16_vnni, kGroupTileVnni, 128}
              : AvxKernels{gemm_q4_0_vnni, gemv_q4_0_vnni, gemm_q4_0x16_vnni, kGroupTileVnni, 8};
  return q8 ? AvxKernels{gemm_q8_0_avx2, gemv_q8_0_avx2, gemm_q8_0x16_avx2, kGroupTileAvx2, 0}
            : AvxKernels{gemm_q4_0_avx2, gemv_q4_0_avx2, gemm_q4_0x16_avx2, kGroupTileAvx2, 8};
}
#endif

void check_matrix(const QuantMatrix& w, int64_t batch) {
  if (w.type != GgmlType::Q8_0 && w.type != GgmlType::Q4_0)
    throw DataError("quant kernels: weight type " + ggml_type_name(static_cast<uint32_t>(w.type)) +
                    " is not supported (Q8_0 or Q4_0 only; use LibTorch for F32/F16)");
  if (w.cols <= 0 || w.cols % kBlock != 0 || w.rows < 0)
    throw DataError("quant kernels: " + ggml_type_name(static_cast<uint32_t>(w.type)) + " matrix " +
                    std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                    " needs rows >= 0 and cols a positive multiple of 32");
  if (batch < 0) throw DataError("quant kernels: negative batch " + std::to_string(batch));
  if (w.rows > 0 && w.data == nullptr) throw DataError("quant kernels: weight data is null");
}

int64_t block_bytes_of(GgmlType type) { return type == GgmlType::Q8_0 ? kQ8_0Bytes : kQ4_0Bytes; }

int64_t row_bytes_of(const QuantMatrix& w) { return w.cols / kBlock * block_bytes_of(w.type); }

// Full interleaved row groups of w (the rows after them are plain).
int64_t full_groups(const QuantMatrix& w) {
  return w.layout == QuantLayout::interleaved ? w.rows / kGroupRows : 0;
}

// Calls move(plain, interleaved, bytes) for each piece of row `row` (inside a full group) of a
// matrix of `type` with `blocks` blocks a row: every block's 2-byte scale and 4-byte code chunks,
// `plain` its offset in the row as GGUF stores it, `interleaved` its offset in the interleaved
// matrix. Converting either way is copying each piece.
template <class Move>
void for_each_group_piece(GgmlType type, int64_t row, int64_t blocks, Move move) {
  const int64_t block_bytes = block_bytes_of(type), group = row / kGroupRows, k = row % kGroupRows;
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t blk = (group * blocks + b) * kGroupRows * block_bytes;  // the group's block b
    move(b * block_bytes, blk + 2 * k, 2);
    for (int64_t i = 0; i < (block_bytes - 2) / 4; ++i)
      move(b * block_bytes + 2 + 4 * i, blk + 2 * kGroupRows + 4 * k + i * kGroupChunkBytes, 4);
  }
}

// Row `row` of w as GGUF stores it (row_bytes_of(w) bytes into out), whatever w's layout.
void copy_plain_row(const QuantMatrix& w, int64_t row, uint8_t* out) {
  const int64_t row_bytes = row_bytes_of(w);
  if (row >= full_groups(w) * kGroupRows) {  // plain rows keep their plain offset
    std::memcpy(out, w.data + row * row_bytes, static_cast<size_t>(row_bytes));
    return;
  }
  for_each_group_piece(w.type, row, w.cols / kBlock, [&](int64_t plain, int64_t interleaved, int64_t bytes) {
    std::memcpy(out + plain, w.data + interleaved, static_cast<size_t>(bytes));
  });
}

// Q8 blocks of one activation row: scale = absmax / 127, codes = x / scale rounded to nearest
// (even on ties). A block with a non-finite value gets a NaN scale and zero codes, so the outputs
// become NaN instead of undefined int8 conversions.
void quantize_activation(const float* x, int64_t cols, float* scales, int8_t* codes) {
  for (int64_t b = 0; b < cols / kBlock; ++b) {
    const float* xb = x + b * kBlock;
    int8_t* qb = codes + b * kBlock;
    float amax = 0.0f;
    bool finite = true;
    for (int j = 0; j < kBlock; ++j) {
      amax = std::max(amax, std::fabs(xb[j]));
      finite = finite && std::isfinite(xb[j]);
    }
    if (!finite) {
      scales[b] = std::numeric_limits<float>::quiet_NaN();
      std::fill(qb, qb + kBlock, int8_t{0});
      continue;
    }
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    scales[b] = d;
    for (int j = 0; j < kBlock; ++j) {
      const float v = std::min(127.0f, std::max(-127.0f, std::nearbyint(xb[j] * id)));
      qb[j] = static_cast<int8_t>(v);
    }
  }
}

// Portable: rows [r0, r1) of W against all `batch` quantized activations, in tiles of rows so that
// a tile of W stays in cache across the batch. y[n * rows + r]. An interleaved matrix's tile is
// first copied back to plain rows: the same dots in the same order, so the same bits.
void run_rows_portable(const QuantMatrix& w, RowDot dot, int64_t r0, int64_t r1, const float* xs, const int8_t* xq,
                       int64_t batch, float* y) {
  constexpr int64_t kRowTile = 16;
  const int64_t blocks = w.cols / kBlock;
  const int64_t row_bytes = row_bytes_of(w);
  const bool plain = w.layout == QuantLayout::plain;
  std::vector<uint8_t> tile(plain ? 0 : static_cast<size_t>(kRowTile * row_bytes));
  for (int64_t t0 = r0; t0 < r1; t0 += kRowTile) {
    const int64_t t1 = std::min(r1, t0 + kRowTile);
    for (int64_t r = t0; !plain && r < t1; ++r) copy_plain_row(w, r, tile.data() + (r - t0) * row_bytes);
    const uint8_t* rows = plain ? w.data + t0 * row_bytes : tile.data();
    for (int64_t n = 0; n < batch; ++n) {
      const float* s = xs + n * blocks;
      const int8_t* q = xq + n * w.cols;
      float* yn = y + n * w.rows;
      for (int64_t r = t0; r < t1; ++r) yn[r] = dot(rows + (r - t0) * row_bytes, s, q, blocks);
    }
  }
}

// Threads only pay off past ~64K multiply-adds.
int threads_for(const QuantMatrix& w, int64_t batch, int threads) {
  constexpr int64_t kMinWorkForThreads = int64_t{1} << 16;
  return w.rows * w.cols * batch < kMinWorkForThreads ? 1 : threads;
}

void matmul_portable(const QuantMatrix& w, const float* x, int64_t batch, float* y, int threads) {
  const int64_t blocks = w.cols / kBlock;
  std::vector<float> xs(static_cast<size_t>(batch * blocks));
  std::vector<int8_t> xq(static_cast<size_t>(batch * w.cols));
  parallel_for(batch >= 8 ? threads : 1, batch, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) quantize_activation(x + n * w.cols, w.cols, xs.data() + n * blocks, xq.data() + n * w.cols);
  });
  const RowDot dot = w.type == GgmlType::Q8_0 ? dot_q8_0_portable : dot_q4_0_portable;
  parallel_for(threads_for(w, batch, threads), w.rows, [&](int64_t r0, int64_t r1) {
    run_rows_portable(w, dot, r0, r1, xs.data(), xq.data(), batch, y);
  });
}

#if defined(FEDSPLIT_AVX2_KERNELS)
// From this many activation rows on, the GEMM tile (lanes = activation rows) beats one GEMV per row.
// Both give the same bits, so the switch point changes speed only.
constexpr int64_t kGemmMinBatch = 4;

// The quantized activation rows, in the forms the kernels read.
struct AvxActs {
  std::vector<float> xs;       // [batch][blocks]: the GEMV's
  std::vector<int8_t> xq;      // [batch][cols]
  std::vector<int32_t> xsum;   // [batch][blocks]
  std::vector<int8_t> pcodes;  // PackedActs: the plain GEMM's
  std::vector<float> pscales;
  std::vector<int32_t> psums;
  std::vector<int8_t> tcodes;  // ActTiles: the interleaved groups'
  std::vector<float> tscales;
  std::vector<int32_t> tbias;
};

// Rows [r0, r1) of a plain matrix (or of the plain rows after an interleaved matrix's groups).
void plain_rows_avx2(const QuantMatrix& w, const AvxKernels& k, int64_t r0, int64_t r1, const AvxActs& acts,
                     const PackedActs& packed, int64_t batch, float* y) {
  const int64_t row_bytes = row_bytes_of(w);
  const int64_t blocks = w.cols / kBlock;
  if (batch >= kGemmMinBatch) return k.gemm(w.data, row_bytes, r0, r1, packed, batch, y, w.rows);
  for (int64_t n = 0; n < batch; ++n)
    k.gemv(w.data, row_bytes, r0, r1, acts.xs.data() + n * blocks, acts.xq.data() + n * w.cols,
           acts.xsum.data() + n * blocks, blocks, y + n * w.rows);
}

void matmul_avx2(const QuantMatrix& w, const float* x, int64_t batch, float* y, int threads) {
  const int64_t blocks = w.cols / kBlock;
  const int64_t groups = full_groups(w);
  const int64_t plain_rows = w.rows - groups * kGroupRows;
  const AvxKernels k = pick_avx(w.type);
  // The plain GEMM reads PackedActs, the interleaved groups ActTiles, the GEMV plain rows.
  const bool pack = batch >= kGemmMinBatch && plain_rows > 0;
  const int64_t lane_groups = 2 * ((batch + 15) / 16);  // even: a 16-lane load never leaves the buffer
  const int64_t tile = groups > 0 ? k.group_tile : 1;
  const int64_t tile_rows = groups > 0 ? (batch + tile - 1) / tile * tile : 0;
  AvxActs acts;
  acts.xs.resize(static_cast<size_t>(batch * blocks));
  acts.xq.resize(static_cast<size_t>(batch * w.cols));
  acts.xsum.resize(static_cast<size_t>(batch * blocks));
  // Zero-filled, so the padding rows of the last lane group contribute nothing (the group kernels
  // skip a last tile's padding rows).
  acts.pcodes.resize(pack ? static_cast<size_t>(lane_groups * blocks * 256) : 0);
  acts.pscales.resize(pack ? static_cast<size_t>(lane_groups * blocks * 8) : 0);
  acts.psums.resize(acts.pscales.size());
  acts.tcodes.resize(static_cast<size_t>(tile_rows * w.cols));
  acts.tscales.resize(static_cast<size_t>(tile_rows * blocks));
  acts.tbias.resize(acts.tscales.size());
  // Quantizing and packing are per row and exact, so threads may share them out.
  parallel_for(batch >= 8 ? threads : 1, batch, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      float* s = acts.xs.data() + n * blocks;
      int8_t* q = acts.xq.data() + n * w.cols;
      quantize_row_avx2(x + n * w.cols, w.cols, s, q);
      for (int64_t b = 0; b < blocks; ++b) {
        int32_t sum = 0;
        for (int j = 0; j < kBlock; ++j) sum += q[b * kBlock + j];
        acts.xsum[n * blocks + b] = sum;
        if (tile_rows > 0) {
          const int64_t entry = (n / tile * blocks + b) * tile + n % tile;
          std::memcpy(&acts.tcodes[entry * kBlock], q + b * kBlock, kBlock);
          acts.tscales[entry] = s[b];
          acts.tbias[entry] = -k.group_bias * sum;
        }
        if (!pack) continue;
        const int64_t g = n / 8, lane = n % 8;
        for (int i = 0; i < 8; ++i)
          std::memcpy(&acts.pcodes[((b * 8 + i) * lane_groups + g) * 32 + 4 * lane], q + b * kBlock + 4 * i, 4);
        acts.pscales[(b * lane_groups + g) * 8 + lane] = s[b];
        acts.psums[(b * lane_groups + g) * 8 + lane] = sum;
      }
    }
  });
  const PackedActs packed{acts.pcodes.data(), acts.pscales.data(), acts.psums.data(), blocks, lane_groups};
  const ActTiles tiles{acts.tcodes.data(), acts.tscales.data(), acts.tbias.data(), blocks, tile};
  // The pool splits W's rows in units: one row group each (interleaved), then one unit for the
  // plain rows; 24 rows (a multiple of the tile heights 6 and 2 and of the GEMV's 8) for a plain
  // matrix. The tiles and GEMV steps give each output the same bits wherever a split falls.
  const int64_t unit = groups > 0 ? kGroupRows : 24;
  const int64_t units = groups > 0 ? groups + (plain_rows > 0) : (w.rows + unit - 1) / unit;
  parallel_for(threads_for(w, batch, threads), units, [&](int64_t u0, int64_t u1) {
    const int64_t g1 = std::min(u1, groups);
    if (u0 < g1) k.groups(w.data, u0, g1, tiles, batch, y, w.rows);
    const int64_t r0 = std::max(u0 * unit, groups * kGroupRows), r1 = std::min(w.rows, u1 * unit);
    if (r0 < r1) plain_rows_avx2(w, k, r0, r1, acts, packed, batch, y);
  });
}
#endif

}  // namespace

void quant_matmul(const QuantMatrix& w, const float* x, int64_t batch, float* y, int threads) {
  check_matrix(w, batch);
  if (w.rows == 0 || batch == 0) return;
#if defined(FEDSPLIT_AVX2_KERNELS)
  if (use_avx2()) return matmul_avx2(w, x, batch, y, threads);
#endif
  matmul_portable(w, x, batch, y, threads);
}

QuantLayout preferred_layout(GgmlType type, int64_t rows, int64_t cols) {
  const bool quant = type == GgmlType::Q8_0 || type == GgmlType::Q4_0;
  const bool fits = quant && rows >= kGroupRows && cols > 0 && cols % kBlock == 0;
  return fits && use_avx2() ? QuantLayout::interleaved : QuantLayout::plain;
}

std::vector<uint8_t> to_layout(GgmlType type, const uint8_t* plain, int64_t rows, int64_t cols, QuantLayout layout) {
  const QuantMatrix w{type, plain, rows, cols, layout};
  check_matrix(w, 0);
  const int64_t row_bytes = row_bytes_of(w);
  // The plain copy already holds the rows past the last full group.
  std::vector<uint8_t> out(plain, plain + rows * row_bytes);
  for (int64_t r = 0; r < full_groups(w) * kGroupRows; ++r) {
    const uint8_t* row = plain + r * row_bytes;
    for_each_group_piece(type, r, cols / kBlock, [&](int64_t from, int64_t to, int64_t bytes) {
      std::memcpy(&out[to], row + from, static_cast<size_t>(bytes));
    });
  }
  return out;
}

void dequantize_matrix_row(const QuantMatrix& w, int64_t row, float* out) {
  check_matrix(w, 0);
  if (row < 0 || row >= w.rows)
    throw DataError("quant kernels: row " + std::to_string(row) + " of a matrix with " + std::to_string(w.rows) +
                    " rows");
  const int64_t row_bytes = row_bytes_of(w);
  if (row >= full_groups(w) * kGroupRows) return dequantize_values(w.type, w.data + row * row_bytes, w.cols, out);
  std::vector<uint8_t> bytes(static_cast<size_t>(row_bytes));
  copy_plain_row(w, row, bytes.data());
  dequantize_values(w.type, bytes.data(), w.cols, out);
}

void quant_matvec(const QuantMatrix& w, const float* x, float* y, int threads) {
  quant_matmul(w, x, 1, y, threads);
}

const char* quant_kernel_name() { return use_avx2() ? "avx2" : "portable"; }

namespace quant_detail {
void force_no_vnni(bool on) { g_no_vnni.store(on, std::memory_order_relaxed); }
bool vnni_in_use() { return use_avx2() && cpu_has_vnni(); }
}  // namespace quant_detail

void force_portable_kernels(bool on) { g_force_portable.store(on, std::memory_order_relaxed); }

}  // namespace fedsplit
