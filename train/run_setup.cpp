#include "train/run_setup.h"

#include <filesystem>
#include <sstream>

#include "core/model/hf.h"
#include "core/tokenizer/tokenizer.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "train/model_io.h"

namespace fedsplit {

torch::Device pick_device(const std::string& name) {
  if (name == "cpu") return torch::kCPU;
  if (name == "cuda") {
    if (!torch::cuda::is_available()) throw ConfigError("run.device = cuda but no CUDA device is available: use cpu or auto");
    return torch::kCUDA;
  }
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
}

namespace {

DecoderConfig scratch_config(const ModelOptions& m, const Tokenizer& tokenizer) {
  DecoderConfig c = family_config(parse_family(m.family, "model.family"), tokenizer.vocab_size(), m.hidden_size,
                                  m.layers, m.heads, m.kv_heads > 0 ? m.kv_heads : m.heads, m.intermediate_size,
                                  m.max_position);
  c.rope_theta = m.rope_theta;
  c.tie_embeddings = m.tie_embeddings;
  c.dropout = m.dropout;
  c.bos_token_id = tokenizer.bos_id();
  if (tokenizer.eos_id() >= 0) c.eos_token_ids = {tokenizer.eos_id()};
  validate(c, "[model]");
  return c;
}

// Strips the keys that may change between the runs of one job: they do not change its results, or (faults)
// simulate a failure that starts mid-run.
std::string comparable(const std::string& ini) {
  std::string out, line;
  std::istringstream in(ini);
  while (std::getline(in, line))
    if (line.rfind("overwrite =", 0) != 0 && line.rfind("device =", 0) != 0 && line.rfind("stop_after =", 0) != 0 &&
        line.rfind("threads =", 0) != 0 && line.rfind("faults =", 0) != 0)
      out += line + "\n";
  return out;
}

}  // namespace

// A run directory holds one run: refuse to mix a different recipe into it, or to restart over a
// checkpoint without being told to.
void claim_run_dir(const RunOptions& run, const std::string& recipe_ini, bool resume) {
  const std::string recipe_path = run.dir + "/recipe.ini";
  const std::string ckpt = run.dir + "/checkpoint.h5";
  if (resume) {
    if (!path_exists(ckpt))
      throw IoError("--resume: " + ckpt + " does not exist; run without --resume to start this run");
    if (path_exists(recipe_path) && comparable(read_file(recipe_path)) != comparable(recipe_ini))
      throw ConfigError("--resume: the recipe differs from the one in " + recipe_path +
                        "; resume with the same recipe and flags (compare with that file)");
    return;
  }
  // A directory whose run never produced anything (it failed before its first step) is free.
  const bool has_results = path_exists(ckpt) || path_exists(run.dir + "/metrics.jsonl");
  if (!run.overwrite && has_results && path_exists(recipe_path)) {
    if (comparable(read_file(recipe_path)) != comparable(recipe_ini))
      throw ConfigError(run.dir + " holds a different run (see " + recipe_path +
                        "): choose another run.dir, or pass --run.overwrite=true to replace it");
    if (path_exists(ckpt))
      throw ConfigError(run.dir + " already holds this run with a checkpoint: pass --resume to continue it, "
                        "or --run.overwrite=true to start it again");
  }
  make_dirs(run.dir);
  write_text_atomically(recipe_path, recipe_ini);
}

// Copies the tokenizer file into `dir` under the name load_tokenizer looks for in a directory.
void copy_tokenizer(const Tokenizer& tokenizer, const std::string& dir) {
  const std::string& src = tokenizer.path();
  const bool is_json = has_suffix(src, ".json");
  const std::string dst = dir + (is_json ? "/tokenizer.json" : "/tokenizer.model");
  write_atomically(dst, [&](const std::string& tmp) {
    std::filesystem::copy_file(src, tmp, std::filesystem::copy_options::overwrite_existing);
  });
}

int64_t tensor_bytes(const torch::nn::Module& model) {
  int64_t bytes = 0;
  for (const auto& p : model.parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
  for (const auto& b : model.buffers()) bytes += b.numel() * static_cast<int64_t>(b.element_size());
  return bytes;
}

int64_t trainable_count(const torch::nn::Module& model) {
  int64_t n = 0;
  for (const auto& p : model.parameters())
    if (p.requires_grad()) n += p.numel();
  return n;
}

Decoder initial_model(const ModelOptions& m, const Tokenizer& tokenizer, uint64_t seed) {
  if (!m.init.empty()) return load_any_model(m.init);
  Decoder model(scratch_config(m, tokenizer), /*init=*/false);
  model->init_weights(seed);
  return model;
}

}  // namespace fedsplit
