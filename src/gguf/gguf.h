// GGUF v2/v3 reader. The file is memory-mapped and parsed once; strings and tensor data are
// views into the mapping, so the page cache stays the only host copy of the weights.
// Every read is bounds-checked: a hostile file yields a GgufError, never a crash or over-read.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "gguf/ggml_types.h"

namespace orcd {

enum class GgufErrc {
  io,                   // open/stat/mmap failed
  bad_magic,
  unsupported_version,
  truncated,            // a read ran past the end of the file
  bad_value,            // a metadata value is malformed (bad type id, bad bool, nesting too deep)
  absurd_count,         // a count that cannot fit in the bytes that remain
  duplicate,            // duplicate key or tensor name
  bad_tensor,           // bad dims, unknown type, size overflow, row not a whole number of blocks
  bad_alignment,
  data_out_of_bounds,
  overlap,
  missing_key,
  wrong_type,
};
std::string_view gguf_errc_name(GgufErrc c);

class GgufError : public std::runtime_error {
 public:
  GgufError(GgufErrc code, std::string file, uint64_t offset, const std::string& what);
  GgufErrc code() const { return code_; }
  const std::string& file() const { return file_; }
  uint64_t offset() const { return offset_; }  // byte offset in the file where the problem is

 private:
  GgufErrc code_;
  std::string file_;
  uint64_t offset_;
};

enum class GgufType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7,
  string = 8, array = 9, u64 = 10, i64 = 11, f64 = 12,
};
std::string_view gguf_type_name(GgufType t);

// One metadata value. Scalars are decoded; arrays of numbers keep a view of their raw
// little-endian bytes (vocabulary scores can be 150k entries), arrays of strings a list of views.
struct GgufValue {
  GgufType type = GgufType::u8;
  uint64_t u = 0;            // unsigned integers and bool
  int64_t i = 0;             // signed integers
  double f = 0;              // floats
  std::string_view str;      // string
  GgufType elem_type = GgufType::u8;  // arrays
  uint64_t count = 0;
  const uint8_t* raw = nullptr;       // numeric arrays
  std::vector<std::string_view> strings;
  std::vector<GgufValue> items;       // arrays of arrays

  bool is_integer() const;
  bool is_float() const { return type == GgufType::f32 || type == GgufType::f64; }
  // Element k of a numeric array, widened.
  int64_t int_at(uint64_t k) const;
  double float_at(uint64_t k) const;
  std::string to_display(size_t max_items = 8) const;  // for `inspect`
};

struct GgufTensor {
  std::string_view name;
  std::vector<uint64_t> dims;  // ne[0] is the contiguous (row) dimension
  GgmlType type;
  uint64_t offset = 0;         // relative to the data section
  uint64_t file_offset = 0;    // absolute
  uint64_t n_elements = 0;
  uint64_t n_bytes = 0;
  const uint8_t* data = nullptr;
};

class GgufFile {
 public:
  static GgufFile open(const std::string& path);
  // Parses a copy of `bytes`; `name` stands in for the path in errors.
  static GgufFile from_bytes(std::span<const uint8_t> bytes, std::string name = "<memory>");
  // Parses only the header, metadata and tensor table from the first bytes of a file of
  // `file_size` bytes (e.g. fetched with an HTTP range request). Tensor data is checked against
  // `file_size` but not readable (data pointers are null). Throws GgufError(truncated) if the
  // prefix is too short to hold the header.
  static GgufFile from_header_bytes(std::span<const uint8_t> prefix, uint64_t file_size, std::string name);
  bool header_only() const { return header_only_; }

  GgufFile(GgufFile&&) noexcept;
  GgufFile& operator=(GgufFile&&) noexcept;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return header_only_ ? declared_size_ : size_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }

  const std::vector<std::pair<std::string_view, GgufValue>>& metadata() const { return kv_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }

  const GgufValue* find(std::string_view key) const;
  const GgufTensor* find_tensor(std::string_view name) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed accessors: throw GgufError(missing_key / wrong_type) naming the key.
  uint64_t get_u64(std::string_view key) const;  // any non-negative integer type
  int64_t get_i64(std::string_view key) const;
  double get_f64(std::string_view key) const;    // f32, f64 (and integers)
  bool get_bool(std::string_view key) const;
  std::string_view get_string(std::string_view key) const;
  const std::vector<std::string_view>& get_string_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;
  std::vector<int32_t> get_i32_array(std::string_view key) const;

  uint64_t get_u64_or(std::string_view key, uint64_t dflt) const;
  double get_f64_or(std::string_view key, double dflt) const;
  bool get_bool_or(std::string_view key, bool dflt) const;
  std::string_view get_string_or(std::string_view key, std::string_view dflt) const;

 private:
  GgufFile() = default;
  void parse();
  const GgufValue& require(std::string_view key) const;
  [[noreturn]] void wrong_type(std::string_view key, const GgufValue& v, std::string_view want) const;

  struct Mapping;
  std::unique_ptr<Mapping> map_;
  std::vector<uint8_t> owned_;
  bool header_only_ = false;
  uint64_t declared_size_ = 0;  // header_only: the whole file's size
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::string path_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string_view, GgufValue>> kv_;
  std::map<std::string_view, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string_view, size_t> tensor_index_;
};

}  // namespace orcd
