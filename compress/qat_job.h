// The `qat` job of `fedsplit run` (run.mode = qat): fine-tunes model.init with every attention and
// MLP projection fake-quantized ([qat] bits, group_size, activation_bits; compress/qat.h), all
// weights training, through the train job's loop (checkpoints, exact resume, held-out eval,
// metrics). With [distill] teacher set, the loss is distillation's (logits only) from that teacher,
// e.g. the fp32 model itself. At the end the projections hold their RTN-quantized weights; the model
// goes to <run.dir>/model (HF + tokenizer) with its quantization record (method "qat"), so that GGUF
// export writes exactly those codes.
//
// summary.json gives the honest comparison on the same held-out batches: the initial model in fp32
// (init_val_loss), its RTN quantization at the same bits and groups (rtn_val_loss), and the QAT model
// quantized (val_loss, the saved model; qat_val_loss is the fake-quantized loss as trained, which
// includes activation quantization when on).
#pragma once
#include <string>

#include "compress/distill_job.h"
#include "compress/qat.h"
#include "train/lm_job.h"

namespace fedsplit {

/// Runs the job (see the file comment). `distill` may name a teacher (distill.teacher) or not.
TrainResult run_qat_job(const LmJobOptions& options, const QatOptions& qat, const DistillOptions& distill,
                        const std::string& recipe_ini, bool resume);

}  // namespace fedsplit
