// Server-side aggregation of LoRA updates whose ranks differ between clients (FedLoRA).
//
// Client i trains LoRA of rank r_i <= R (R the global rank) on the same target modules, with A_i
// [r_i, in] and B_i [out, r_i] per module under PEFT's names ("<module>.lora_A.weight",
// "<module>.lora_B.weight"), n_i training samples and its own scaling s_i (alpha / r_i, or
// alpha / sqrt(r_i) with rsLoRA). Three ways to combine them:
//   hetlora  (Cho et al., 2023) zero-pad A_i, B_i to rank R and average them, weighted by
//            n_i * ||s_i B_i A_i||_F per module; clients get back A[:r_i], B[:, :r_i] (truncate_lora).
//            Averaging A and B separately is not averaging the products B_i A_i: it is approximate.
//   stack    (FLoRA, Wang et al., 2024) concatenate the A_i and the (n_i / sum n) s_i B_i, so that
//            B_stack A_stack = sum_i w_i s_i B_i A_i exactly; clients fold that product into their
//            frozen base weight (stacked_delta) and start a fresh LoRA.
//   ffa      (FFA-LoRA, Sun et al., 2024) A is frozen and shared, only B trains and travels; the
//            zero-padded B_i are averaged by n_i, which averages the products exactly. The clients'
//            scalings are not applied: B_i are averaged as sent, so a runtime whose scaling depends
//            on r_i should multiply each B_i by s_i / s_global before aggregating.
// Keys other than lora_A / lora_B (DoRA magnitudes, biases) are averaged by n_i in all three.
// Arithmetic runs in fp64; results have the dtype of client 0's tensors (fp32 for fp32 inputs).
// Errors (DataError) name the client index and the key: a key set or shape that differs from
// client 0's, a weight that is not positive, a rank that is not the tensors' rank, or r_i > R.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/io/safetensors.h"  // TensorMap

namespace fedsplit {

/// One client's LoRA tensors: A [r_i, in] and B [out, r_i] for each adapted module, plus its weight and scaling.
struct LoraUpdate {
  TensorMap tensors;   ///< "<module>.lora_A.weight", "<module>.lora_B.weight" (other keys, e.g. DoRA magnitudes or biases, are averaged plainly by weight)
  double weight = 1;   ///< n_i, the client's training samples; > 0
  int64_t rank = 0;    ///< r_i: rows of every lora_A and columns of every lora_B of this client
  double scaling = 1;  ///< s_i: the client's alpha / r_i (or rsLoRA's alpha / sqrt(r_i))
};

/// The rows/columns a rank-r client receives from the global rank-R LoRA: A[:r], B[:, :r] (copies).
/// (HetLoRA's truncation.) Other keys are copied whole. Throws DataError naming the key when a
/// module's rank is below `rank`, or when `rank` is not positive.
TensorMap truncate_lora(const TensorMap& global, int64_t rank);

/// HetLoRA-style (Cho et al., 2023): each client's A, B zero-padded to rank R, then averaged with weights
/// w_i ∝ n_i · ‖s_i B_i A_i‖_F per module (norm-weighting; a module whose products are all zero falls back to n_i).
/// Returns rank-R tensors. With equal ranks and `norm_weighting = false` it equals plain weighted averaging.
/// Rows of A (columns of B) beyond r_i get nothing from client i but still count its weight in the mean.
TensorMap aggregate_hetlora(const std::vector<LoraUpdate>& updates, int64_t global_rank, bool norm_weighting = true);

/// FLoRA-style exact stacking (Wang et al., 2024): per module, A_stack = cat_i(A_i) [Σ r_i, in], B_stack = cat_i(w_i s_i B_i)
/// [out, Σ r_i] with w_i = n_i / Σ n, so that B_stack · A_stack = Σ_i w_i s_i B_i A_i exactly (up to fp32 rounding).
/// Returns the stacked A/B under the same names (scaling 1 applies to them), clients in index order.
TensorMap stack_lora(const std::vector<LoraUpdate>& updates);

/// Σ_i w_i s_i B_i A_i per module as a dense delta [out, in], keyed "<module>" (the module path without .lora_*): what a
/// client adds to its frozen base weight after a stacking round. (Used by the runtime and by tests.)
/// Keys other than lora_A / lora_B are ignored; a module with only one of A and B is a DataError.
TensorMap lora_products(const TensorMap& lora, double scaling);  ///< B·A·scaling per module of one LoRA
TensorMap stacked_delta(const TensorMap& stacked);               ///< B_stack·A_stack per module

/// FFA-LoRA (Sun et al., 2024): A is frozen and shared, so only B trains and is sent; B_i zero-padded to R columns and
/// averaged by n_i. Since A is common, mean(B_i)·A = mean(B_i·A) exactly. `updates[i].tensors` holds B (and non-LoRA
/// keys) only; A keys present are refused (DataError: FFA clients send B only).
TensorMap aggregate_ffa(const std::vector<LoraUpdate>& updates, int64_t global_rank);

/// The module paths of a LoRA tensor map, and each module's rank (from lora_A's rows or lora_B's columns).
/// Throws DataError naming the module when a LoRA tensor is not 2-D or its A and B ranks differ.
/// (An overload of peft/lora.h's lora_modules(const Decoder&), which lists a model's LoRA projections.)
std::map<std::string, int64_t> lora_modules(const TensorMap& lora);

}  // namespace fedsplit
