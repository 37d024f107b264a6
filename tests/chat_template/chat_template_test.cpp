// The chat template renderer against transformers/jinja2: every fixture case recorded by
// tools/fixtures/make_chat_template_fixtures.py must render byte-identically (or fail where
// jinja2 fails), errors must be tachyon::Error naming the problem, and hostile templates must
// hit the documented limits instead of hanging or overflowing the stack.
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "support/paths.h"
#include "tokenizer/chat_template.h"

namespace tachyon {
namespace {

using ordered_json = nlohmann::ordered_json;

ordered_json load_fixture(const std::string& name) {
  std::string path = test::fixture_path("chat_templates/" + name + ".json");
  std::ifstream in(path);
  if (!in) throw std::runtime_error("missing fixture " + path + " (run tools/fixtures/make_chat_template_fixtures.py)");
  return ordered_json::parse(in);
}

// Message the renderer gave, or "" if it rendered.
std::string render_error(const std::string& source, const ordered_json& context) {
  try {
    render_jinja_template_ordered(source, context);
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

struct CaseResult {
  int passed = 0;
  std::vector<std::string> failures;
};

// jinja2's message for raise_exception() ("TemplateError: <msg>") must come through verbatim.
void check_case(const std::string& source, const ordered_json& entry, CaseResult& result) {
  const std::string name = entry["name"].get<std::string>();
  const ordered_json& context = entry["context"];
  if (entry.contains("error")) {
    std::string jinja_error = entry["error"].get<std::string>();
    std::string ours = render_error(source, context);
    bool raised_by_template = jinja_error.rfind("TemplateError: ", 0) == 0;
    if (ours.empty()) {
      result.failures.push_back(name + ": jinja2 failed (" + jinja_error + ") but we rendered");
    } else if (raised_by_template && ours.find(jinja_error.substr(15)) == std::string::npos) {
      result.failures.push_back(name + ": raise_exception message lost: " + ours);
    } else {
      ++result.passed;
    }
    return;
  }
  const std::string expected = entry["expected"].get<std::string>();
  try {
    std::string rendered = render_jinja_template_ordered(source, context);
    if (rendered == expected) {
      ++result.passed;
      return;
    }
    size_t at = 0;
    while (at < rendered.size() && at < expected.size() && rendered[at] == expected[at]) ++at;
    size_t from = at > 40 ? at - 40 : 0;
    auto excerpt = [from](const std::string& text) {
      return ordered_json(from < text.size() ? text.substr(from, 120) : "").dump(-1, ' ', false,
                                                                                 ordered_json::error_handler_t::replace);
    };
    result.failures.push_back(name + ": differs at byte " + std::to_string(at) + "\n  ours:   " + excerpt(rendered) +
                              "\n  jinja2: " + excerpt(expected));
  } catch (const Error& error) {
    result.failures.push_back(name + ": threw " + error.what());
  }
}

void report(const std::string& fixture, const CaseResult& result, size_t total) {
  std::ostringstream failures;
  for (const auto& failure : result.failures) failures << failure << "\n";
  EXPECT_TRUE(result.failures.empty()) << fixture << ": " << result.failures.size() << " of " << total
                                       << " cases fail:\n" << failures.str();
  std::printf("[ fixture  ] %s: %d/%zu cases identical to transformers\n", fixture.c_str(), result.passed, total);
}

class FamilyTemplate : public ::testing::TestWithParam<std::string> {};

TEST_P(FamilyTemplate, RendersLikeTransformers) {
  ordered_json fixture = load_fixture(GetParam());
  const std::string source = fixture["template"].get<std::string>();
  ASSERT_GE(fixture["cases"].size(), 20u) << "each family needs at least 20 conversations";
  CaseResult result;
  for (const auto& entry : fixture["cases"]) check_case(source, entry, result);
  report(GetParam(), result, fixture["cases"].size());
}

INSTANTIATE_TEST_SUITE_P(ChatTemplate, FamilyTemplate,
                         ::testing::Values("smollm2", "qwen2_5", "qwen3", "llama3_1", "gpt_oss", "gemma"));

TEST(ChatTemplate, ConstructsRenderLikeJinja2) {
  ordered_json fixture = load_fixture("constructs");
  CaseResult result;
  for (const auto& entry : fixture["cases"]) check_case(entry["template"].get<std::string>(), entry, result);
  report("constructs", result, fixture["cases"].size());
}

// ---- error reporting ----

std::string error_of(const std::string& source, const std::string& context_text = R"({"messages": []})") {
  return render_error(source, ordered_json::parse(context_text));
}

TEST(ChatTemplate, UnknownFilterIsNamedWithItsLine) {
  std::string message = error_of("line one\n{{ messages | frobnicate }}");
  EXPECT_NE(message.find("frobnicate"), std::string::npos) << message;
  EXPECT_NE(message.find("line 2"), std::string::npos) << message;
}

TEST(ChatTemplate, UnknownTestAndTagAreNamed) {
  std::string test_message = error_of("{% if messages is frobnicated %}{% endif %}");
  EXPECT_NE(test_message.find("frobnicated"), std::string::npos) << test_message;
  std::string tag_message = error_of("\n\n{% frobnicate %}");
  EXPECT_NE(tag_message.find("frobnicate"), std::string::npos) << tag_message;
  EXPECT_NE(tag_message.find("line 3"), std::string::npos) << tag_message;
}

TEST(ChatTemplate, SyntaxErrorsAreReported) {
  for (const char* source : {"{{ 1 + }}", "{% if true %}never closed", "{{ 'unterminated }}", "{{ (1 }}",
                             "{% for x in %}{% endfor %}", "{% set %}", "{{ x }", "{# open", "{% raw %}open",
                             "{% macro m( %}{% endmacro %}", "{{ a.0.b[ }}", "{% endif %}", "{{ x | }}"}) {
    std::string message = error_of(source);
    EXPECT_FALSE(message.empty()) << source;
    EXPECT_EQ(message.rfind("chat template: ", 0), 0u) << message;
  }
}

TEST(ChatTemplate, RaiseExceptionCarriesTheMessage) {
  std::string message = error_of("{% if messages|length == 0 %}{{ raise_exception('Conversation is empty!') }}{% endif %}");
  EXPECT_NE(message.find("Conversation is empty!"), std::string::npos) << message;
}

TEST(ChatTemplate, RuntimeErrorsNameTheProblem) {
  EXPECT_NE(error_of("{{ missing.attr }}").find("'missing' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 / 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("{{ messages.append(1) }}").find("unsafe"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("concatenate"), std::string::npos);
}

// ---- limits ----

TEST(ChatTemplate, DeepNestingFailsCleanly) {
  const int depth = 100000;
  std::string parens = "{{ " + std::string(depth, '(') + "1" + std::string(depth, ')') + " }}";
  EXPECT_NE(error_of(parens).find("nested"), std::string::npos);
  std::string lists = "{{ " + std::string(depth, '[') + std::string(depth, ']') + " }}";
  EXPECT_NE(error_of(lists).find("nested"), std::string::npos);
  std::string nots = "{{ ";
  for (int i = 0; i < depth; ++i) nots += "not ";
  EXPECT_NE(error_of(nots + "1 }}").find("nested"), std::string::npos);
  std::string ifs;
  for (int i = 0; i < depth; ++i) ifs += "{% if true %}";
  EXPECT_NE(error_of(ifs).find("nested"), std::string::npos);
  std::string minus = "{{ " + std::string(depth, '-') + "1 }}";
  EXPECT_NE(error_of(minus).find("nested"), std::string::npos);
}

TEST(ChatTemplate, RunawayRecursionFailsCleanly) {
  EXPECT_NE(error_of("{% macro r(n) %}{{ r(n + 1) }}{% endmacro %}{{ r(0) }}").find("macro"), std::string::npos);
  // Values nested deeper than the limit, built by the template itself.
  std::string message = error_of(
      "{% set ns = namespace(v=[]) %}{% for i in range(1000) %}{% set ns.v = [ns.v] %}{% endfor %}{{ ns.v }}");
  EXPECT_NE(message.find("nested"), std::string::npos) << message;
}

TEST(ChatTemplate, DeeplyNestedContextFailsCleanly) {
  const int depth = 100000;
  ordered_json context = ordered_json::parse(R"({"messages": [], "deep": )" + std::string(depth, '[') +
                                             std::string(depth, ']') + "}");
  EXPECT_NE(render_error("{{ deep }}", context).find("nested"), std::string::npos);
}

TEST(ChatTemplate, HugeLoopsAndOutputsStopAtTheLimits) {
  auto start = std::chrono::steady_clock::now();
  std::string steps = error_of(
      "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}");
  EXPECT_NE(steps.find("steps"), std::string::npos) << steps;
  std::string output = error_of("{% for i in range(100000) %}{{ 'x' * 100000 }}{% endfor %}");
  EXPECT_NE(output.find("bytes"), std::string::npos) << output;
  std::string doubling = error_of(
      "{% set ns = namespace(s='x') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}");
  EXPECT_NE(doubling.find("limit"), std::string::npos) << doubling;
  std::string repeat = error_of("{{ 'x' * 1000000000000 }}");
  EXPECT_NE(repeat.find("limit"), std::string::npos) << repeat;
  std::string list_repeat = error_of("{{ (range(100000)|list) * 100000 }}");
  EXPECT_NE(list_repeat.find("items"), std::string::npos) << list_repeat;
  std::string exponential = error_of(
      "{% macro f(n) %}{% if n > 0 %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(60) }}");
  EXPECT_FALSE(exponential.empty());
  // About 5 s in a release build (the 10M-step budget dominates), about a minute under ASan.
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(seconds, 300.0) << "limits took too long to trigger";
}

// Random edits of real templates must only ever produce Error, never crash or hang.
TEST(ChatTemplate, MutatedTemplatesNeverCrash) {
  std::mt19937 rng(1234);
  const std::string alphabet = "{}%#-+()[]|.,:'\"~=<>*/ \nabcxyz019_";
  ordered_json context;
  const ordered_json qwen3 = load_fixture("qwen3");
  for (const auto& entry : qwen3["cases"])
    if (entry["name"] == "tool_call_roundtrip/gen") context = entry["context"];
  ASSERT_TRUE(context.is_object());
  int errors = 0, rendered = 0;
  for (const char* family : {"qwen3", "llama3_1", "gpt_oss"}) {
    const std::string source = load_fixture(family)["template"].get<std::string>();
    for (int round = 0; round < 150; ++round) {
      std::string mutated = source;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits; ++e) {
        size_t at = rng() % mutated.size();
        char c = alphabet[rng() % alphabet.size()];
        switch (rng() % 3) {
          case 0: mutated[at] = c; break;
          case 1: mutated.insert(mutated.begin() + static_cast<long>(at), c); break;
          default: mutated.erase(at, 1 + rng() % 8); break;
        }
      }
      if (render_error(mutated, context).empty()) ++rendered;
      else ++errors;
    }
  }
  EXPECT_GT(errors, 0);
  EXPECT_GT(rendered, 0);
}

// ---- transformers' helpers and context defaults ----

TEST(ChatTemplate, StrftimeNowUsesLocalTime) {
  auto today = [] {
    std::time_t now = std::time(nullptr);
    std::tm local{};
    localtime_r(&now, &local);
    char buffer[64];
    std::strftime(buffer, sizeof buffer, "%d %b %Y|%Y-%m-%d", &local);
    return std::string(buffer);
  };
  std::string before = today();
  std::string rendered =
      render_jinja_template("{{ strftime_now('%d %b %Y') }}|{{ strftime_now('%Y-%m-%d') }}", {{"messages", nlohmann::json::array()}});
  std::string after = today();
  EXPECT_TRUE(rendered == before || rendered == after) << rendered;
}

TEST(ChatTemplate, ContextDefaultsMatchTransformers) {
  // transformers always passes tools=None, documents=None and add_generation_prompt.
  EXPECT_EQ(render_jinja_template("{{ tools is defined }}{{ tools is none }}{{ documents is none }}{{ add_generation_prompt }}",
                                  {{"messages", nlohmann::json::array()}}),
            "TrueTrueTrueFalse");
  EXPECT_EQ(render_jinja_template("{{ tools|length }}", {{"messages", nlohmann::json::array()}, {"tools", {1, 2}}}), "2");
}

TEST(ChatTemplate, OrderedContextKeepsKeyOrder) {
  ordered_json context = ordered_json::parse(R"({"messages": [], "tool": {"type": "function", "name": "f", "a": 1}})");
  EXPECT_EQ(render_jinja_template_ordered("{{ tool|tojson }}", context), R"({"type": "function", "name": "f", "a": 1})");
  nlohmann::json sorted = nlohmann::json::parse(context.dump());
  EXPECT_EQ(render_jinja_template("{{ tool|tojson }}", sorted), R"({"a": 1, "name": "f", "type": "function"})");
}

TEST(ChatTemplate, SmolLM2TemplateFromFixtureRendersAConversation) {
  const std::string source = load_fixture("smollm2")["template"].get<std::string>();
  nlohmann::json context = {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"add_generation_prompt", true}};
  EXPECT_EQ(render_jinja_template(source, context),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
}

}  // namespace
}  // namespace tachyon
