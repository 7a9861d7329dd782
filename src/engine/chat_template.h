// Chat prompt formats of the common model families, detected from tokenizer.chat_template.
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace orcd {

enum class ChatFormat { none, chatml, llama3, llama2, mistral, phi3 };
std::string_view chat_format_name(ChatFormat f);

// Recognises the family from the Jinja template text stored in the GGUF (markers each family
// uses); `none` when there is no template or it is not one of these.
ChatFormat detect_chat_format(std::string_view jinja_template);

// The format named by `name` (chatml, llama3, llama2, mistral, phi3); nullopt for any other.
std::optional<ChatFormat> chat_format_from_name(std::string_view name);

// What a chat request is templated with: the operator's choice when given, else the model's own
// format, else ChatML, the fallback llama.cpp uses too.
ChatFormat effective_chat_format(std::optional<ChatFormat> configured, ChatFormat detected);

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::string content;
};

// The prompt text for `messages`, ending with the assistant's turn opened. BOS is not included:
// the tokenizer adds it when the model asks for it. Throws std::invalid_argument for a role the
// format cannot express or for ChatFormat::none.
std::string apply_chat_template(ChatFormat f, const std::vector<ChatMessage>& messages);

}  // namespace orcd
