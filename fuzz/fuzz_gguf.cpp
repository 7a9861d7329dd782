// libFuzzer entry: any input must parse or raise GgufError; walking the result must stay in bounds.
#include <cstddef>
#include <cstdint>

#include "gguf/gguf.h"
#include "tokenizer/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto g = orcd::GgufFile::from_bytes({data, size}, "fuzz");
    // Touch everything the reader hands out, so an over-read would be caught by ASan.
    uint64_t sink = 0;
    for (const auto& [k, v] : g.metadata()) {
      sink += k.size() + v.to_display(4).size();
      if (v.type == orcd::GgufType::array && v.raw) {
        const bool fl = v.elem_type == orcd::GgufType::f32 || v.elem_type == orcd::GgufType::f64;
        for (uint64_t i = 0; i < v.count; ++i) sink += fl ? (v.float_at(i) > 0) : static_cast<uint64_t>(v.int_at(i));
      }
      for (auto s : v.strings) sink += s.empty() ? 0 : static_cast<uint8_t>(s.back());
    }
    for (const auto& t : g.tensors())
      if (t.n_bytes) sink += t.data[0] + t.data[t.n_bytes - 1];
    (void)g.get_string_or("general.architecture", "");
    (void)g.get_u64_or("llama.block_count", 0);
    try {
      const auto tok = orcd::Tokenizer::from_gguf(g);
      const auto ids = tok.encode("Hello <s> world 123 \xE2\x82\xAC");
      sink += tok.decode(ids).size();
    } catch (const orcd::TokenizerError&) {
    }
    volatile uint64_t keep = sink;
    (void)keep;
  } catch (const orcd::GgufError&) {
  }
  // Header-only parsing of a prefix, as model provisioning does over HTTP.
  try {
    const auto h = orcd::GgufFile::from_header_bytes({data, size / 2}, size, "fuzz-prefix");
    for (const auto& t : h.tensors()) (void)t.n_bytes;
  } catch (const orcd::GgufError&) {
  }
  return 0;
}
