#include "train/checkpoint.h"

#include "core/io/hdf5.h"
#include "core/util/error.h"
#include "core/util/fs.h"
#include "train/adamw.h"

namespace fedsplit {
namespace {
constexpr const char* kFormat = "fedsplit-checkpoint";
constexpr int64_t kVersion = 1;

std::string shape_text(at::IntArrayRef s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out + "]";
}

void copy_checked(const h5::Group& group, const std::string& name, const torch::Tensor& dst) {
  if (!group.has(name))
    throw FormatError(group.where(name) + " is missing: the checkpoint belongs to a different model or recipe");
  auto src = group.read_tensor(name);
  if (src.sizes() != dst.sizes())
    throw FormatError(group.where(name) + " has shape " + shape_text(src.sizes()) + " but the model expects " +
                      shape_text(dst.sizes()) + ": the checkpoint belongs to a different model");
  torch::NoGradGuard no_grad;
  dst.copy_(src);
}

CheckpointMeta read_meta(const h5::Group& file) {
  if (!file.has_attr("format") || file.attr_string("format") != kFormat)
    throw FormatError(file.where() + " is not a fedsplit checkpoint");
  if (file.attr_int("version") != kVersion)
    throw FormatError(file.where() + " is checkpoint version " + std::to_string(file.attr_int("version")) +
                      "; this fedsplit reads version " + std::to_string(kVersion));
  CheckpointMeta meta;
  meta.step = file.attr_int("step");
  meta.data_epoch = file.attr_int("data_epoch");
  meta.data_index = file.attr_int("data_index");
  meta.recipe = file.attr_string("recipe");
  meta.model_config = file.attr_string("model_config");
  meta.extra = file.attr_string("extra");
  return meta;
}
}  // namespace

void save_checkpoint(const std::string& path, const NamedTensors& params, const AdamW* optimizer,
                     const CheckpointMeta& meta, bool with_cuda_rng) {
  write_atomically(path, [&](const std::string& tmp) {
    auto file = h5::Group::create_file(tmp, /*overwrite=*/true);
    file.set_attr("format", std::string(kFormat));
    file.set_attr("version", kVersion);
    file.set_attr("step", meta.step);
    file.set_attr("data_epoch", meta.data_epoch);
    file.set_attr("data_index", meta.data_index);
    file.set_attr("recipe", meta.recipe);
    file.set_attr("model_config", meta.model_config);
    file.set_attr("extra", meta.extra);
    auto model = file.create_group("model");
    for (const auto& [name, t] : params) model.write_tensor(name, t);
    if (optimizer) {
      auto opt = file.create_group("optimizer");
      opt.set_attr("steps", optimizer->steps_taken());
      for (const auto& p : optimizer->params()) {
        auto g = opt.create_group(p.name);
        g.write_tensor("exp_avg", p.exp_avg);
        g.write_tensor("exp_avg_sq", p.exp_avg_sq);
      }
    }
    auto rng = file.create_group("rng");
    rng.write_tensor("cpu", at::detail::getDefaultCPUGenerator().get_state());
    if (with_cuda_rng && torch::cuda::is_available())
      rng.write_tensor("cuda", at::globalContext().defaultGenerator(at::kCUDA).get_state());
  });
}

CheckpointMeta read_checkpoint_meta(const std::string& path) { return read_meta(h5::Group::open_file(path)); }

CheckpointMeta load_checkpoint(const std::string& path, const NamedTensors& params, AdamW* optimizer,
                               bool restore_rng) {
  auto file = h5::Group::open_file(path);
  CheckpointMeta meta = read_meta(file);
  auto model = file.group("model");
  for (const auto& [name, t] : params) copy_checked(model, name, t);
  if (optimizer) {
    if (!file.has("optimizer"))
      throw FormatError(file.where("optimizer") + " is missing: this checkpoint holds a model only, not a run to resume");
    auto opt = file.group("optimizer");
    optimizer->set_steps_taken(opt.attr_int("steps"));
    for (auto& p : optimizer->params()) {
      copy_checked(opt, p.name + "/exp_avg", p.exp_avg);
      copy_checked(opt, p.name + "/exp_avg_sq", p.exp_avg_sq);
    }
  }
  if (restore_rng) {
    auto rng = file.group("rng");
    // Generators are shared handles: setting the state through a copy sets the default's.
    at::Generator cpu = at::detail::getDefaultCPUGenerator();
    cpu.set_state(rng.read_tensor("cpu"));
    if (rng.has("cuda") && torch::cuda::is_available()) {
      at::Generator cuda = at::globalContext().defaultGenerator(at::kCUDA);
      cuda.set_state(rng.read_tensor("cuda"));
    }
  }
  return meta;
}

}  // namespace fedsplit
