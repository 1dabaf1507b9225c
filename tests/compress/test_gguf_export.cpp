// labels: unit
// GGUF export and import: the RoPE row permutation (exact inverse, and the rotation it stands for),
// f32 round trips of the hf-tiny llama and qwen2 fixtures (weights identical, logits within 1e-6),
// f16/q8_0/q4_0 logits within stated tolerances of fp32, tensor types per quant, recorded codes
// written byte-exact, mismatched records refused, stage shards and their manifest, plan parsing,
// tokenizer metadata.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <filesystem>
#include <set>

#include "compress/gguf.h"
#include "compress/gguf_export.h"
#include "compress/gguf_import.h"
#include "compress/gguf_llama.h"
#include "compress/gguf_tensor.h"
#include "compress/gguf_vocab.h"
#include "compress/quant_record.h"
#include "compress/rtn.h"
#include "compress/stage_plan.h"
#include "core/model/hf.h"
#include "core/util/error.h"
#include "tests/test_support.h"

namespace fedsplit {
namespace {

using testing::fixtures;

Decoder fixture(const std::string& family) { return load_hf_model(fixtures() + "/hf-tiny/" + family); }

torch::Tensor ids_for(int64_t vocab) {
  torch::manual_seed(11);
  return torch::randint(0, vocab, {2, 12}, torch::kLong);
}

torch::Tensor logits_of(Decoder& model, const torch::Tensor& ids) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(ids);
}

double relative_error(const torch::Tensor& a, const torch::Tensor& ref) {
  return ((a - ref).norm() / ref.norm()).item<double>();
}

const GgufTensor& tensor_named(const GgufFile& f, const std::string& name) {
  for (const auto& t : f.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// HF rotate-half RoPE of one head vector, and llama.cpp's adjacent-pair RoPE.
torch::Tensor rope_half(const torch::Tensor& x, const torch::Tensor& theta) {
  const int64_t h = x.size(0) / 2;
  auto a = x.slice(0, 0, h), b = x.slice(0, h);
  return torch::cat({a * theta.cos() - b * theta.sin(), b * theta.cos() + a * theta.sin()});
}
torch::Tensor rope_pairs(const torch::Tensor& x, const torch::Tensor& theta) {
  auto p = x.view({-1, 2});
  auto a = p.select(1, 0), b = p.select(1, 1);
  return torch::stack({a * theta.cos() - b * theta.sin(), a * theta.sin() + b * theta.cos()}, 1).reshape({-1});
}

TEST(GgufRope, PermutationIsExactlyInvertedAndMatchesTheRotation) {
  torch::manual_seed(1);
  const auto w = torch::randn({4 * 16, 24});
  for (int64_t heads : {1, 2, 4}) {
    EXPECT_TRUE(torch::equal(unpermute_rope_rows(permute_rope_rows(w, heads), heads), w)) << heads;
    EXPECT_TRUE(torch::equal(permute_rope_rows(unpermute_rope_rows(w, heads), heads), w)) << heads;
  }
  // One head of 4 rows: HF (h0: 0 1 | h1: 2 3) becomes pairs (0 2)(1 3).
  const auto rows = torch::arange(4).to(torch::kFloat).view({4, 1});
  EXPECT_TRUE(torch::equal(permute_rope_rows(rows, 1).view({4}), torch::tensor({0.f, 2.f, 1.f, 3.f})));
  EXPECT_TRUE(torch::equal(permute_rope_rows(torch::arange(4).to(torch::kFloat), 1), torch::tensor({0.f, 2.f, 1.f, 3.f})));
  // Rotating the permuted projection pairwise equals permuting the rotate-half result.
  const auto theta = torch::rand({8}) * 3;
  const auto q = w.slice(0, 0, 16).matmul(torch::randn({24}));
  EXPECT_TRUE(torch::allclose(rope_pairs(permute_rope_rows(q, 1), theta), permute_rope_rows(rope_half(q, theta), 1),
                              1e-6, 1e-6));
}

TEST(GgufNames, RoundTripAndRefusals) {
  for (const std::string p : {"embed_tokens.weight", "norm.weight", "lm_head.weight", "layers.3.self_attn.q_proj.bias",
                              "layers.10.mlp.down_proj.weight", "layers.0.post_attention_layernorm.weight"})
    EXPECT_EQ(parameter_of_gguf_tensor(gguf_tensor_name(p)), p);
  EXPECT_EQ(gguf_tensor_name("layers.1.self_attn.o_proj.weight"), "blk.1.attn_output.weight");
  EXPECT_EQ(gguf_tensor_name("layers.0.input_layernorm.weight"), "blk.0.attn_norm.weight");
  EXPECT_EQ(gguf_block_index("blk.12.ffn_up.weight"), 12);
  EXPECT_THROW(gguf_tensor_name("layers.0.self_attn.q_proj.lora_A.weight"), FormatError);
  const auto gpt2 = family_config(ModelFamily::gpt2, 64, 32, 2, 4, 4, 0, 32);
  const std::string msg = testing::error_of<ConfigError>([&] { gguf_architecture(gpt2); });
  EXPECT_NE(msg.find("gpt2"), std::string::npos) << msg;
  EXPECT_EQ(gguf_architecture(fixture("qwen2")->options), "qwen2");
}

TEST(GgufExport, F32RoundTripIsExact) {
  for (const std::string family : {"llama", "qwen2"}) {
    testing::TempDir tmp("gguf_f32_" + family);
    Decoder model = fixture(family);
    GgufExportOptions o;
    o.quant = GgufQuant::f32;
    const auto manifest = export_gguf(model, o, tmp.path());
    ASSERT_EQ(manifest.stages.size(), 1u);
    EXPECT_EQ(manifest.stages[0].file, "model.gguf");
    const GgufFile f = read_gguf(tmp / "model.gguf");
    EXPECT_EQ(gguf_string(f.metadata, "general.architecture", "t"), family);
    EXPECT_EQ(gguf_uint(f.metadata, family + ".block_count", "t"), 2u);
    EXPECT_EQ(gguf_uint(f.metadata, "general.quantization_version", "t"), 2u);
    Decoder back = import_gguf(tmp / "model.gguf");
    EXPECT_EQ(back->options.tie_embeddings, model->options.tie_embeddings) << family;
    EXPECT_EQ(back->options.attn_qkv_bias, model->options.attn_qkv_bias) << family;
    auto ours = model->named_parameters();
    for (const auto& item : back->named_parameters())
      EXPECT_TRUE(torch::equal(item.value(), ours[item.key()])) << family << " " << item.key();
    const auto ids = ids_for(model->options.vocab_size);
    EXPECT_LE((logits_of(back, ids) - logits_of(model, ids)).abs().max().item<double>(), 1e-6) << family;
    // The directory and its manifest load too.
    Decoder again = import_gguf(tmp.path());
    EXPECT_TRUE(torch::equal(logits_of(again, ids), logits_of(back, ids)));
  }
}

// Relative L2 error of the logits against fp32; tolerances measured on hf-tiny llama with margin.
TEST(GgufExport, QuantizedLogitsWithinTolerance) {
  Decoder model = fixture("llama");
  const auto ids = ids_for(model->options.vocab_size);
  const auto ref = logits_of(model, ids);
  const std::vector<std::pair<GgufQuant, double>> cases = {
      {GgufQuant::f16, 2e-3}, {GgufQuant::q8_0, 2e-2}, {GgufQuant::q4_0, 0.25}};
  for (const auto& [quant, tolerance] : cases) {
    testing::TempDir tmp(std::string("gguf_q_") + to_string(quant));
    GgufExportOptions o;
    o.quant = quant;
    export_gguf(model, o, tmp.path());
    Decoder back = import_gguf(tmp / "model.gguf");
    const double err = relative_error(logits_of(back, ids), ref);
    EXPECT_LE(err, tolerance) << to_string(quant);
    std::cout << "[ quant " << to_string(quant) << " ] relative logits error " << err << "\n";
    const GgufFile f = read_gguf(tmp / "model.gguf");
    EXPECT_EQ(tensor_named(f, "blk.0.attn_norm.weight").type, GgmlType::F32);
    const GgmlType want = quant == GgufQuant::f16 ? GgmlType::F16 : quant == GgufQuant::q8_0 ? GgmlType::Q8_0 : GgmlType::Q4_0;
    EXPECT_EQ(tensor_named(f, "blk.1.ffn_down.weight").type, want);
    EXPECT_EQ(tensor_named(f, "token_embd.weight").type, want);
    EXPECT_EQ(tensor_named(f, "output.weight").type, quant == GgufQuant::q4_0 ? GgmlType::Q8_0 : want);
  }
}

// A record's codes, permuted as llama.cpp wants q/k, are what the file holds: d == fp16(scale), codes equal.
void check_recorded(int bits) {
  testing::TempDir tmp("gguf_record_" + std::to_string(bits));
  Decoder model = fixture("llama");
  QuantRecord record;
  record.bits = bits;
  record.group_size = 32;
  record.method = "rtn";
  std::map<std::string, QuantizedTensor> quantized;
  {
    torch::NoGradGuard no_grad;
    auto params = model->named_parameters();
    for (const std::string p : {"layers.0.self_attn.q_proj.weight", "layers.1.self_attn.k_proj.weight",
                                "layers.1.mlp.down_proj.weight", "lm_head.weight"}) {
      quantized[p] = rtn_quantize(params[p], {bits, 32});
      params[p].copy_(quantized[p].weight);
      record.scales[p] = quantized[p].scales;
    }
  }
  GgufExportOptions o;
  o.quant = bits == 4 ? GgufQuant::q4_0 : GgufQuant::q8_0;
  o.record = record;
  const auto manifest = export_gguf(model, o, tmp.path());
  EXPECT_EQ(manifest.quant_record.at("bits"), bits);
  const GgufFile f = read_gguf(tmp / "model.gguf");
  const auto& config = model->options;
  for (const auto& [p, q] : quantized) {
    const GgufTensor& t = tensor_named(f, gguf_tensor_name(p));
    ASSERT_EQ(t.type, bits == 4 ? GgmlType::Q4_0 : GgmlType::Q8_0) << p;
    auto codes = q.codes, scales = q.scales;
    if (const int64_t heads = rope_permute_heads(p, config, "llama")) {
      codes = permute_rope_rows(codes, heads);
      scales = permute_rope_rows(scales, heads);
    }
    const int64_t rows = codes.size(0), blocks = codes.size(1) / 32;
    const size_t block_bytes = bits == 4 ? 18 : 34;
    ASSERT_EQ(t.data.size(), static_cast<size_t>(rows * blocks) * block_bytes);
    int64_t mismatches = 0;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* blk = t.data.data() + static_cast<size_t>(r * blocks + b) * block_bytes;
        const uint16_t d = static_cast<uint16_t>(blk[0] | (blk[1] << 8));
        if (d != fp32_to_fp16(scales[r][b].item<float>())) ++mismatches;
        for (int j = 0; j < 32; ++j) {
          const int code = bits == 4 ? ((j < 16 ? blk[2 + j] & 15 : blk[2 + j - 16] >> 4) - 8)
                                     : static_cast<int8_t>(blk[2 + j]);
          if (code != codes[r][b * 32 + j].item<int>()) ++mismatches;
        }
      }
    EXPECT_EQ(mismatches, 0) << p;
  }
  // The weights the record does not list went through ggml's RTN as usual.
  EXPECT_EQ(tensor_named(f, "blk.0.ffn_up.weight").type, bits == 4 ? GgmlType::Q4_0 : GgmlType::Q8_0);
}

TEST(GgufExport, RecordedCodesAreWrittenByteExact) {
  check_recorded(4);
  check_recorded(8);
}

TEST(GgufExport, MismatchedRecordsAreRefused) {
  testing::TempDir tmp("gguf_record_bad");
  Decoder model = fixture("llama");
  QuantRecord record;
  record.bits = 4;
  record.group_size = 32;
  record.scales["layers.0.mlp.up_proj.weight"] = torch::ones({160, 2});
  GgufExportOptions o;
  o.quant = GgufQuant::q8_0;
  o.record = record;
  o.record_source = "m/quantization.safetensors";
  auto msg = testing::error_of<ConfigError>([&] { export_gguf(model, o, tmp.path()); });
  EXPECT_NE(msg.find("--quant q4_0"), std::string::npos) << msg;
  EXPECT_NE(msg.find("m/quantization.safetensors"), std::string::npos) << msg;
  o.quant = GgufQuant::q4_0;
  o.record->group_size = 64;
  msg = testing::error_of<ConfigError>([&] { export_gguf(model, o, tmp.path()); });
  EXPECT_NE(msg.find("group_size 64"), std::string::npos) << msg;
  // f16 needs no record: the weights already hold its values.
  o.quant = GgufQuant::f16;
  EXPECT_NO_THROW(export_gguf(model, o, tmp.path()));
}

TEST(GgufExport, StageShardsPartitionTheModel) {
  for (const std::string family : {"llama", "qwen2"}) {  // qwen2's head is tied: the last stage gets a copy
    testing::TempDir one("gguf_one_" + family), two("gguf_two_" + family);
    Decoder model = fixture(family);
    GgufExportOptions o;
    o.quant = GgufQuant::q8_0;
    export_gguf(model, o, one.path());
    o.stages = balanced_stages(model->num_layers(), 2);
    const auto manifest = export_gguf(model, o, two.path());
    ASSERT_EQ(manifest.stages.size(), 2u);
    const GgufFile whole = read_gguf(one / "model.gguf");
    const GgufFile s0 = read_gguf(two / "stage-0.gguf"), s1 = read_gguf(two / "stage-1.gguf");
    std::set<std::string> names0, names1, all;
    for (const auto& t : s0.tensors) names0.insert(t.name);
    for (const auto& t : s1.tensors) names1.insert(t.name);
    for (const auto& t : whole.tensors) all.insert(t.name);
    std::set<std::string> both = names0;
    both.insert(names1.begin(), names1.end());
    if (model->options.tie_embeddings) {
      EXPECT_EQ(names1.count("output.weight"), 1u);
      both.erase("output.weight");
    }
    EXPECT_EQ(both, all) << family;
    EXPECT_EQ(names0.size() + names1.size() - (model->options.tie_embeddings ? 1 : 0), all.size()) << "disjoint";
    EXPECT_TRUE(names0.count("token_embd.weight"));
    EXPECT_FALSE(names1.count("token_embd.weight"));
    EXPECT_TRUE(names1.count("output_norm.weight"));
    EXPECT_TRUE(names0.count("blk.0.attn_q.weight") && names1.count("blk.1.attn_q.weight"));
    for (const auto& t : s1.tensors) {
      if (all.count(t.name)) EXPECT_EQ(t.data, tensor_named(whole, t.name).data) << t.name;
    }
    EXPECT_EQ(gguf_uint(s0.metadata, "fedsplit.layer_end", "t"), gguf_uint(s1.metadata, "fedsplit.layer_begin", "t"));
    EXPECT_EQ(gguf_uint(s1.metadata, "fedsplit.layer_end", "t"), 2u);
    EXPECT_EQ(gguf_string(s0.metadata, "fedsplit.export_id", "t"), gguf_string(s1.metadata, "fedsplit.export_id", "t"));
    EXPECT_EQ(gguf_string(s0.metadata, "fedsplit.export_id", "t"), manifest.export_id);
    EXPECT_EQ(manifest.stages[0].layer_end, manifest.stages[1].layer_begin);
    // The manifest loads the whole model, equal to the one-file export's.
    Decoder a = import_gguf(one / "model.gguf"), b = import_gguf(two / "manifest.json");
    EXPECT_EQ(b->options.tie_embeddings, model->options.tie_embeddings);
    const auto ids = ids_for(model->options.vocab_size);
    EXPECT_TRUE(torch::equal(logits_of(a, ids), logits_of(b, ids))) << family;
    // One shard alone is refused, and so is a shard that does not match the manifest.
    auto msg = testing::error_of<ConfigError>([&] { import_gguf(two / "stage-1.gguf"); });
    EXPECT_NE(msg.find("manifest.json"), std::string::npos) << msg;
    std::filesystem::copy_file(one / "model.gguf", two / "stage-1.gguf", std::filesystem::copy_options::overwrite_existing);
    msg = testing::error_of<FormatError>([&] { import_gguf(two.path()); });
    EXPECT_NE(msg.find("stage-1.gguf"), std::string::npos) << msg;
  }
}

TEST(StagePlan, ParsesAndRefusesBadPlans) {
  auto plan = parse_stage_plan(R"({"stages":[{"layers":[0,3],"device":"cuda:0"},{"layers":[3,4]}]})", 4, "p.json");
  ASSERT_EQ(plan.size(), 2u);
  EXPECT_EQ(plan[0].device, "cuda:0");
  EXPECT_EQ(plan[1].layer_begin, 3);
  EXPECT_EQ(plan[1].layer_end, 4);
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"{not json", "not JSON"},
      {R"({"layers":[0,4]})", "\"stages\""},
      {R"({"stages":[]})", "\"stages\""},
      {R"({"stages":[{"layers":[0,2]},{"layers":[3,4]}]})", "begins at layer 3, expected 2"},
      {R"({"stages":[{"layers":[0,3]},{"layers":[2,4]}]})", "begins at layer 2, expected 3"},
      {R"({"stages":[{"layers":[0,5]}]})", "runs past"},
      {R"({"stages":[{"layers":[0,2]}]})", "must end at 4"},
      {R"({"stages":[{"layers":[0,4],"gpu":1}]})", "unknown key \"gpu\""},
      {R"({"stages":[{"layers":[0]}]})", "[begin, end]"},
      {R"({"stages":[{"layers":[0,4]}],"x":1})", "unknown key \"x\""},
  };
  for (const auto& [text, expect] : bad) {
    const auto msg = testing::error_of<ConfigError>([&] { parse_stage_plan(text, 4, "p.json"); });
    EXPECT_NE(msg.find("p.json"), std::string::npos) << text << ": " << msg;
    EXPECT_NE(msg.find(expect), std::string::npos) << text << ": " << msg;
  }
  const auto b = balanced_stages(5, 3);
  ASSERT_EQ(b.size(), 3u);
  EXPECT_EQ(b[0].layer_end, 2);
  EXPECT_EQ(b[1].layer_end, 4);
  EXPECT_EQ(b[2].layer_end, 5);
  EXPECT_THROW(balanced_stages(2, 3), ConfigError);
}

TEST(GgufVocab, SentencePieceAndByteLevelBpe) {
  const std::string spm = fixtures() + "/hf-tiny/tokenizers/spm-bpe.model";
  GgufMetadata meta;
  set_tokenizer_metadata(meta, spm, 1024);
  EXPECT_EQ(gguf_string(meta, "tokenizer.ggml.model", "t"), "llama");
  const auto& tokens = meta.find("tokenizer.ggml.tokens")->get_if<GgufArray>()->items;
  const auto& types = meta.find("tokenizer.ggml.token_type")->get_if<GgufArray>()->items;
  ASSERT_EQ(tokens.size(), 1024u);
  ASSERT_EQ(meta.find("tokenizer.ggml.scores")->get_if<GgufArray>()->items.size(), 1024u);
  EXPECT_EQ(*tokens[0].get_if<std::string>(), "<unk>");
  EXPECT_EQ(*types[0].get_if<int32_t>(), 2);     // unknown
  EXPECT_EQ(*types[1].get_if<int32_t>(), 3);     // control <s>
  EXPECT_EQ(*types[3].get_if<int32_t>(), 6);     // byte <0x00>
  EXPECT_EQ(*types[500].get_if<int32_t>(), 1);   // normal
  EXPECT_EQ(*types[1000].get_if<int32_t>(), 5);  // padding
  EXPECT_EQ(*tokens[1000].get_if<std::string>(), "[PAD1000]");
  EXPECT_EQ(gguf_uint(meta, "tokenizer.ggml.bos_token_id", "t"), 1u);
  EXPECT_EQ(gguf_uint(meta, "tokenizer.ggml.eos_token_id", "t"), 2u);
  EXPECT_EQ(gguf_uint(meta, "tokenizer.ggml.unknown_token_id", "t"), 0u);
  const auto msg = testing::error_of<ConfigError>([&] { set_tokenizer_metadata(meta, spm, 512); });
  EXPECT_NE(msg.find("1000 tokens"), std::string::npos) << msg;

  GgufMetadata bpe;
  set_tokenizer_metadata(bpe, fixtures() + "/hf-tiny/tokenizers/bpe-bytelevel.json", 1000);
  EXPECT_EQ(gguf_string(bpe, "tokenizer.ggml.model", "t"), "gpt2");
  const auto& btokens = bpe.find("tokenizer.ggml.tokens")->get_if<GgufArray>()->items;
  ASSERT_EQ(btokens.size(), 1000u);
  EXPECT_EQ(*btokens[0].get_if<std::string>(), "<|endoftext|>");
  EXPECT_EQ(*bpe.find("tokenizer.ggml.token_type")->get_if<GgufArray>()->items[0].get_if<int32_t>(), 3);
  const auto& merges = bpe.find("tokenizer.ggml.merges")->get_if<GgufArray>()->items;
  ASSERT_FALSE(merges.empty());
  EXPECT_EQ(*merges[0].get_if<std::string>(), "\xC4\xA0 t");  // "Ġ t"
}

}  // namespace
}  // namespace fedsplit
