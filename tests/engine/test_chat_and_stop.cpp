// Chat-template detection and rendering; stop-string filtering.
#include <gtest/gtest.h>

#include "engine/chat_template.h"
#include "engine/generate.h"
#include "gguf/gguf.h"
#include "testutil.h"

using namespace orcd;

TEST(ChatTemplate, DetectsFamiliesFromJinja) {
  const auto qwen = GgufFile::open(test::testdata("tokenizer/qwen2-vocab.gguf"));
  EXPECT_EQ(detect_chat_format(qwen.get_string("tokenizer.chat_template")), ChatFormat::chatml);
  EXPECT_EQ(detect_chat_format("{{ '<|start_header_id|>' + m.role + '<|end_header_id|>' }}"), ChatFormat::llama3);
  EXPECT_EQ(detect_chat_format("[INST] <<SYS>>\n{{ s }}\n<</SYS>>"), ChatFormat::llama2);
  EXPECT_EQ(detect_chat_format("{{ '[INST] ' + m.content + ' [/INST]' }}"), ChatFormat::mistral);
  EXPECT_EQ(detect_chat_format("<|user|>\n{{ c }}<|end|>\n<|assistant|>"), ChatFormat::phi3);
  EXPECT_EQ(detect_chat_format(""), ChatFormat::none);
}

TEST(ChatTemplate, RendersEachFamily) {
  const std::vector<ChatMessage> m = {{"system", "Be brief."}, {"user", "Hi"}};
  EXPECT_EQ(apply_chat_template(ChatFormat::chatml, m),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(apply_chat_template(ChatFormat::llama3, m),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(apply_chat_template(ChatFormat::llama2, m), "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]");
  EXPECT_EQ(apply_chat_template(ChatFormat::mistral, {{"user", "a"}, {"assistant", "b"}, {"user", "c"}}), "[INST] a [/INST] b</s><s>[INST] c [/INST]");
  EXPECT_EQ(apply_chat_template(ChatFormat::phi3, {{"user", "x"}}), "<|user|>\nx<|end|>\n<|assistant|>\n");
  EXPECT_THROW(apply_chat_template(ChatFormat::none, m), std::invalid_argument);
  EXPECT_THROW(apply_chat_template(ChatFormat::chatml, {{"tool", "x"}}), std::invalid_argument);
}

TEST(StopStringFilter, HoldsBackPossiblePrefixesAndCutsAtTheMatch) {
  StopStringFilter f({"</end>", "STOP"});
  std::string out;
  out += f.push("hello </e");
  EXPECT_EQ(out, "hello ");  // "</e" may start "</end>"
  out += f.push("xtra S");
  EXPECT_EQ(out, "hello </extra ");
  out += f.push("TO");
  EXPECT_FALSE(f.stopped());
  out += f.push("P and more");
  EXPECT_TRUE(f.stopped());
  EXPECT_EQ(out, "hello </extra ");
  EXPECT_EQ(f.push("later"), "");
  EXPECT_EQ(f.flush(), "");

  StopStringFilter g({"ab"});
  EXPECT_EQ(g.push("xa"), "x");
  EXPECT_EQ(g.flush(), "a");  // nothing stopped: the held tail is released at the end
  StopStringFilter none({});
  EXPECT_EQ(none.push("anything"), "anything");
}
