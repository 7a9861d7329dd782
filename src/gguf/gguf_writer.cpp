#include "gguf/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <stdexcept>

namespace orcd {

namespace {
template <typename T>
void put_le(std::vector<uint8_t>& out, T v) {
  const size_t at = out.size();
  out.resize(at + sizeof(T));
  std::memcpy(out.data() + at, &v, sizeof(T));
}

void encode_value(std::vector<uint8_t>& out, const GgufValue& v);

void encode_array_body(std::vector<uint8_t>& out, const GgufValue& v) {
  put_le<uint32_t>(out, static_cast<uint32_t>(v.elem_type));
  put_le<uint64_t>(out, v.count);
  if (v.elem_type == GgufType::string) {
    for (auto s : v.strings) gguf_put_string(out, s);
  } else if (v.elem_type == GgufType::array) {
    for (const auto& item : v.items) encode_array_body(out, item);
  } else {
    const uint64_t esz = v.elem_type == GgufType::u8 || v.elem_type == GgufType::i8 || v.elem_type == GgufType::boolean ? 1
                       : v.elem_type == GgufType::u16 || v.elem_type == GgufType::i16 ? 2
                       : v.elem_type == GgufType::u64 || v.elem_type == GgufType::i64 || v.elem_type == GgufType::f64 ? 8 : 4;
    out.insert(out.end(), v.raw, v.raw + v.count * esz);
  }
}

void encode_value(std::vector<uint8_t>& out, const GgufValue& v) {
  switch (v.type) {
    case GgufType::u8: put_le<uint8_t>(out, static_cast<uint8_t>(v.u)); break;
    case GgufType::i8: put_le<int8_t>(out, static_cast<int8_t>(v.i)); break;
    case GgufType::u16: put_le<uint16_t>(out, static_cast<uint16_t>(v.u)); break;
    case GgufType::i16: put_le<int16_t>(out, static_cast<int16_t>(v.i)); break;
    case GgufType::u32: put_le<uint32_t>(out, static_cast<uint32_t>(v.u)); break;
    case GgufType::i32: put_le<int32_t>(out, static_cast<int32_t>(v.i)); break;
    case GgufType::u64: put_le<uint64_t>(out, v.u); break;
    case GgufType::i64: put_le<int64_t>(out, v.i); break;
    case GgufType::f32: put_le<float>(out, static_cast<float>(v.f)); break;
    case GgufType::f64: put_le<double>(out, v.f); break;
    case GgufType::boolean: put_le<uint8_t>(out, v.u ? 1 : 0); break;
    case GgufType::string: gguf_put_string(out, v.str); break;
    case GgufType::array: encode_array_body(out, v); break;
  }
}
}  // namespace

void gguf_put_u32(std::vector<uint8_t>& out, uint32_t v) { put_le(out, v); }
void gguf_put_u64(std::vector<uint8_t>& out, uint64_t v) { put_le(out, v); }
void gguf_put_string(std::vector<uint8_t>& out, std::string_view s) {
  put_le<uint64_t>(out, s.size());
  out.insert(out.end(), s.begin(), s.end());
}

void GgufWriter::put(std::string_view key, GgufType type, std::vector<uint8_t> bytes) {
  for (auto& kv : kv_)
    if (kv.key == key) {
      kv.type = type;
      kv.bytes = std::move(bytes);
      return;
    }
  kv_.push_back({std::string(key), type, std::move(bytes)});
}

void GgufWriter::set_raw(std::string_view key, GgufType type, std::vector<uint8_t> encoded) {
  kv_.push_back({std::string(key), type, std::move(encoded)});  // no de-duplication: tests use this
}

#define ORCD_SCALAR_SETTER(name, T, gt)            \
  void GgufWriter::name(std::string_view key, T v) { \
    std::vector<uint8_t> b;                          \
    put_le<T>(b, v);                                 \
    put(key, gt, std::move(b));                      \
  }
ORCD_SCALAR_SETTER(set_u8, uint8_t, GgufType::u8)
ORCD_SCALAR_SETTER(set_u32, uint32_t, GgufType::u32)
ORCD_SCALAR_SETTER(set_i32, int32_t, GgufType::i32)
ORCD_SCALAR_SETTER(set_u64, uint64_t, GgufType::u64)
ORCD_SCALAR_SETTER(set_f32, float, GgufType::f32)
ORCD_SCALAR_SETTER(set_f64, double, GgufType::f64)
#undef ORCD_SCALAR_SETTER

void GgufWriter::set_bool(std::string_view key, bool v) { put(key, GgufType::boolean, {static_cast<uint8_t>(v ? 1 : 0)}); }

void GgufWriter::set_string(std::string_view key, std::string_view v) {
  std::vector<uint8_t> b;
  gguf_put_string(b, v);
  put(key, GgufType::string, std::move(b));
}

void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string_view>& v) {
  std::vector<uint8_t> b;
  put_le<uint32_t>(b, static_cast<uint32_t>(GgufType::string));
  put_le<uint64_t>(b, v.size());
  for (auto s : v) gguf_put_string(b, s);
  put(key, GgufType::array, std::move(b));
}

void GgufWriter::set_string_array(std::string_view key, const std::vector<std::string>& v) {
  std::vector<std::string_view> views(v.begin(), v.end());
  set_string_array(key, views);
}

void GgufWriter::set_f32_array(std::string_view key, std::span<const float> v) {
  std::vector<uint8_t> b;
  put_le<uint32_t>(b, static_cast<uint32_t>(GgufType::f32));
  put_le<uint64_t>(b, v.size());
  for (float x : v) put_le<float>(b, x);
  put(key, GgufType::array, std::move(b));
}

void GgufWriter::set_i32_array(std::string_view key, std::span<const int32_t> v) {
  std::vector<uint8_t> b;
  put_le<uint32_t>(b, static_cast<uint32_t>(GgufType::i32));
  put_le<uint64_t>(b, v.size());
  for (int32_t x : v) put_le<int32_t>(b, x);
  put(key, GgufType::array, std::move(b));
}

void GgufWriter::set_value(std::string_view key, const GgufValue& v) {
  std::vector<uint8_t> b;
  encode_value(b, v);
  put(key, v.type, std::move(b));
}

void GgufWriter::add_tensor(std::string_view name, std::vector<uint64_t> dims, GgmlType type, std::vector<uint8_t> data) {
  uint64_t n = 1;
  for (auto d : dims) n *= d;
  const auto& tr = ggml_traits(type);
  if (dims.empty() || dims[0] % tr.block_size != 0 || n / tr.block_size * tr.type_size != data.size())
    throw std::invalid_argument("GgufWriter: tensor '" + std::string(name) + "' data size does not match its type and shape");
  tensors_.push_back({std::string(name), std::move(dims), type, std::move(data)});
}

std::vector<uint8_t> GgufWriter::header_bytes() const {
  std::vector<uint8_t> out;
  put_le<uint32_t>(out, 0x46554747);
  put_le<uint32_t>(out, 3);
  put_le<uint64_t>(out, tensors_.size());
  put_le<uint64_t>(out, kv_.size() + (alignment_ != 32 ? 1 : 0));
  if (alignment_ != 32) {
    gguf_put_string(out, "general.alignment");
    put_le<uint32_t>(out, static_cast<uint32_t>(GgufType::u32));
    put_le<uint32_t>(out, alignment_);
  }
  for (const auto& kv : kv_) {
    gguf_put_string(out, kv.key);
    put_le<uint32_t>(out, static_cast<uint32_t>(kv.type));
    out.insert(out.end(), kv.bytes.begin(), kv.bytes.end());
  }
  auto align = [&](uint64_t x) { return (x + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const auto& t : tensors_) {
    gguf_put_string(out, t.name);
    put_le<uint32_t>(out, static_cast<uint32_t>(t.dims.size()));
    for (auto d : t.dims) put_le<uint64_t>(out, d);
    put_le<uint32_t>(out, static_cast<uint32_t>(t.type));
    put_le<uint64_t>(out, offset);
    offset = align(offset + t.data.size());
  }
  out.resize(align(out.size()), 0);
  return out;
}

std::vector<uint8_t> GgufWriter::to_bytes() const {
  std::vector<uint8_t> out = header_bytes();
  for (const auto& t : tensors_) {
    out.insert(out.end(), t.data.begin(), t.data.end());
    out.resize((out.size() + alignment_ - 1) / alignment_ * alignment_, 0);
  }
  return out;
}

// Streams tensor data straight to the file so a multi-gigabyte model is never held twice.
void GgufWriter::write(const std::string& path) const {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) throw std::runtime_error("cannot create " + path + ": " + std::strerror(errno));
  const auto header = header_bytes();
  bool ok = std::fwrite(header.data(), 1, header.size(), f) == header.size();
  const std::vector<uint8_t> zeros(alignment_, 0);
  for (const auto& t : tensors_) {
    if (!ok) break;
    ok = std::fwrite(t.data.data(), 1, t.data.size(), f) == t.data.size();
    const size_t pad = (alignment_ - t.data.size() % alignment_) % alignment_;
    ok = ok && std::fwrite(zeros.data(), 1, pad, f) == pad;
  }
  if (std::fclose(f) != 0 || !ok) throw std::runtime_error("write failed: " + path);
}

}  // namespace orcd
