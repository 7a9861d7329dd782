// Request validation, OpenAI parsing, error bodies and SSE framing.
#include <gtest/gtest.h>

#include "server/api.h"

using namespace orcd;

namespace {
ApiError err_of(const std::variant<JobSpec, ApiError>& v) {
  EXPECT_TRUE(std::holds_alternative<ApiError>(v));
  return std::holds_alternative<ApiError>(v) ? std::get<ApiError>(v) : ApiError{};
}
}  // namespace

TEST(ExecuteRequest, ValidRequestWithDefaultsAndGeneratedSeed) {
  auto v = parse_execute(R"({"job_id":"j1","prompt":"hi"})", 1234);
  ASSERT_TRUE(std::holds_alternative<JobSpec>(v));
  const auto& s = std::get<JobSpec>(v);
  EXPECT_EQ(s.job_id, "j1");
  EXPECT_EQ(s.prompt, "hi");
  EXPECT_EQ(s.sampling.seed, 1234u);
  EXPECT_GT(s.max_tokens, 0);
  v = parse_execute(R"({"job_id":"j","prompt":"p","max_tokens":5,"temperature":0,"top_p":0.5,"top_k":7,"min_p":0.1,
                        "repetition_penalty":1.2,"stop":["a","b"],"seed":18446744073709551615})", 1);
  const auto& t = std::get<JobSpec>(v);
  EXPECT_EQ(t.max_tokens, 5);
  EXPECT_EQ(t.sampling.temperature, 0.0f);
  EXPECT_EQ(t.sampling.top_k, 7);
  EXPECT_EQ(t.sampling.seed, 18446744073709551615ull);
  EXPECT_EQ(t.stop, (std::vector<std::string>{"a", "b"}));
}

TEST(ExecuteRequest, EachRuleNamesItsField) {
  struct Case { const char* body; const char* field; };
  for (const Case c : {Case{R"({"prompt":"p"})", "job_id"}, Case{R"({"job_id":"","prompt":"p"})", "job_id"},
                       Case{R"({"job_id":7,"prompt":"p"})", "job_id"}, Case{R"({"job_id":"j"})", "prompt"},
                       Case{R"({"job_id":"j","prompt":""})", "prompt"}, Case{R"({"job_id":"j","prompt":"p","temperature":2.5})", "temperature"},
                       Case{R"({"job_id":"j","prompt":"p","temperature":"hot"})", "temperature"},
                       Case{R"({"job_id":"j","prompt":"p","top_p":1.5})", "top_p"}, Case{R"({"job_id":"j","prompt":"p","top_k":-1})", "top_k"},
                       Case{R"({"job_id":"j","prompt":"p","top_k":2.5})", "top_k"}, Case{R"({"job_id":"j","prompt":"p","min_p":-0.1})", "min_p"},
                       Case{R"({"job_id":"j","prompt":"p","repetition_penalty":0})", "repetition_penalty"},
                       Case{R"({"job_id":"j","prompt":"p","stop":["a","b","c","d","e"]})", "stop"},
                       Case{R"({"job_id":"j","prompt":"p","stop":[1]})", "stop"}, Case{R"({"job_id":"j","prompt":"p","seed":-1})", "seed"},
                       Case{R"({"job_id":"j","prompt":"p","seed":1.5})", "seed"}, Case{R"({"job_id":"j","prompt":"p","max_tokens":0})", "max_tokens"}}) {
    const ApiError e = err_of(parse_execute(c.body, 1));
    EXPECT_EQ(e.http_status, 400) << c.body;
    EXPECT_EQ(e.code, "INVALID_REQUEST") << c.body;
    EXPECT_EQ(e.field, c.field) << c.body;
    EXPECT_NE(e.message.find(c.field), std::string::npos) << e.message;
  }
  EXPECT_EQ(err_of(parse_execute("{not json", 1)).code, "INVALID_JSON");
  EXPECT_EQ(err_of(parse_execute("[1,2]", 1)).code, "INVALID_JSON");
  EXPECT_EQ(err_of(parse_execute("", 1)).code, "INVALID_JSON");
}

TEST(OpenAiRequest, CompletionAndChat) {
  auto v = parse_openai(R"({"model":"x","prompt":"Say hi","max_tokens":3,"stream":true,"stop":"\n"})", false, ChatFormat::none, 5);
  ASSERT_TRUE(std::holds_alternative<JobSpec>(v));
  auto s = std::get<JobSpec>(v);
  EXPECT_EQ(s.kind, JobKind::completion);
  EXPECT_TRUE(s.stream);
  EXPECT_EQ(s.max_tokens, 3);
  EXPECT_EQ(s.stop, std::vector<std::string>{"\n"});
  EXPECT_EQ(s.sampling.temperature, 1.0f);  // OpenAI's default
  EXPECT_EQ(s.sampling.top_k, 0);

  v = parse_openai(R"({"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}]})", true, ChatFormat::chatml, 5);
  s = std::get<JobSpec>(v);
  EXPECT_EQ(s.kind, JobKind::chat);
  EXPECT_FALSE(s.stream);
  EXPECT_EQ(s.prompt, "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(s.max_tokens, 0);  // until the context ends

  EXPECT_EQ(err_of(parse_openai(R"({"messages":[]})", true, ChatFormat::chatml, 1)).field, "messages");
  EXPECT_EQ(err_of(parse_openai(R"({"messages":[{"role":"user","content":"x"}]})", true, ChatFormat::none, 1)).field, "messages");
  EXPECT_EQ(err_of(parse_openai(R"({"prompt":"x","n":2})", false, ChatFormat::none, 1)).field, "n");
  EXPECT_EQ(err_of(parse_openai(R"({"prompt":"x","presence_penalty":0.5})", false, ChatFormat::none, 1)).field, "presence_penalty");
  EXPECT_EQ(err_of(parse_openai(R"({"prompt":["a","b"]})", false, ChatFormat::none, 1)).field, "prompt");
}

TEST(ApiError, JsonCarriesCodeFieldAndExtras) {
  ApiError e{503, "QUEUE_FULL", "full", "", {{"retry_after", 2}}};
  const auto j = e.to_json();
  EXPECT_EQ(j["error"], "queue_full");
  EXPECT_EQ(j["code"], "QUEUE_FULL");
  EXPECT_EQ(j["retry_after"], 2);
  EXPECT_FALSE(j.contains("field"));
}

TEST(Sse, FramesAreOneEventAndOneDataLine) {
  const std::string f = sse_frame("token", {{"t", "a\nb"}, {"i", 3}});
  EXPECT_EQ(f, "event: token\ndata: {\"i\":3,\"t\":\"a\\nb\"}\n\n");
  EXPECT_EQ(sse_frame("", {{"x", 1}}), "data: {\"x\":1}\n\n");
  // Invalid UTF-8 in a piece never breaks the frame (replaced, not thrown).
  EXPECT_NO_THROW(sse_frame("token", {{"t", std::string("\xC3")}}));
}
