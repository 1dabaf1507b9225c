// Fast CPU matrix-vector and matrix-matrix products with ggml Q8_0 / Q4_0 weights, read straight
// from GGUF bytes (see compress/gguf_quant.h for the block layouts).
//
// As in llama.cpp, the activation is quantized on the fly to Q8 blocks of 32 (float scale
// absmax / 127, int8 codes rounded to nearest even), so that each weight block costs one int8 x
// int8 dot product accumulated in int32, scaled by d_w * d_x and summed in float. The matrix is
// never dequantized. Two implementations: AVX2+FMA+F16C (chosen at run time when the CPU has them,
// with AVX512-VNNI's dpbusd where present) and a portable one; both compute the same integer dots
// and differ only in float rounding (the AVX2 kernels fuse the multiply-add).
//
// The AVX2 quant_matmul is a tiled GEMM from 4 activation rows on: register tiles of 6 weight rows
// x 32 activation rows (AVX512-VNNI, 512-bit registers) or 2 x 16 (AVX2), lanes = activation rows,
// the activation codes packed so that one broadcast 4-byte weight chunk meets 8 or 16 rows' codes at
// once. Below 4 rows (and for quant_matvec) an 8-weight-row GEMV runs, lanes = weight rows. Both
// read the weights as GGUF stores them. Matrices repacked at load into the interleaved layout
// (to_layout, preferred_layout) run a faster tile instead, lanes = 16 (VNNI) or 8 weight rows, for
// every batch size: each 64-byte chunk of 16 rows' codes (Q8_0) or nibbles (Q4_0) is loaded and
// unpacked once for all the activation rows.
//
// Threads come from the persistent pool of infer/thread_pool.h.
//
// Determinism: every output element (weight row r, activation row n) is one float accumulator,
// acc = fma(float(dot of block b), d_w[b] * d_x[b], acc) for b = 0, 1, ... in order from 0 (the
// portable kernels: acc += d_w[b] * d_x[b] * dot), whichever kernel, tile, thread or layout computes
// it. So results do not depend on the thread count or the layout, and quant_matmul's row n equals
// quant_matvec of X[n] bit for bit.
//
// Torch-free, like compress/gguf_quant.h.
#pragma once
#include <cstdint>
#include <vector>

#include "compress/gguf_quant.h"

namespace fedsplit {

/// How a quantized matrix's bytes are arranged (the byte count is the same either way).
///   plain: GGUF's rows back to back, each cols / 32 blocks of its type.
///   interleaved (Q8_0 and Q4_0): rows in groups of kInterleavedRows = 16, then the rows past the
///     last full group in plain rows (at the byte offset plain gives them). A group holds its rows'
///     block b side by side, block after block: the 16 fp16 scales (32 bytes), then the code bytes
///     of each row (Q8_0: 32 int8 codes; Q4_0: 16 nibble bytes) in 4-byte chunks, chunk i of rows
///     0..15 in turn (64 bytes per chunk; 8 chunks for Q8_0, 4 for Q4_0), so that one 64-byte load
///     gives 16 rows' weights 4i..4i+3 (Q8_0; Q4_0: low nibbles, and 16+4i..16+4i+3 in the high
///     ones). The AVX2 kernels then run with lanes = weight rows and load and unpack each chunk
///     once for all activation rows.
enum class QuantLayout : uint8_t { plain, interleaved };

constexpr int64_t kInterleavedRows = 16;

/// A quantized weight matrix borrowed from GGUF bytes or from to_layout (not owned). Row-major
/// [rows = out, cols = in] of `type` (Q8_0 or Q4_0) in `layout`.
struct QuantMatrix {
  GgmlType type;
  const uint8_t* data;
  int64_t rows;
  int64_t cols;
  QuantLayout layout = QuantLayout::plain;
};

/// The layout the kernels run fastest on for such a matrix here: interleaved for Q8_0 and Q4_0 with
/// at least 16 rows when the AVX2 kernels run on this CPU, plain otherwise. Results do not depend on
/// the layout (bit for bit), only speed does.
QuantLayout preferred_layout(GgmlType type, int64_t rows, int64_t cols);

/// The bytes of a plain [rows, cols] matrix of `type` (GGUF's rows) rearranged into `layout`: the
/// same size; a copy for plain. Throws DataError unless the type is Q8_0 or Q4_0, cols a positive
/// multiple of 32 and rows >= 0.
std::vector<uint8_t> to_layout(GgmlType type, const uint8_t* plain, int64_t rows, int64_t cols, QuantLayout layout);

/// Row `row` of W as floats (cols of them), whatever its layout: the values dequantize_values
/// gives for that row of the plain matrix. Throws DataError for a bad type, shape or row.
void dequantize_matrix_row(const QuantMatrix& w, int64_t row, float* out);

/// y[r] = sum_c W[r][c] * x[c] for r in [0, rows): x has cols floats, y rows floats. Never
/// dequantizes the whole matrix. `threads` <= 1 runs inline; small matrices also run inline.
/// Throws DataError unless the type is Q8_0/Q4_0, cols a positive multiple of 32 and rows >= 0.
/// x must be finite (a block with a non-finite value makes the outputs NaN).
void quant_matvec(const QuantMatrix& w, const float* x, float* y, int threads);

/// Y[n][r] = sum_c W[r][c] * X[n][c] for n in [0, batch): X [batch, cols] row-major, Y [batch,
/// rows]. Each X row is quantized once; threads split the rows of W and do all batch rows.
void quant_matmul(const QuantMatrix& w, const float* x, int64_t batch, float* y, int threads);

/// Which implementation runs: "avx2" or "portable" (for logs and benchmarks).
const char* quant_kernel_name();

/// Forces the portable kernels (process-wide; for tests and benchmarks), or restores the choice
/// by CPU features.
void force_portable_kernels(bool on);

}  // namespace fedsplit
