// The on-device speculative round (src/gpu/gpu_speculative.cpp):
//   - the accept kernel against spec/verifier.h's verify_greedy (the CPU reference) on random drafts with planted
//     agreement of every length;
//   - greedy output with a drafter equals the GPU's own plain greedy decode loop, token for token: random drafters
//     of the tiny fixtures (nearly every block rejected: rollback every round), block sizes 1..16, graph and stream
//     launches, and a KV cache exactly as large as the output (the round shrinks its block at the end);
//   - SmolLM2-135M-Instruct with the committed trained drafter (when the model file is present): identical to plain
//     greedy on the fixture prompts, with real acceptance (tau well above 1);
//   - at T > 0: for a seed, the same tokens as the plain sampling loop (lossless, and seed-identical);
//   - one GpuSpecDecoder serving requests back to back (its session keeps the graphs): different prompts, block
//     sizes, greedy / sampling settings and an early stop, each identical to plain decoding, and a second pass over
//     the same requests captures no graph and gives the same tokens;
//   - without a drafter, resident_decode_fn (`serve --device cuda --max-batch 1`) over the same kind of request
//     sequence, and SpeculativeEngine serving it: the text of plain greedy decoding, stop strings, max_tokens, the
//     context limit, min_p refused.
#include <iterator>
#include <numeric>

#include "core/error.h"
#include "gpu/decode_loop.h"
#include "gpu/gpu_drafter.h"
#include "gpu/gpu_config.h"
#include "gpu/gpu_generate.h"
#include "gpu/gpu_spec_decoder.h"
#include "gpu/gpu_model.h"
#include "gpu/gpu_speculative.h"
#include "gpu_test_util.h"
#include "loader/json_file.h"
#include "speculative/spec_round.h"
#include "spec/speculative_engine.h"
#include "spec/verifier.h"
#include "../server/engine_test_util.h"
#include "../support/paths.h"

namespace tachyon::gpu {
namespace {

using kernels::SpecState;
using gpu_test::rng;

TEST(GpuSpecRound, AcceptMatchesVerifyGreedy) {
  SKIP_WITHOUT_GPU();
  gpu_test::reseed_for_current_test();
  cuda::Stream stream;
  const int vocab = 50;
  cuda::DeviceBuffer<int> state(SpecState::kInts), ring(4096), round_ring(64);
  cuda::DeviceBuffer<uint64_t> offset(1);
  offset.fill_bytes(0, stream);
  std::uniform_int_distribution<int> token(0, vocab - 1);
  int count = 7, length = 100, last_count = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const int b = 1 + trial % 16;
    const int agree = trial % (b + 1);  // planted: drafts 1..agree equal the target's choices (maybe more by luck)
    std::vector<float> logits(static_cast<size_t>(b) * vocab);
    for (float& x : logits) x = std::uniform_real_distribution<float>(-3, 3)(rng());
    std::vector<int32_t> choice(b);
    for (int j = 0; j < b; ++j)
      choice[j] = static_cast<int32_t>(std::max_element(logits.begin() + j * vocab, logits.begin() + (j + 1) * vocab) -
                                       logits.begin() - j * vocab);
    std::vector<int32_t> block(b);
    block[0] = token(rng());
    for (int j = 1; j < b; ++j) block[j] = j <= agree ? choice[j - 1] : token(rng());
    const Verdict expected = verify_greedy(std::span<const int32_t>(block.data() + 1, b - 1), logits.data(), vocab);

    std::vector<int> host(SpecState::kInts, -1);
    host[SpecState::kLength] = length;
    host[SpecState::kBonus] = block[0];
    host[SpecState::kCount] = count;
    host[SpecState::kRounds] = trial;
    for (int j = 0; j < b; ++j) {
      host[SpecState::kBlock + j] = block[j];
      host[SpecState::kChoice + j] = choice[j];
    }
    state.copy_from_host(host);
    kernels::spec_round_accept(state.data(), b, ring.data(), 4096, round_ring.data(), 64, offset.data(), stream);
    stream.synchronize();
    std::vector<int> out(SpecState::kInts), ring_host(4096), rounds_host(64);
    TACHYON_CUDA_CHECK(cudaMemcpy(out.data(), state.data(), state.bytes(), cudaMemcpyDeviceToHost));
    TACHYON_CUDA_CHECK(cudaMemcpy(ring_host.data(), ring.data(), ring.bytes(), cudaMemcpyDeviceToHost));
    TACHYON_CUDA_CHECK(cudaMemcpy(rounds_host.data(), round_ring.data(), round_ring.bytes(), cudaMemcpyDeviceToHost));
    const int a = expected.accepted;
    EXPECT_EQ(out[SpecState::kLength], length + a + 1) << "trial " << trial;
    EXPECT_EQ(out[SpecState::kBonus], expected.bonus) << "trial " << trial;
    EXPECT_EQ(out[SpecState::kCount], count + a + 1) << "trial " << trial;
    EXPECT_EQ(out[SpecState::kRounds], trial + 1);
    EXPECT_EQ(rounds_host[trial % 64], a + 1);
    for (int j = 1; j <= a; ++j) EXPECT_EQ(ring_host[(count + j - 1) % 4096], block[j]) << "trial " << trial;
    EXPECT_EQ(ring_host[(count + a) % 4096], expected.bonus) << "trial " << trial;
    last_count = count + a + 1;
    count = last_count % 3000;
    length += a + 1;
  }
  uint64_t final_offset = 0;
  TACHYON_CUDA_CHECK(cudaMemcpy(&final_offset, offset.data(), sizeof final_offset, cudaMemcpyDeviceToHost));
  EXPECT_EQ(final_offset, static_cast<uint64_t>(last_count));  // the sampler's next offset = tokens so far
}

std::vector<int32_t> plain_greedy(GpuModel& model, std::span<const int32_t> prompt, int max_tokens) {
  model.truncate(0);
  DecodeLoop loop(model, {});
  loop.start(prompt);
  loop.enqueue(max_tokens - 1);
  return loop.tokens();
}

void check_stats(const SpecStats& s, size_t generated) {
  EXPECT_EQ(std::accumulate(s.histogram.begin(), s.histogram.end(), int64_t{0}), s.rounds);
  EXPECT_EQ(s.committed, s.rounds + s.accepted_tokens);
  // The first token comes from the prefill; the rounds counted are those whose tokens were looked at.
  EXPECT_GE(s.committed + 1, static_cast<int64_t>(generated));
}

std::vector<std::vector<int32_t>> random_prompts(int count, int vocab, uint32_t seed) {
  std::mt19937 generator(seed);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < count; ++i) {
    std::vector<int32_t> p(3 + (i * 7) % 40);
    for (int32_t& t : p) t = std::uniform_int_distribution<int32_t>(0, vocab - 2)(generator);
    prompts.push_back(std::move(p));
  }
  return prompts;
}

// The target and drafter on the GPU as `generate|serve --draft` load them (load_gpu_spec_decoder: the target with
// the drafter's feature layers). `loaded.target` / `loaded.drafter` are what the tests use.
GpuSpecDecoder load_pair(const Checkpoint& target, const Checkpoint& drafter, int64_t kv_positions) {
  GpuModelOptions options;
  options.kv_positions = kv_positions;
  return load_gpu_spec_decoder(target, drafter, options);
}

// The tiny Qwen3 target with its fixture drafter on the GPU; the checkpoints outlive the decoder that reads them.
struct Qwen3SpecPair {
  explicit Qwen3SpecPair(int64_t kv_positions)
      : target_checkpoint(open_checkpoint(test::fixture_path("tiny/qwen3"))),
        drafter_checkpoint(open_checkpoint(test::fixture_path("dflash/qwen3") + "/drafter")),
        loaded(load_pair(target_checkpoint, drafter_checkpoint, kv_positions)) {}
  Checkpoint target_checkpoint, drafter_checkpoint;
  GpuSpecDecoder loaded;
};

std::vector<int32_t> plain_sampled(GpuModel& model, std::span<const int32_t> prompt, int max_tokens,
                                   const SamplingParams& p) {
  model.truncate(0);
  DecodeLoop loop(model, DecodeSampling{p.temperature, p.top_k, p.top_p, p.seed});
  loop.start(prompt);
  loop.enqueue(max_tokens - 1);
  return loop.tokens();
}

// A request of the serving tests, as a decode function gets it, and its reference: the tokens of fresh plain decode
// loops on the same target (cut where on_token stops it).
struct ServedRequest {
  int prompt, max_tokens;
  float temperature;
  int top_k;
  float top_p;
  uint64_t seed;
  int stop_after = 0;  // > 0: on_token ends generation after this many tokens
  int block = 0;       // the drafter's block size (speculative decode functions)

  SpecDecodeResult run(const SpecDecodeFn& decode, std::span<const int32_t> tokens) const {
    SpecDecodeParams params;
    params.max_tokens = max_tokens;
    params.spec.block_size = block;
    params.sampling = sampling();
    int seen = 0;
    TokenCallback on_token;
    if (stop_after > 0) on_token = [&](int32_t) { return ++seen < stop_after; };
    return decode(tokens, params, on_token);
  }
  std::vector<int32_t> plain(GpuModel& model, std::span<const int32_t> tokens) const {
    std::vector<int32_t> out;
    if (max_tokens > 0)
      out = temperature > 0 ? plain_sampled(model, tokens, max_tokens, sampling())
                            : plain_greedy(model, tokens, max_tokens);
    if (stop_after > 0) out.resize(stop_after);
    return out;
  }
  SamplingParams sampling() const {
    SamplingParams p;
    p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.seed = seed;
    return p;
  }
};

class GpuSpecGreedy : public ::testing::TestWithParam<std::string> {};

TEST_P(GpuSpecGreedy, RandomDrafterMatchesPlainGreedy) {
  SKIP_WITHOUT_GPU();
  const std::string dir = test::fixture_path("dflash/" + GetParam());
  const nlohmann::json reference = read_json_file(dir + "/reference.json");
  Checkpoint target_checkpoint = open_checkpoint(test::fixture_path(reference.at("target").get<std::string>()));
  Checkpoint drafter_checkpoint = open_checkpoint(dir + "/drafter");
  const int max_tokens = 40;
  for (const bool tight : {false, true}) {
    int64_t kv_positions = 512;
    const auto prompts = random_prompts(8, target_checkpoint.config.value("vocab_size", 0), 31);
    // tight: a cache exactly as long as the longest prompt plus the output (the block shrinks at the end).
    size_t longest = 0;
    for (const auto& p : prompts) longest = std::max(longest, p.size());
    if (tight) kv_positions = static_cast<int64_t>(longest) + max_tokens;
    GpuSpecDecoder loaded = load_pair(target_checkpoint, drafter_checkpoint, kv_positions);
    GpuModel* model = loaded.target.get();
    GpuDrafter& drafter = *loaded.drafter;
    const int block_sizes[] = {1, 2, 5, 8, 16, 3, 12, 16};
    SpecStats total;
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<int32_t> plain = plain_greedy(*model, prompts[i], max_tokens);
      SpecDecodeParams params;
      params.max_tokens = max_tokens;
      params.spec.block_size = block_sizes[i];
      GpuSpecRunOptions run;
      run.use_graph = i % 2 == 0;
      run.rounds_per_read = 1 + static_cast<int>(i % 5);
      const SpecDecodeResult spec = gpu_speculative_decode(*model, drafter, prompts[i], params, {}, run);
      EXPECT_EQ(spec.tokens, plain) << GetParam() << " prompt " << i << " block " << block_sizes[i]
                                    << (tight ? " tight cache" : "");
      check_stats(spec.stats, spec.tokens.size());
      total.add(spec.stats);
    }
    EXPECT_GT(total.rounds, 0);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GpuSpecGreedy, ::testing::Values("qwen3", "llama_sliding"));

TEST(GpuSpecStops, StopIdsEndGenerationInsideABlock) {
  SKIP_WITHOUT_GPU();
  Qwen3SpecPair pair(256);
  GpuModel* model = pair.loaded.target.get();
  GpuDrafter& drafter = *pair.loaded.drafter;
  const auto prompts = random_prompts(4, pair.target_checkpoint.config.value("vocab_size", 0), 77);
  for (const auto& prompt : prompts) {
    const std::vector<int32_t> plain = plain_greedy(*model, prompt, 30);
    SpecDecodeParams params;
    params.max_tokens = 30;
    params.stop_ids = {plain[17]};
    const SpecDecodeResult spec = gpu_speculative_decode(*model, drafter, prompt, params);
    const auto stop = std::find(plain.begin(), plain.end(), plain[17]);
    EXPECT_EQ(spec.tokens, std::vector<int32_t>(plain.begin(), stop));
    EXPECT_TRUE(spec.stopped);
    // on_token returning false ends generation after that token.
    int seen = 0;
    SpecDecodeParams thirty;
    thirty.max_tokens = 30;
    const SpecDecodeResult cut =
        gpu_speculative_decode(*model, drafter, prompt, thirty, [&](int32_t) { return ++seen < 5; });
    EXPECT_EQ(cut.tokens, std::vector<int32_t>(plain.begin(), plain.begin() + 5));
  }
}

// At T > 0 the round samples generated token k with Philox offset k, as the plain decode loop does, and accepts
// drafts while they equal those draws (the target-sampled rule): so a seed gives plain sampling's tokens.
TEST(GpuSpecSampling, SameTokensAsPlainSamplingForASeed) {
  SKIP_WITHOUT_GPU();
  Qwen3SpecPair pair(256);
  GpuModel* model = pair.loaded.target.get();
  GpuDrafter& drafter = *pair.loaded.drafter;
  const auto prompts = random_prompts(6, model->config().vocab, 5);
  for (size_t i = 0; i < prompts.size(); ++i) {
    SpecDecodeParams params;
    params.max_tokens = 48;
    params.sampling.temperature = 1.0f;
    params.sampling.top_k = i % 2 ? 0 : 20;
    params.sampling.top_p = 0.95f;
    params.sampling.seed = 1234 + i;
    params.spec.block_size = 2 + static_cast<int>(i * 3 % 15);
    const SpecDecodeResult spec = gpu_speculative_decode(*model, drafter, prompts[i], params);
    EXPECT_EQ(spec.tokens, plain_sampled(*model, prompts[i], params.max_tokens, params.sampling)) << "prompt " << i;
    params.sampling.seed += 1000;
    EXPECT_NE(gpu_speculative_decode(*model, drafter, prompts[i], params).tokens, spec.tokens) << "prompt " << i;
  }
}

// The serving path: one decoder, its decode_fn called for request after request. The sampled graphs read their
// parameters from device memory, so requests with other temperatures / top-k / top-p / seeds replay the graphs an
// earlier request captured; greedy and sampled requests use different graphs (argmax vs sampler).
TEST(GpuSpecSession, ConsecutiveRequestsMatchPlainAndReuseGraphs) {
  SKIP_WITHOUT_GPU();
  Qwen3SpecPair pair(512);
  GpuSpecDecoder& loaded = pair.loaded;
  ASSERT_NE(loaded.session, nullptr);
  GpuModel& model = *loaded.target;
  const SpecDecodeFn decode = loaded.decode_fn();
  const auto prompts = random_prompts(7, model.config().vocab, 2024);
  const ServedRequest requests[] = {  // (prompt, max_tokens, T, top_k, top_p, seed, stop_after, block)
      {0, 40, 0.0f, 0, 1.0f, 0, 0, 16},      {1, 48, 1.0f, 20, 0.95f, 7, 0, 16}, {2, 33, 0.0f, 0, 1.0f, 0, 0, 5},
      {3, 48, 1.0f, 0, 0.9f, 99, 0, 16},     {4, 40, 0.0f, 0, 1.0f, 0, 6, 16},   {5, 40, 0.7f, 50, 1.0f, 3, 0, 5},
      {6, 40, 1.0f, 0, 1.0f, 12345, 0, 16},  {0, 40, 0.0f, 0, 1.0f, 0, 0, 16},   {1, 48, 1.0f, 20, 0.95f, 8, 0, 16},
  };
  std::vector<std::vector<int32_t>> first_pass;
  int captures_after_first_pass = 0;
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < std::size(requests); ++i) {
      const ServedRequest& r = requests[i];
      const SpecDecodeResult spec = r.run(decode, prompts[r.prompt]);
      // The reference runs on the same target between the requests, as other work may in a server.
      EXPECT_EQ(spec.tokens, r.plain(model, prompts[r.prompt]))
          << "pass " << pass << " request " << i << " block " << r.block << " T " << r.temperature << " seed "
          << r.seed;
      check_stats(spec.stats, spec.tokens.size());
      if (pass == 0) {
        first_pass.push_back(spec.tokens);
      } else {
        EXPECT_EQ(spec.tokens, first_pass[i]) << "request " << i << " on reused graphs";
      }
    }
    if (pass == 0) {
      captures_after_first_pass = loaded.session->graphs_captured();
      // Keys (block, bucket, sampled): at most 2 blocks x 2 choices x the buckets these short requests reach.
      EXPECT_GT(captures_after_first_pass, 0);
      EXPECT_LE(captures_after_first_pass, 8);
    }
  }
  EXPECT_EQ(loaded.session->graphs_captured(), captures_after_first_pass) << "the second pass captured graphs";
  // Sampled requests with different seeds on the same graphs still differ (the seed is read at replay).
  EXPECT_NE(first_pass[1], first_pass[8]);
}

// The plain serving path: one decode function, request after request, on the persistent kernel where the model has
// it (the tiny Qwen3 qualifies for the resident one), each request the tokens of a fresh plain decode loop.
TEST(GpuResidentDecode, ConsecutiveRequestsMatchPlainLoops) {
  SKIP_WITHOUT_GPU();
  Checkpoint checkpoint = open_checkpoint(test::fixture_path("tiny/qwen3"));
  GpuModelOptions options;
  options.kv_positions = 256;
  options.persistent_decode = true;
  auto model = GpuModel::load(checkpoint, options);
  const SpecDecodeFn decode = resident_decode_fn(*model);
  const auto prompts = random_prompts(5, model->config().vocab, 909);
  const ServedRequest requests[] = {  // (prompt, max_tokens, T, top_k, top_p, seed, stop_after)
      {0, 40, 0.0f, 0, 1.0f, 0},  {1, 33, 1.0f, 20, 0.95f, 7}, {2, 48, 0.0f, 0, 1.0f, 0, 5},
      {3, 1, 0.0f, 0, 1.0f, 0},   {4, 40, 0.7f, 0, 1.0f, 3},   {0, 40, 0.0f, 0, 1.0f, 0},
      {2, 0, 0.0f, 0, 1.0f, 0},   {1, 33, 1.0f, 20, 0.95f, 7},
  };
  for (size_t i = 0; i < std::size(requests); ++i) {
    const ServedRequest& r = requests[i];
    const SpecDecodeResult got = r.run(decode, prompts[r.prompt]);
    EXPECT_EQ(got.tokens, r.plain(*model, prompts[r.prompt]))
        << "request " << i << " T " << r.temperature << " seed " << r.seed;
    EXPECT_EQ(got.stopped, r.stop_after > 0) << "request " << i;
    EXPECT_EQ(got.stats.rounds, std::max<int64_t>(0, static_cast<int64_t>(got.tokens.size()) - 1));
  }
  // The context bounds the tokens as the cache does: a prompt of 250 of 256 positions gets 6 tokens.
  std::vector<int32_t> long_prompt(250, 5);
  SpecDecodeParams params;
  params.max_tokens = 100;
  EXPECT_EQ(decode(long_prompt, params, {}).tokens.size(), 6u);
  params.sampling.min_p = 0.1f;
  EXPECT_THROW(decode(prompts[0], params, {}), Error);
  // A vocabulary limit (random weights served with a smaller tokenizer): greedy and sampled ids stay below it.
  const SpecDecodeFn limited = resident_decode_fn(*model, 8, 10);
  for (float temperature : {0.0f, 1.0f}) {
    SpecDecodeParams p;
    p.max_tokens = 30;
    p.sampling.temperature = temperature;
    p.sampling.seed = 5;
    const SpecDecodeResult got = limited(prompts[1], p, {});
    EXPECT_EQ(got.tokens.size(), 30u);
    for (int32_t token : got.tokens) EXPECT_LT(token, 10) << "T " << temperature;
  }
}

// The same function behind SpeculativeEngine (as `serve` builds it): a request's text and finish reason are those of
// `generate` on the GPU (generate_on_gpu: same stop ids, stop strings, max_tokens), request after request.
TEST(GpuResidentDecode, EngineServesWhatGenerateGives) {
  SKIP_WITHOUT_GPU();
  GpuModelOptions options;
  options.kv_positions = 512;
  options.persistent_decode = true;
  auto model = GpuModel::random(*builtin_model_config("smollm2-135m"), "smollm2-135m", 11, options);
  ASSERT_TRUE(model->persistent_decode_active()) << model->persistent_decode_unsupported();
  const std::string tokenizer_dir = test::fixture_path("tokenizers/smollm2");
  const Tokenizer tokenizer = Tokenizer::from_hf_json(read_json_file(tokenizer_dir + "/tokenizer.json"),
                                                      read_json_file(tokenizer_dir + "/tokenizer_config.json"),
                                                      tokenizer_dir);
  ModelInfo info{model->config().vocab, std::min(model->config().max_context, model->capacity()), "resident test"};
  info.min_p = false;
  SpeculativeEngine engine(resident_decode_fn(*model), info, tokenizer, 8, SpecOptions{}, false);
  auto serve = [&](const GenerationParams& params, const std::vector<int32_t>& prompt) {
    EngineRequest request;
    request.prompt = prompt;
    request.params = params;
    auto stream = engine.submit(request);
    EXPECT_NE(stream, nullptr);
    return stream ? test::drain(*stream, std::chrono::seconds(60)) : test::Finished{};
  };
  const std::vector<int32_t> prompt = tokenizer.encode("The capital of France is");
  GenerationParams params;
  params.max_tokens = 24;
  for (int round = 0; round < 2; ++round) {  // the second round reuses the greedy loop's graphs
    const GenerationResult reference = generate_on_gpu(*model, tokenizer, prompt, params);
    const test::Finished served = serve(params, prompt);
    EXPECT_EQ(served.text, reference.text) << "round " << round;
    EXPECT_EQ(served.reason, reference.finish_reason == "stop" ? FinishReason::stop : FinishReason::length);
    if (reference.finish_reason == "length") EXPECT_EQ(served.tokens, 24);
    if (round == 0 && reference.text.size() >= 8) {
      // A stop string from the middle of the text ends the request there.
      params.stop_strings = {reference.text.substr(reference.text.size() / 2, 3)};
    }
  }
  params.stop_strings.clear();
  params.sampling.temperature = 0.8f;
  params.sampling.seed = 42;
  const GenerationResult sampled = generate_on_gpu(*model, tokenizer, prompt, params);
  EXPECT_EQ(serve(params, prompt).text, sampled.text);

  params.sampling.min_p = 0.05f;
  EngineRequest refused;
  refused.prompt = prompt;
  refused.params = params;
  EXPECT_THROW(engine.submit(refused), Error);
  const EngineStats stats = engine.stats();
  EXPECT_FALSE(stats.speculative);
  EXPECT_EQ(stats.speculative_rounds, 0u);
  EXPECT_GT(stats.decode_rows, 0u);
}

// SmolLM2 with tachyon's committed drafter: real acceptance, same tokens as plain greedy.
TEST(GpuSpecSmolLM2, TrainedDrafterMatchesPlainGreedy) {
  SKIP_WITHOUT_GPU();
  const std::string path = test::smollm2_gguf_path();
  if (path.empty()) GTEST_SKIP() << "SmolLM2-135M-Instruct.Q4_1.gguf not found (set TACHYON_MODELS_DIR)";
  const std::string drafter_dir = test::source_dir() + "/drafters/smollm2-135m-instruct-dflash";
  Checkpoint target_checkpoint = open_checkpoint(path);
  Checkpoint drafter_checkpoint = open_checkpoint(drafter_dir);
  GpuSpecDecoder loaded = load_pair(target_checkpoint, drafter_checkpoint, 1024);
  GpuModel* model = loaded.target.get();
  GpuDrafter& drafter = *loaded.drafter;
  const nlohmann::json reference = read_json_file(test::fixture_path("smollm2/reference.json"));
  SpecStats total;
  int cases = 0;
  for (const auto& c : reference["cases"]) {
    const std::vector<int32_t> prompt = c["prompt_ids"].get<std::vector<int32_t>>();
    const int max_tokens = 96;
    const std::vector<int32_t> plain = plain_greedy(*model, prompt, max_tokens);
    SpecDecodeParams params;
    params.max_tokens = max_tokens;
    const SpecDecodeResult spec = gpu_speculative_decode(*model, drafter, prompt, params);
    EXPECT_EQ(spec.tokens, plain) << c["text"];
    check_stats(spec.stats, spec.tokens.size());
    total.add(spec.stats);
    ++cases;
  }
  std::printf("[ SmolLM2 ] GPU DFlash b=16 on %d fixture prompts: %s\n", cases, format_spec_stats(total).c_str());
  EXPECT_GT(total.tau(), 1.2) << "the trained drafter should be accepted sometimes";
}

}  // namespace
}  // namespace tachyon::gpu
