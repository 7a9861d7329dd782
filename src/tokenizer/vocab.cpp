#include "tokenizer/vocab.h"

#include <algorithm>

#include "gguf/gguf.h"

namespace orcd {

namespace {
int32_t optional_id(const GgufFile& f, const char* key, int32_t n_vocab) {
  if (!f.has(key)) return -1;
  const int64_t id = f.get_i64(key);
  if (id < 0 || id >= n_vocab)  // some converters write -1 or out-of-range ids for "none"
    return -1;
  return static_cast<int32_t>(id);
}
}  // namespace

Vocab Vocab::from_gguf(const GgufFile& f) {
  Vocab v;
  try {
    if (!f.has("tokenizer.ggml.model"))
      throw TokenizerError(f.path() + ": no tokenizer metadata (tokenizer.ggml.model is missing)");
    v.model = std::string(f.get_string("tokenizer.ggml.model"));
    v.pre = std::string(f.get_string_or("tokenizer.ggml.pre", "default"));
    if (v.model == "llama") v.kind = TokenKind::spm;
    else if (v.model == "gpt2") v.kind = TokenKind::bpe;
    else
      throw TokenizerError(f.path() + ": tokenizer model '" + v.model +
                           "' is not supported (supported: 'llama' SentencePiece, 'gpt2' byte-level BPE)");

    const auto& toks = f.get_string_array("tokenizer.ggml.tokens");
    if (toks.empty()) throw TokenizerError(f.path() + ": tokenizer.ggml.tokens is empty");
    if (toks.size() > (1u << 24)) throw TokenizerError(f.path() + ": vocabulary of " + std::to_string(toks.size()) + " tokens is too large");
    const auto n = static_cast<int32_t>(toks.size());
    v.tokens.assign(toks.begin(), toks.end());
    v.token_to_id.reserve(toks.size());
    for (int32_t i = 0; i < n; ++i) v.token_to_id.emplace(v.tokens[i], i);  // first id wins on duplicates

    v.scores.assign(toks.size(), 0.0f);
    if (f.has("tokenizer.ggml.scores")) {
      auto s = f.get_f32_array("tokenizer.ggml.scores");
      if (s.size() != toks.size()) throw TokenizerError(f.path() + ": tokenizer.ggml.scores has " + std::to_string(s.size()) + " entries for " + std::to_string(n) + " tokens");
      v.scores = std::move(s);
    }
    v.types.assign(toks.size(), TokenType::normal);
    if (f.has("tokenizer.ggml.token_type")) {
      auto t = f.get_i32_array("tokenizer.ggml.token_type");
      if (t.size() != toks.size()) throw TokenizerError(f.path() + ": tokenizer.ggml.token_type has " + std::to_string(t.size()) + " entries for " + std::to_string(n) + " tokens");
      for (size_t i = 0; i < t.size(); ++i) v.types[i] = (t[i] >= 0 && t[i] <= 6) ? static_cast<TokenType>(t[i]) : TokenType::normal;
    }

    if (v.kind == TokenKind::bpe) {
      if (!f.has("tokenizer.ggml.merges")) throw TokenizerError(f.path() + ": BPE tokenizer without tokenizer.ggml.merges");
      const auto& merges = f.get_string_array("tokenizer.ggml.merges");
      v.merge_rank.reserve(merges.size());
      for (size_t r = 0; r < merges.size(); ++r) {
        // Byte-level tokens never hold a raw space, so the first space separates the pair.
        const auto sp = merges[r].find(' ', 1);
        if (sp == std::string_view::npos) throw TokenizerError(f.path() + ": malformed merge #" + std::to_string(r) + " '" + std::string(merges[r]) + "'");
        v.merge_rank.emplace(std::string(merges[r]), static_cast<int32_t>(r));
      }
    }

    v.bos = optional_id(f, "tokenizer.ggml.bos_token_id", n);
    v.eos = optional_id(f, "tokenizer.ggml.eos_token_id", n);
    v.eot = optional_id(f, "tokenizer.ggml.eot_token_id", n);
    v.unk = optional_id(f, "tokenizer.ggml.unknown_token_id", n);
    v.pad = optional_id(f, "tokenizer.ggml.padding_token_id", n);
    // SentencePiece models add BOS unless told otherwise; byte-level BPE models only when told.
    v.add_bos = f.get_bool_or("tokenizer.ggml.add_bos_token", v.kind == TokenKind::spm) && v.bos >= 0;
    v.add_eos = f.get_bool_or("tokenizer.ggml.add_eos_token", false) && v.eos >= 0;
    v.add_space_prefix = f.get_bool_or("tokenizer.ggml.add_space_prefix", v.kind == TokenKind::spm);
    v.chat_template = std::string(f.get_string_or("tokenizer.chat_template", ""));
  } catch (const GgufError& e) {
    throw TokenizerError(e.what());
  }

  // End of generation: EOS, EOT, and the end-of-turn markers of common chat formats, which
  // some converters do not record as eot_token_id.
  auto add_eog = [&](int32_t id) {
    if (id >= 0 && std::find(v.end_of_generation.begin(), v.end_of_generation.end(), id) == v.end_of_generation.end())
      v.end_of_generation.push_back(id);
  };
  add_eog(v.eos);
  add_eog(v.eot);
  for (const char* t : {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|eom_id|>"}) {
    const int32_t id = v.find(t);
    if (id >= 0 && v.types[id] == TokenType::control) add_eog(id);
  }
  return v;
}

int32_t Vocab::find(std::string_view text) const {
  auto it = token_to_id.find(std::string(text));
  return it == token_to_id.end() ? -1 : it->second;
}

bool Vocab::is_special(int32_t id) const {
  return valid(id) && (types[id] == TokenType::control || types[id] == TokenType::user_defined);
}

bool Vocab::is_eog(int32_t id) const {
  return std::find(end_of_generation.begin(), end_of_generation.end(), id) != end_of_generation.end();
}

}  // namespace orcd
