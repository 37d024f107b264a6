// Every architecture of the CPU reference backend against Hugging Face transformers, on the tiny
// random-weight checkpoints in tests/fixtures/tiny (made by tools/fixtures/make_tiny_models.py).
//
// Metric, per position: max_i |ours_i - ref_i| / max_i |ref_i| over the vocabulary, which must stay
// within the fixture's tolerance (1e-3) for
//   - the 32-token prompt in one forward pass (all rows),
//   - the same prompt as a 16-token prefill followed by 16 single-token steps (the KV cache path);
// and the 32 greedy tokens after the prompt must be transformers' exactly.
// Also: malformed checkpoints fail with a tachyon::Error naming the tensor or config field.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>

#include <unistd.h>

#include "core/error.h"
#include "loader/checkpoint.h"
#include "models/model.h"
#include "models/mxfp4.h"
#include "../support/paths.h"

namespace tachyon {
namespace {

namespace fs = std::filesystem;

const std::vector<std::string> kFixtures = {"llama",       "qwen2",       "qwen3",   "qwen3_moe",    "qwen3_moe_unnormalized",
                                            "mixtral",     "deepseek_v2", "deepseek_v3", "gpt_oss", "gpt_oss_mxfp4"};

std::string fixture_dir(const std::string& name) { return test::fixture_path("tiny/" + name); }

nlohmann::json read_json(const std::string& path) {
  std::ifstream file(path);
  if (!file) throw std::runtime_error("cannot open " + path);
  return nlohmann::json::parse(file);
}

struct Reference {
  std::vector<int32_t> prompt, greedy;
  std::vector<float> logits;  // [prompt, vocab]
  int vocab = 0;
  double tolerance = 0;
};

Reference load_reference(const std::string& name) {
  const nlohmann::json j = read_json(fixture_dir(name) + "/reference.json");
  Reference r;
  r.prompt = j["prompt_ids"].get<std::vector<int32_t>>();
  r.greedy = j["greedy_ids"].get<std::vector<int32_t>>();
  r.vocab = j["logits_shape"][1].get<int>();
  r.tolerance = j["tolerance"].get<double>();
  r.logits.resize(r.prompt.size() * r.vocab);
  std::ifstream file(fixture_dir(name) + "/" + j["logits_file"].get<std::string>(), std::ios::binary);
  file.read(reinterpret_cast<char*>(r.logits.data()), static_cast<std::streamsize>(r.logits.size() * sizeof(float)));
  if (!file) throw std::runtime_error(name + ": logits file too short");
  return r;
}

// max |ours - ref| / max |ref| over one position's logits.
double relative_error(const float* ours, const float* ref, int vocab) {
  double difference = 0, scale = 0;
  for (int i = 0; i < vocab; ++i) {
    difference = std::max(difference, static_cast<double>(std::fabs(ours[i] - ref[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
  }
  return difference / scale;
}

int32_t argmax(const float* logits, int vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);  // first of equal maxima
}

// Checkpoints stay open for the whole test program: the models point into their mappings.
struct Loaded {
  Checkpoint checkpoint;
  std::unique_ptr<Model> model;
  Reference reference;
};

Loaded& loaded(const std::string& name) {
  static std::map<std::string, std::unique_ptr<Loaded>> cache;
  auto& slot = cache[name];
  if (!slot) {
    slot = std::make_unique<Loaded>();
    slot->checkpoint = open_checkpoint(fixture_dir(name));
    slot->model = create_model(slot->checkpoint);
    slot->reference = load_reference(name);
  }
  return *slot;
}

class TinyModel : public testing::TestWithParam<std::string> {};

TEST_P(TinyModel, PromptLogitsMatchTransformers) {
  Loaded& l = loaded(GetParam());
  const Reference& ref = l.reference;
  ASSERT_EQ(l.model->vocab_size(), ref.vocab);
  KvCache cache = l.model->new_cache();
  const std::vector<float> logits = l.model->forward(ref.prompt, cache, /*all_rows=*/true);
  ASSERT_EQ(logits.size(), ref.logits.size());
  double worst = 0;
  for (size_t t = 0; t < ref.prompt.size(); ++t) {
    const double error = relative_error(logits.data() + t * ref.vocab, ref.logits.data() + t * ref.vocab, ref.vocab);
    EXPECT_LE(error, ref.tolerance) << GetParam() << " position " << t;
    worst = std::max(worst, error);
  }
  RecordProperty("max_relative_error", std::to_string(worst));
  std::printf("[ %s ] prompt: max relative error %.3g\n", GetParam().c_str(), worst);
}

TEST_P(TinyModel, TokenByTokenDecodingMatchesTransformers) {
  Loaded& l = loaded(GetParam());
  const Reference& ref = l.reference;
  const size_t prefill = ref.prompt.size() / 2;
  KvCache cache = l.model->new_cache();
  const std::vector<float> first = l.model->forward(std::span(ref.prompt).first(prefill), cache, /*all_rows=*/true);
  double worst = 0;
  for (size_t t = 0; t < prefill; ++t)
    worst = std::max(worst, relative_error(first.data() + t * ref.vocab, ref.logits.data() + t * ref.vocab, ref.vocab));
  for (size_t t = prefill; t < ref.prompt.size(); ++t) {
    const std::vector<float> logits = l.model->forward(std::span(ref.prompt).subspan(t, 1), cache);
    ASSERT_EQ(logits.size(), static_cast<size_t>(ref.vocab));
    const double error = relative_error(logits.data(), ref.logits.data() + t * ref.vocab, ref.vocab);
    EXPECT_LE(error, ref.tolerance) << GetParam() << " position " << t;
    worst = std::max(worst, error);
  }
  EXPECT_LE(worst, ref.tolerance);
  EXPECT_EQ(cache.length(), static_cast<int64_t>(ref.prompt.size()));
  std::printf("[ %s ] decode: max relative error %.3g\n", GetParam().c_str(), worst);
}

TEST_P(TinyModel, GreedyTokensMatchTransformers) {
  Loaded& l = loaded(GetParam());
  const Reference& ref = l.reference;
  KvCache cache = l.model->new_cache();
  std::vector<float> logits = l.model->forward(ref.prompt, cache);
  std::vector<int32_t> generated;
  while (generated.size() < ref.greedy.size()) {
    const int32_t token = argmax(logits.data(), ref.vocab);
    generated.push_back(token);
    if (generated.size() < ref.greedy.size()) logits = l.model->forward(std::span(&token, 1), cache);
  }
  EXPECT_EQ(generated, ref.greedy);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, TinyModel, testing::ValuesIn(kFixtures),
                         [](const testing::TestParamInfo<std::string>& info) { return info.param; });

TEST(TinyModels, EveryFixtureDirectoryIsTested) {
  for (const auto& entry : fs::directory_iterator(test::fixture_path("tiny"))) {
    if (!entry.is_directory()) continue;
    const std::string name = entry.path().filename().string();
    EXPECT_NE(std::find(kFixtures.begin(), kFixtures.end(), name), kFixtures.end()) << name << " is not in kFixtures";
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed checkpoints: a copy of a fixture with one config.json edit.

class EditedFixture {
 public:
  EditedFixture(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    static int counter = 0;
    dir_ = fs::temp_directory_path() / ("tachyon_tiny_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir_);
    for (const char* file : {"config.json", "model.safetensors"}) fs::copy_file(fs::path(fixture_dir(name)) / file, dir_ / file);
    nlohmann::json config = read_json((dir_ / "config.json").string());
    edit(config);
    std::ofstream((dir_ / "config.json").string()) << config.dump(2);
  }
  ~EditedFixture() {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  std::string path() const { return dir_.string(); }

 private:
  fs::path dir_;
};

// The Error that loading the edited checkpoint throws ("" if it loads).
std::string load_error(const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
  EditedFixture fixture(name, edit);
  try {
    Checkpoint checkpoint = open_checkpoint(fixture.path());
    create_model(checkpoint);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(TinyModelErrors, ShapeMismatchNamesTheTensor) {
  const std::string message = load_error("llama", [](nlohmann::json& c) { c["intermediate_size"] = 65; });
  EXPECT_NE(message.find("model.layers.0.mlp.gate_proj.weight"), std::string::npos) << message;
  EXPECT_NE(message.find("[64, 48]"), std::string::npos) << message;
  EXPECT_NE(message.find("[65, 48]"), std::string::npos) << message;
}

TEST(TinyModelErrors, HiddenSizeMismatchNamesTheTensor) {
  const std::string message = load_error("qwen3", [](nlohmann::json& c) { c["hidden_size"] = 40; });
  EXPECT_NE(message.find("model.embed_tokens.weight"), std::string::npos) << message;
}

TEST(TinyModelErrors, MissingTensorIsNamed) {
  const std::string message = load_error("deepseek_v3", [](nlohmann::json& c) { c["num_hidden_layers"] = 3; });
  EXPECT_NE(message.find("missing tensor model.layers.2."), std::string::npos) << message;
}

TEST(TinyModelErrors, MissingExpertIsNamed) {
  const std::string message = load_error("mixtral", [](nlohmann::json& c) { c["num_local_experts"] = 5; });
  EXPECT_NE(message.find("block_sparse_moe.gate.weight"), std::string::npos) << message;
  const std::string experts = load_error("qwen3_moe", [](nlohmann::json& c) { c["num_local_experts"] = 9; });
  EXPECT_NE(experts.find("mlp.gate.weight"), std::string::npos) << experts;
}

TEST(TinyModelErrors, UnknownArchitectureIsNamed) {
  const std::string message = load_error("llama", [](nlohmann::json& c) { c["architectures"] = {"FooForCausalLM"}; });
  EXPECT_NE(message.find("FooForCausalLM"), std::string::npos) << message;
  EXPECT_NE(message.find("GptOssForCausalLM"), std::string::npos) << message;  // lists the supported ones
}

TEST(TinyModelErrors, UnsupportedConfigValuesNameTheField) {
  struct Case {
    std::string fixture, field;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"deepseek_v3", "scoring_func", [](nlohmann::json& c) { c["scoring_func"] = "softmax"; }},
      {"deepseek_v3", "topk_method", [](nlohmann::json& c) { c["topk_method"] = "greedy"; }},
      {"deepseek_v3", "n_group", [](nlohmann::json& c) { c["n_group"] = 3; }},
      {"deepseek_v2", "topk_method", [](nlohmann::json& c) { c["topk_method"] = "noaux_tc"; }},
      {"deepseek_v2", "scoring_func", [](nlohmann::json& c) { c["scoring_func"] = "sigmoid"; }},
      {"qwen3_moe", "hidden_act", [](nlohmann::json& c) { c["hidden_act"] = "gelu"; }},
      {"mixtral", "hidden_act", [](nlohmann::json& c) { c["hidden_act"] = "relu"; }},
      {"gpt_oss", "quant_method", [](nlohmann::json& c) { c["quantization_config"] = {{"quant_method", "fp8"}}; }},
      {"gpt_oss", "layer_types", [](nlohmann::json& c) { c["layer_types"][0] = "chunked_attention"; }},
      {"qwen2", "rope_type", [](nlohmann::json& c) { c["rope_parameters"]["rope_type"] = "longrope"; }},
      {"qwen2", "use_sliding_window", [](nlohmann::json& c) { c["use_sliding_window"] = true; }},
  };
  for (const Case& c : cases) {
    const std::string message = load_error(c.fixture, c.edit);
    EXPECT_NE(message.find(c.field), std::string::npos) << c.fixture << ": " << message;
  }
}

TEST(TinyModelErrors, Mxfp4ScalesOfTheWrongShapeAreNamed) {
  // Declaring a larger intermediate size makes the stored blocks/scales too small for the config.
  const std::string message = load_error("gpt_oss_mxfp4", [](nlohmann::json& c) { c["intermediate_size"] = 64; });
  EXPECT_NE(message.find("gate_up_proj_blocks"), std::string::npos) << message;
}

// Configs as Hugging Face checkpoints spell them (rope_theta + rope_scaling instead of transformers 5's
// rope_parameters, num_experts, no head_dim for DeepSeek) load to the same model.
TEST(TinyModelConfigs, LegacySpellingsGiveTheSameLogits) {
  auto to_rope_scaling = [](nlohmann::json& c, const char* type_key) {
    nlohmann::json params = c["rope_parameters"];
    c["rope_theta"] = params["rope_theta"];
    params.erase("rope_theta");
    params[type_key] = params["rope_type"];
    if (std::string(type_key) != "rope_type") params.erase("rope_type");
    c["rope_scaling"] = params;
    c.erase("rope_parameters");
  };
  struct Case {
    std::string fixture;
    std::function<void(nlohmann::json&)> edit;
  };
  const std::vector<Case> cases = {
      {"llama", [&](nlohmann::json& c) { to_rope_scaling(c, "rope_type"); }},
      {"qwen2", [&](nlohmann::json& c) { to_rope_scaling(c, "type"); }},
      {"gpt_oss", [&](nlohmann::json& c) { to_rope_scaling(c, "rope_type"); }},
      {"deepseek_v3",
       [&](nlohmann::json& c) {
         to_rope_scaling(c, "type");
         c.erase("head_dim");
         c["scoring_func"] = "sigmoid";
         c["topk_method"] = "noaux_tc";
       }},
      {"qwen3_moe",
       [](nlohmann::json& c) {
         c["num_experts"] = c["num_local_experts"];
         c.erase("num_local_experts");
       }},
  };
  for (const Case& c : cases) {
    const Reference& ref = loaded(c.fixture).reference;
    EditedFixture fixture(c.fixture, c.edit);
    Checkpoint checkpoint = open_checkpoint(fixture.path());
    std::unique_ptr<Model> model = create_model(checkpoint);
    KvCache cache = model->new_cache();
    const std::vector<float> logits = model->forward(ref.prompt, cache, /*all_rows=*/true);
    for (size_t t = 0; t < ref.prompt.size(); ++t)
      ASSERT_LE(relative_error(logits.data() + t * ref.vocab, ref.logits.data() + t * ref.vocab, ref.vocab),
                ref.tolerance)
          << c.fixture << " position " << t;
  }
}

// ---------------------------------------------------------------------------------------------

TEST(Mxfp4, DecodesCodesNibblesAndScales) {
  // Block 0: scale 2^0, bytes 0x21 -> elements 0.5 (low nibble 1), 1.0 (high nibble 2);
  //          0xf9 -> -0.5, -6.0; rest zero. Block 1: scale 2^-2 (byte 125), byte 0x7f -> -6 * 0.25, 6 * 0.25.
  uint8_t blocks[32] = {};
  blocks[0] = 0x21;
  blocks[1] = 0xf9;
  blocks[16] = 0x7f;
  const uint8_t scales[2] = {127, 125};
  float out[64];
  mxfp4_decode(blocks, scales, 64, out);
  EXPECT_EQ(out[0], 0.5f);
  EXPECT_EQ(out[1], 1.0f);
  EXPECT_EQ(out[2], -0.5f);
  EXPECT_EQ(out[3], -6.0f);
  EXPECT_EQ(out[4], 0.0f);
  EXPECT_EQ(out[32], -1.5f);
  EXPECT_EQ(out[33], 1.5f);
}

}  // namespace
}  // namespace tachyon
