// SmolLM2-135M-Instruct (real GGUF Q4_1 weights) on the CPU against Hugging Face transformers
// running the same file (fixture: tools/fixtures/make_smollm2_reference.py).
//  - final-position logits of every prompt: max |ours - ref| / max |ref| <= 1e-3
//  - 64 greedy tokens identical
//  - our tokenizer + chat template give transformers' prompt ids
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>

#include "loader/checkpoint.h"
#include "models/model.h"
#include "runtime/sampler.h"
#include "support/paths.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace tachyon {
namespace {

struct Smollm2Reference {
  nlohmann::json cases;
  std::vector<float> final_logits;  // [cases, vocab]
  int vocab = 0;
};

const Smollm2Reference& reference() {
  static Smollm2Reference ref = [] {
    Smollm2Reference r;
    std::ifstream json_file(test::fixture_path("smollm2/reference.json"));
    nlohmann::json j = nlohmann::json::parse(json_file);
    r.cases = j["cases"];
    r.vocab = j["vocab_size"];
    r.final_logits.resize(r.cases.size() * r.vocab);
    std::ifstream logits_file(test::fixture_path("smollm2/final_logits.f32"), std::ios::binary);
    logits_file.read(reinterpret_cast<char*>(r.final_logits.data()), r.final_logits.size() * sizeof(float));
    EXPECT_TRUE(logits_file.good());
    return r;
  }();
  return ref;
}

class Smollm2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string path = test::smollm2_gguf_path();
    if (path.empty()) return;
    checkpoint_ = new Checkpoint(open_checkpoint(path));
    model_ = create_model(*checkpoint_).release();
  }
  static void TearDownTestSuite() {
    delete model_;
    delete checkpoint_;
    model_ = nullptr;
    checkpoint_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) GTEST_SKIP() << "SmolLM2 GGUF not found (run scripts/fetch_model.sh)";
  }
  static Checkpoint* checkpoint_;
  static Model* model_;
};
Checkpoint* Smollm2Test::checkpoint_ = nullptr;
Model* Smollm2Test::model_ = nullptr;

std::vector<int32_t> ids_of(const nlohmann::json& array) { return array.get<std::vector<int32_t>>(); }

TEST_F(Smollm2Test, GreedyTokensAndFinalLogitsMatchTransformers) {
  const Smollm2Reference& ref = reference();
  ASSERT_EQ(model_->vocab_size(), ref.vocab);
  for (size_t c = 0; c < ref.cases.size(); ++c) {
    const auto& kase = ref.cases[c];
    SCOPED_TRACE(kase["text"].get<std::string>());
    std::vector<int32_t> prompt = ids_of(kase["prompt_ids"]);
    std::vector<int32_t> expected = ids_of(kase["greedy_ids"]);
    KvCache cache = model_->new_cache(prompt.size() + expected.size() + 1);
    std::vector<float> logits = model_->forward(prompt, cache);

    const float* ref_logits = ref.final_logits.data() + c * ref.vocab;
    float max_ref = 0, max_diff = 0;
    for (int i = 0; i < ref.vocab; ++i) {
      max_ref = std::max(max_ref, std::fabs(ref_logits[i]));
      max_diff = std::max(max_diff, std::fabs(logits[i] - ref_logits[i]));
    }
    EXPECT_LE(max_diff / max_ref, 1e-3) << "max abs diff " << max_diff << " (max |ref| " << max_ref << ")";

    std::vector<int32_t> generated;
    for (size_t i = 0; i < expected.size(); ++i) {
      int32_t token = argmax(logits);
      generated.push_back(token);
      int32_t next[1] = {token};
      if (i + 1 < expected.size()) logits = model_->forward(next, cache);
    }
    EXPECT_EQ(generated, expected);
  }
}

TEST_F(Smollm2Test, PromptIdsMatchTransformersTokenizerAndChatTemplate) {
  Tokenizer tokenizer = Tokenizer::from_checkpoint(*checkpoint_);
  for (const auto& kase : reference().cases) {
    std::string text = kase["text"];
    std::vector<int32_t> ids;
    if (kase["chat"].get<bool>()) {
      nlohmann::json context = {{"messages", {{{"role", "user"}, {"content", text}}}},
                                {"add_generation_prompt", true},
                                {"bos_token", tokenizer.bos_text()},
                                {"eos_token", tokenizer.eos_text()}};
      ids = tokenizer.encode(render_jinja_template(tokenizer.chat_template(), context));
    } else {
      if (tokenizer.add_bos()) ids.push_back(tokenizer.bos_id());
      std::vector<int32_t> text_ids = tokenizer.encode(text);
      ids.insert(ids.end(), text_ids.begin(), text_ids.end());
    }
    EXPECT_EQ(ids, ids_of(kase["prompt_ids"])) << text;
    EXPECT_EQ(tokenizer.decode(ids_of(kase["greedy_ids"])), kase["greedy_text"].get<std::string>()) << text;
  }
}

}  // namespace
}  // namespace tachyon
