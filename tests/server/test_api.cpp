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
  EXPECT_FALSE(s.max_tokens_given);  // the server applies default_max_tokens, within the context

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

TEST(RequestLimits, DeepNestingIsRefusedBeforeParsing) {
  EXPECT_TRUE(json_depth_within(R"({"a":[[[1]]]})", 4));
  EXPECT_FALSE(json_depth_within(R"({"a":[[[1]]]})", 3));
  EXPECT_TRUE(json_depth_within(R"({"a":"[[[[[[[[[[[["})", 2));  // brackets inside strings do not count
  EXPECT_TRUE(json_depth_within(R"({"a":"\"[[[[[["})", 2));     // nor after an escaped quote
  // Half a million nested arrays in max_tokens: refused with a message that echoes nothing.
  const std::string deep = R"({"job_id":"d","prompt":"x","max_tokens":)" + std::string(500000, '[') + std::string(500000, ']') + "}";
  const ApiError e = err_of(parse_execute(deep, 1));
  EXPECT_EQ(e.code, "INVALID_JSON");
  EXPECT_NE(e.message.find("64"), std::string::npos);
  // 64 levels are fine; 65 are not.
  const auto nest = [](int n) { return R"({"job_id":"d","prompt":"x","stop":)" + std::string(n - 1, '[') + std::string(n - 1, ']') + "}"; };
  EXPECT_EQ(err_of(parse_execute(nest(64), 1)).code, "INVALID_REQUEST");  // parsed, then stop's shape is wrong
  EXPECT_EQ(err_of(parse_execute(nest(65), 1)).code, "INVALID_JSON");
}

TEST(RequestLimits, ErrorsNameTheTypeAndNeverEchoTheValue) {
  const std::string secret = "SECRET-VALUE-" + std::string(100, 'z');
  for (const char* field : {"temperature", "top_k", "max_tokens", "seed", "timeout_secs", "stop"}) {
    const std::string body = std::string(R"({"job_id":"e","prompt":"x",")") + field + R"(":{"k":")" + secret + R"("}})";
    const ApiError e = err_of(parse_execute(body, 1));
    EXPECT_EQ(e.field, field);
    EXPECT_EQ(e.to_json().dump().find("SECRET"), std::string::npos) << field << ": " << e.message;
  }
  EXPECT_NE(err_of(parse_execute(R"({"job_id":"e","prompt":"x","top_k":"many"})", 1)).message.find("string"), std::string::npos);
}

TEST(RequestLimits, PromptBytesAndTimeoutAreBounded) {
  RequestLimits lim;
  lim.max_prompt_bytes = 10;
  lim.default_timeout_secs = 600;
  lim.max_timeout_secs = 900;
  EXPECT_EQ(err_of(parse_execute(R"({"job_id":"p","prompt":"0123456789A"})", 1, lim)).code, "PROMPT_TOO_LARGE");
  EXPECT_EQ(err_of(parse_execute(R"({"job_id":"p","prompt":"0123456789A"})", 1, lim)).http_status, 413);
  EXPECT_EQ(err_of(parse_openai(R"({"messages":[{"role":"user","content":"0123456789A"}]})", true, ChatFormat::chatml, 1, lim)).code, "PROMPT_TOO_LARGE");
  auto ok = std::get<JobSpec>(parse_execute(R"({"job_id":"p","prompt":"0123456789"})", 1, lim));
  EXPECT_EQ(ok.timeout_secs, 600);
  ok = std::get<JobSpec>(parse_execute(R"({"job_id":"p","prompt":"x","timeout_secs":5})", 1, lim));
  EXPECT_EQ(ok.timeout_secs, 5);
  EXPECT_EQ(err_of(parse_execute(R"({"job_id":"p","prompt":"x","timeout_secs":901})", 1, lim)).field, "timeout_secs");
  EXPECT_EQ(err_of(parse_execute(R"({"job_id":"p","prompt":"x","timeout_secs":0})", 1, lim)).field, "timeout_secs");
}

TEST(Wire, OpenAiStreamAndResponseEncoding) {
  StreamEncoder enc(JobKind::chat, "chatcmpl-1", "m");
  EXPECT_EQ(enc.encode({EventKind::started, {{"job_id", "x"}}}), "");
  const std::string first = enc.encode({EventKind::token, {{"t", "Hi"}, {"i", 0}}});
  EXPECT_NE(first.find(R"("role":"assistant")"), std::string::npos);
  EXPECT_EQ(enc.encode({EventKind::token, {{"t", "!"}, {"i", 1}}}).find("role"), std::string::npos);  // the role only once
  const std::string end = enc.encode({EventKind::end, {{"stop_reason", "max_tokens"}, {"prompt_tokens", 3}, {"tokens_out", 2}}});
  EXPECT_NE(end.find(R"("finish_reason":"length")"), std::string::npos);
  EXPECT_NE(end.find(R"("total_tokens":5)"), std::string::npos);
  EXPECT_TRUE(end.ends_with("data: [DONE]\n\n"));
  StreamEncoder ex(JobKind::execute, "j", "m");
  EXPECT_EQ(ex.encode({EventKind::error, {{"code", "CANCELLED"}}}), "event: error\ndata: {\"code\":\"CANCELLED\"}\n\n");
  const auto r = openai_response(JobKind::completion, "cmpl-1", "m", "text", {{"stop_reason", "eos"}, {"prompt_tokens", 1}, {"tokens_out", 1}});
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(r["choices"][0]["text"], "text");
  EXPECT_EQ(error_event_status({{"code", "DEADLINE_EXCEEDED"}}), 504);
  EXPECT_EQ(error_event_status({{"code", "CANCELLED"}}), 499);
}
