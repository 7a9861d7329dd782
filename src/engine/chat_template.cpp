#include "engine/chat_template.h"

#include <stdexcept>

namespace orcd {

std::string_view chat_format_name(ChatFormat f) {
  switch (f) {
    case ChatFormat::none: return "none";
    case ChatFormat::chatml: return "chatml";
    case ChatFormat::llama3: return "llama3";
    case ChatFormat::llama2: return "llama2";
    case ChatFormat::mistral: return "mistral";
    case ChatFormat::phi3: return "phi3";
  }
  return "none";
}

ChatFormat detect_chat_format(std::string_view t) {
  auto has = [&](std::string_view s) { return t.find(s) != std::string_view::npos; };
  if (has("<|im_start|>")) return ChatFormat::chatml;
  if (has("<|start_header_id|>")) return ChatFormat::llama3;
  if (has("<|user|>") && has("<|end|>")) return ChatFormat::phi3;
  if (has("[INST]")) return has("<<SYS>>") ? ChatFormat::llama2 : ChatFormat::mistral;
  return ChatFormat::none;
}

std::string apply_chat_template(ChatFormat f, const std::vector<ChatMessage>& messages) {
  for (const auto& m : messages)
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      throw std::invalid_argument("chat message role '" + m.role + "' is not one of system, user, assistant");
  std::string out;
  switch (f) {
    case ChatFormat::chatml:
      for (const auto& m : messages) out += "<|im_start|>" + m.role + "\n" + m.content + "<|im_end|>\n";
      return out + "<|im_start|>assistant\n";
    case ChatFormat::llama3:
      for (const auto& m : messages) out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + m.content + "<|eot_id|>";
      return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::phi3:
      for (const auto& m : messages) out += "<|" + m.role + "|>\n" + m.content + "<|end|>\n";
      return out + "<|assistant|>\n";
    case ChatFormat::llama2:
    case ChatFormat::mistral: {
      // [INST] user [/INST] answer</s>; Llama 2 folds a system prompt into the first turn.
      std::string system;
      bool first = true;
      for (const auto& m : messages) {
        if (m.role == "system") {
          system = m.content;
        } else if (m.role == "user") {
          std::string content = m.content;
          if (!system.empty()) {
            content = f == ChatFormat::llama2 ? "<<SYS>>\n" + system + "\n<</SYS>>\n\n" + content : system + "\n\n" + content;
            system.clear();
          }
          out += std::string(first ? "" : "<s>") + "[INST] " + content + " [/INST]";
          first = false;
        } else {
          out += " " + m.content + "</s>";
        }
      }
      return out;
    }
    case ChatFormat::none:
      break;
  }
  throw std::invalid_argument("the model has no chat template this worker recognises; send a raw completion prompt instead");
}

std::optional<ChatFormat> chat_format_from_name(std::string_view name) {
  for (ChatFormat f : {ChatFormat::chatml, ChatFormat::llama3, ChatFormat::llama2, ChatFormat::mistral, ChatFormat::phi3})
    if (chat_format_name(f) == name) return f;
  return std::nullopt;
}

ChatFormat effective_chat_format(std::optional<ChatFormat> configured, ChatFormat detected) {
  if (configured) return *configured;
  return detected == ChatFormat::none ? ChatFormat::chatml : detected;
}

}  // namespace orcd
