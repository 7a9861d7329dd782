// Writes GGUF v3 files: used by the synthetic-model tool, the fuzzer's seed corpus and tests.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/gguf.h"

namespace orcd {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}

  void set_u8(std::string_view key, uint8_t v);
  void set_u32(std::string_view key, uint32_t v);
  void set_i32(std::string_view key, int32_t v);
  void set_u64(std::string_view key, uint64_t v);
  void set_f32(std::string_view key, float v);
  void set_f64(std::string_view key, double v);
  void set_bool(std::string_view key, bool v);
  void set_string(std::string_view key, std::string_view v);
  void set_string_array(std::string_view key, const std::vector<std::string>& v);
  void set_string_array(std::string_view key, const std::vector<std::string_view>& v);
  void set_f32_array(std::string_view key, std::span<const float> v);
  void set_i32_array(std::string_view key, std::span<const int32_t> v);
  // Copies a value read from another file, whatever its type (nested arrays included).
  void set_value(std::string_view key, const GgufValue& v);
  // Appends an already-encoded value of `type`: lets tests write malformed or unusual values.
  void set_raw(std::string_view key, GgufType type, std::vector<uint8_t> encoded);

  // `data` must hold exactly the tensor's bytes for `type` and `dims`.
  void add_tensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type, std::vector<uint8_t> data);

  std::vector<uint8_t> to_bytes() const;
  void write(const std::string& path) const;  // throws std::runtime_error on I/O failure

  uint32_t alignment() const { return alignment_; }

 private:
  struct Kv { std::string key; GgufType type; std::vector<uint8_t> bytes; };
  struct Tensor { std::string name; std::vector<uint64_t> dims; GgmlType type; std::vector<uint8_t> data; };
  void put(std::string_view key, GgufType type, std::vector<uint8_t> bytes);
  std::vector<uint8_t> header_bytes() const;  // everything before the first tensor's data

  uint32_t alignment_;
  std::vector<Kv> kv_;
  std::vector<Tensor> tensors_;
};

// Little-endian encoding helpers, public so tests can hand-craft hostile files.
void gguf_put_u32(std::vector<uint8_t>& out, uint32_t v);
void gguf_put_u64(std::vector<uint8_t>& out, uint64_t v);
void gguf_put_string(std::vector<uint8_t>& out, std::string_view s);

}  // namespace orcd
