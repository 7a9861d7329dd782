#include "gguf/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <sstream>

namespace orcd {

namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as little-endian u32
constexpr int kMaxArrayDepth = 4;
constexpr uint64_t kMaxNameLen = 64;     // GGUF limit for tensor names
constexpr uint32_t kMaxDims = 4;

// Encoded size of the smallest possible element of each type; used to reject counts that
// could not fit in the remaining bytes before anything is allocated for them.
uint64_t min_encoded_size(GgufType t) {
  switch (t) {
    case GgufType::u8: case GgufType::i8: case GgufType::boolean: return 1;
    case GgufType::u16: case GgufType::i16: return 2;
    case GgufType::u32: case GgufType::i32: case GgufType::f32: return 4;
    case GgufType::u64: case GgufType::i64: case GgufType::f64: return 8;
    case GgufType::string: return 8;
    case GgufType::array: return 12;
  }
  return 1;
}

bool valid_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::f64); }

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);  // x86-64 and aarch64 hosts are little-endian
  return v;
}

class Cursor {
 public:
  // `count_limit`: the file's real size when only a prefix of it is in `base` (counts are judged
  // against the whole file; reads past the prefix are "truncated").
  Cursor(const uint8_t* base, uint64_t size, const std::string& file, uint64_t count_limit = 0)
      : base_(base), size_(size), count_limit_(count_limit ? count_limit : size), file_(file) {}
  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }
  void seek(uint64_t p) { pos_ = p; }

  [[noreturn]] void fail(GgufErrc c, const std::string& what, uint64_t at) const {
    throw GgufError(c, file_, at, what);
  }
  [[noreturn]] void fail(GgufErrc c, const std::string& what) const { fail(c, what, pos_); }

  const uint8_t* take(uint64_t n, const char* what) {
    if (n > remaining()) {
      std::ostringstream m;
      m << "truncated " << what << ": needs " << n << " bytes, " << remaining() << " remain";
      fail(GgufErrc::truncated, m.str());
    }
    const uint8_t* p = base_ + pos_;
    pos_ += n;
    return p;
  }
  template <typename T>
  T read(const char* what) { return load_le<T>(take(sizeof(T), what)); }

  std::string_view read_string(const char* what) {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>(what);
    if (len > remaining()) {
      std::ostringstream m;
      m << what << " length " << len << " runs past the end of the file (" << remaining()
        << " bytes remain)";
      fail(GgufErrc::truncated, m.str(), at);
    }
    const uint8_t* p = take(len, what);
    return {reinterpret_cast<const char*>(p), static_cast<size_t>(len)};
  }

  // A count of elements each at least `min_size` bytes long must fit in what remains.
  void check_count(uint64_t count, uint64_t min_size, const char* what, uint64_t at) const {
    const uint64_t left = count_limit_ - pos_;
    if (min_size != 0 && count > left / min_size) {
      std::ostringstream m;
      m << "absurd " << what << " " << count << ": at least " << min_size
        << " bytes each, only " << left << " bytes remain";
      fail(GgufErrc::absurd_count, m.str(), at);
    }
  }

  const uint8_t* base() const { return base_; }

  // How many of `count` elements could be in the bytes held: what may be reserved up front.
  // Counts are judged against the whole file, allocations against what is actually here, so a
  // header prefix that claims a huge file cannot make the parser allocate for it.
  uint64_t reservable(uint64_t count, uint64_t min_size) const { return std::min(count, remaining() / std::max<uint64_t>(min_size, 1)); }

  // Books `bytes` of parsed structures; they may take at most four times the bytes held (plus
  // 16 MiB), however small each encoded element is (an empty array is 12 bytes, its value 120).
  void charge(uint64_t bytes, uint64_t at) {
    charged_ += bytes;
    if (charged_ > 4 * size_ + (16u << 20))
      fail(GgufErrc::absurd_count, "metadata would take " + std::to_string(charged_) + " bytes of memory for " + std::to_string(size_) +
                                       " bytes of file", at);
  }

 private:
  const uint8_t* base_;
  uint64_t size_;
  uint64_t count_limit_;
  uint64_t pos_ = 0;
  uint64_t charged_ = 0;
  const std::string& file_;
};

void read_value(Cursor& c, GgufType type, GgufValue& v, int depth);

void read_array(Cursor& c, GgufValue& v, int depth) {
  const uint64_t at = c.pos();
  if (depth >= kMaxArrayDepth) c.fail(GgufErrc::bad_value, "arrays nested too deep", at);
  const uint32_t et = c.read<uint32_t>("array element type");
  if (!valid_type(et)) c.fail(GgufErrc::bad_value, "unknown array element type " + std::to_string(et), at);
  v.elem_type = static_cast<GgufType>(et);
  v.count = c.read<uint64_t>("array length");
  c.check_count(v.count, min_encoded_size(v.elem_type), "array length", at + 4);
  switch (v.elem_type) {
    case GgufType::string:
      v.strings.reserve(c.reservable(v.count, 8));
      for (uint64_t k = 0; k < v.count; ++k) {
        c.charge(sizeof(std::string_view), at);
        v.strings.push_back(c.read_string("array string"));
      }
      break;
    case GgufType::array:
      v.items.reserve(c.reservable(v.count, 12));
      for (uint64_t k = 0; k < v.count; ++k) {
        c.charge(sizeof(GgufValue), at);
        GgufValue& item = v.items.emplace_back();
        item.type = GgufType::array;
        read_array(c, item, depth + 1);
      }
      break;
    case GgufType::boolean: {
      const uint64_t start = c.pos();
      v.raw = c.take(v.count, "bool array");
      for (uint64_t k = 0; k < v.count; ++k)
        if (v.raw[k] > 1) c.fail(GgufErrc::bad_value, "bool array element is neither 0 nor 1", start + k);
      break;
    }
    default:
      v.raw = c.take(v.count * min_encoded_size(v.elem_type), "numeric array");
  }
}

void read_value(Cursor& c, GgufType type, GgufValue& v, int depth) {
  v.type = type;
  switch (type) {
    case GgufType::u8: v.u = c.read<uint8_t>("u8"); break;
    case GgufType::i8: v.i = c.read<int8_t>("i8"); break;
    case GgufType::u16: v.u = c.read<uint16_t>("u16"); break;
    case GgufType::i16: v.i = c.read<int16_t>("i16"); break;
    case GgufType::u32: v.u = c.read<uint32_t>("u32"); break;
    case GgufType::i32: v.i = c.read<int32_t>("i32"); break;
    case GgufType::u64: v.u = c.read<uint64_t>("u64"); break;
    case GgufType::i64: v.i = c.read<int64_t>("i64"); break;
    case GgufType::f32: v.f = c.read<float>("f32"); break;
    case GgufType::f64: v.f = c.read<double>("f64"); break;
    case GgufType::boolean: {
      const uint64_t at = c.pos();
      v.u = c.read<uint8_t>("bool");
      if (v.u > 1) c.fail(GgufErrc::bad_value, "bool value is neither 0 nor 1", at);
      break;
    }
    case GgufType::string: v.str = c.read_string("string value"); break;
    case GgufType::array: read_array(c, v, depth); break;
  }
}

bool mul_overflows(uint64_t a, uint64_t b, uint64_t& out) { return __builtin_mul_overflow(a, b, &out); }

}  // namespace

std::string_view gguf_errc_name(GgufErrc c) {
  switch (c) {
    case GgufErrc::io: return "io";
    case GgufErrc::bad_magic: return "bad_magic";
    case GgufErrc::unsupported_version: return "unsupported_version";
    case GgufErrc::truncated: return "truncated";
    case GgufErrc::bad_value: return "bad_value";
    case GgufErrc::absurd_count: return "absurd_count";
    case GgufErrc::duplicate: return "duplicate";
    case GgufErrc::bad_tensor: return "bad_tensor";
    case GgufErrc::bad_alignment: return "bad_alignment";
    case GgufErrc::data_out_of_bounds: return "data_out_of_bounds";
    case GgufErrc::overlap: return "overlap";
    case GgufErrc::missing_key: return "missing_key";
    case GgufErrc::wrong_type: return "wrong_type";
  }
  return "unknown";
}

GgufError::GgufError(GgufErrc code, std::string file, uint64_t offset, const std::string& what)
    : std::runtime_error(file + ": GGUF " + std::string(gguf_errc_name(code)) + " at byte " +
                         std::to_string(offset) + ": " + what),
      code_(code), file_(std::move(file)), offset_(offset) {}

std::string_view gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::u8: return "u8";
    case GgufType::i8: return "i8";
    case GgufType::u16: return "u16";
    case GgufType::i16: return "i16";
    case GgufType::u32: return "u32";
    case GgufType::i32: return "i32";
    case GgufType::f32: return "f32";
    case GgufType::boolean: return "bool";
    case GgufType::string: return "string";
    case GgufType::array: return "array";
    case GgufType::u64: return "u64";
    case GgufType::i64: return "i64";
    case GgufType::f64: return "f64";
  }
  return "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufType::u8: case GgufType::i8: case GgufType::u16: case GgufType::i16:
    case GgufType::u32: case GgufType::i32: case GgufType::u64: case GgufType::i64: return true;
    default: return false;
  }
}

int64_t GgufValue::int_at(uint64_t k) const {
  if (type != GgufType::array || k >= count || raw == nullptr) throw std::out_of_range("int_at");
  const uint8_t* p = raw + k * min_encoded_size(elem_type);
  switch (elem_type) {
    case GgufType::u8: case GgufType::boolean: return load_le<uint8_t>(p);
    case GgufType::i8: return load_le<int8_t>(p);
    case GgufType::u16: return load_le<uint16_t>(p);
    case GgufType::i16: return load_le<int16_t>(p);
    case GgufType::u32: return load_le<uint32_t>(p);
    case GgufType::i32: return load_le<int32_t>(p);
    case GgufType::u64: return static_cast<int64_t>(load_le<uint64_t>(p));
    case GgufType::i64: return load_le<int64_t>(p);
    default: throw std::out_of_range("int_at on an array of " + std::string(gguf_type_name(elem_type)));
  }
}

double GgufValue::float_at(uint64_t k) const {
  if (type == GgufType::array && elem_type == GgufType::f32 && k < count)
    return load_le<float>(raw + 4 * k);
  if (type == GgufType::array && elem_type == GgufType::f64 && k < count)
    return load_le<double>(raw + 8 * k);
  return static_cast<double>(int_at(k));
}

std::string GgufValue::to_display(size_t max_items) const {
  std::ostringstream o;
  switch (type) {
    case GgufType::string: {
      std::string s(str.substr(0, 120));
      o << '"' << s << (str.size() > 120 ? "...\"" : "\"");
      break;
    }
    case GgufType::boolean: o << (u ? "true" : "false"); break;
    case GgufType::f32: case GgufType::f64: o << f; break;
    case GgufType::u8: case GgufType::u16: case GgufType::u32: case GgufType::u64: o << u; break;
    case GgufType::array: {
      o << "[" << gguf_type_name(elem_type) << " x " << count << "]";
      if (count == 0) break;
      o << " ";
      for (uint64_t k = 0; k < std::min<uint64_t>(count, max_items); ++k) {
        if (k) o << ", ";
        if (elem_type == GgufType::string) o << '"' << strings[k].substr(0, 40) << '"';
        else if (elem_type == GgufType::array) o << items[k].to_display(2);
        else if (elem_type == GgufType::f32 || elem_type == GgufType::f64) o << float_at(k);
        else o << int_at(k);
      }
      if (count > max_items) o << ", ...";
      break;
    }
    default: o << i;
  }
  return o.str();
}

struct GgufFile::Mapping {
  void* addr = nullptr;
  size_t len = 0;
  ~Mapping() {
    if (addr && addr != MAP_FAILED) munmap(addr, len);
  }
};

GgufFile::GgufFile(GgufFile&&) noexcept = default;
GgufFile& GgufFile::operator=(GgufFile&&) noexcept = default;
GgufFile::~GgufFile() = default;

GgufFile GgufFile::open(const std::string& path) {
  GgufFile g;
  g.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw GgufError(GgufErrc::io, path, 0, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw GgufError(GgufErrc::io, path, 0, "not a regular file");
  }
  g.size_ = static_cast<uint64_t>(st.st_size);
  g.map_ = std::make_unique<Mapping>();
  if (g.size_ > 0) {
    void* a = mmap(nullptr, g.size_, PROT_READ, MAP_SHARED, fd, 0);
    if (a == MAP_FAILED) {
      const int e = errno;
      ::close(fd);
      throw GgufError(GgufErrc::io, path, 0, std::string("mmap failed: ") + std::strerror(e));
    }
    g.map_->addr = a;
    g.map_->len = g.size_;
    g.base_ = static_cast<const uint8_t*>(a);
  }
  ::close(fd);  // the mapping keeps the file alive
  g.parse();
  return g;
}

GgufFile GgufFile::from_bytes(std::span<const uint8_t> bytes, std::string name) {
  GgufFile g;
  g.path_ = std::move(name);
  g.owned_.assign(bytes.begin(), bytes.end());
  g.base_ = g.owned_.data();
  g.size_ = g.owned_.size();
  g.parse();
  return g;
}

GgufFile GgufFile::from_header_bytes(std::span<const uint8_t> prefix, uint64_t file_size, std::string name) {
  GgufFile g;
  g.path_ = std::move(name);
  g.owned_.assign(prefix.begin(), prefix.end());
  g.base_ = g.owned_.data();
  g.size_ = g.owned_.size();
  g.header_only_ = true;
  g.declared_size_ = file_size;
  g.parse();
  return g;
}

void GgufFile::parse() {
  Cursor c(base_, size_, path_, header_only_ ? std::max(declared_size_, size_) : 0);
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) c.fail(GgufErrc::bad_magic, "not a GGUF file (magic is not 'GGUF')", 0);
  version_ = c.read<uint32_t>("version");
  if (version_ == 1) c.fail(GgufErrc::unsupported_version, "GGUF v1 is not supported; re-convert the model (v2 or v3)", 4);
  if (version_ != 2 && version_ != 3) {
    // A byte-swapped 2 or 3 is a big-endian file.
    const bool big_endian = version_ == 0x02000000u || version_ == 0x03000000u;
    c.fail(GgufErrc::unsupported_version,
           big_endian ? "big-endian GGUF is not supported" : "unsupported GGUF version " + std::to_string(version_), 4);
  }
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // Smallest tensor info: empty name (8) + n_dims (4) + one dim (8) + type (4) + offset (8).
  c.check_count(n_kv, 8 + 4 + 1, "metadata count", 16);
  c.check_count(n_tensors, 8 + 4 + 8 + 4 + 8, "tensor count", 8);

  kv_.reserve(c.reservable(n_kv, 8 + 4 + 1));
  for (uint64_t k = 0; k < n_kv; ++k) {
    const uint64_t at = c.pos();
    c.charge(sizeof(kv_[0]) + 64, at);  // the entry and its index node
    const std::string_view key = c.read_string("metadata key");
    const uint64_t type_at = c.pos();
    const uint32_t t = c.read<uint32_t>("metadata type");
    if (!valid_type(t)) c.fail(GgufErrc::bad_value, "unknown metadata type " + std::to_string(t) + " for key '" + std::string(key) + "'", type_at);
    GgufValue v;
    read_value(c, static_cast<GgufType>(t), v, 0);
    if (!kv_index_.emplace(key, kv_.size()).second)
      c.fail(GgufErrc::duplicate, "duplicate metadata key '" + std::string(key) + "'", at);
    kv_.emplace_back(key, std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (a->type != GgufType::u32 || a->u == 0 || (a->u & (a->u - 1)) != 0)
      c.fail(GgufErrc::bad_alignment, "general.alignment must be a u32 power of two, got " + a->to_display(), 0);
    alignment_ = static_cast<uint32_t>(a->u);
  }

  tensors_.reserve(c.reservable(n_tensors, 8 + 4 + 8 + 4 + 8));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    const uint64_t at = c.pos();
    c.charge(sizeof(GgufTensor) + 4 * sizeof(uint64_t) + 64, at);  // the entry, its dims and index node
    GgufTensor ti;
    ti.name = c.read_string("tensor name");
    const std::string nm(ti.name);
    if (ti.name.size() > kMaxNameLen)
      c.fail(GgufErrc::bad_tensor, "tensor name longer than 64 bytes: '" + nm.substr(0, 64) + "...'", at);
    const uint32_t n_dims = c.read<uint32_t>("tensor n_dims");
    if (n_dims == 0 || n_dims > kMaxDims)
      c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' has " + std::to_string(n_dims) + " dims (1 to 4 allowed)", c.pos() - 4);
    ti.n_elements = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t dim = c.read<uint64_t>("tensor dim");
      if (dim == 0 || dim > (uint64_t{1} << 62))
        c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' has dim " + std::to_string(d) + " = " + std::to_string(dim), c.pos() - 8);
      if (mul_overflows(ti.n_elements, dim, ti.n_elements) || ti.n_elements > (uint64_t{1} << 62))
        c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' element count overflows", c.pos() - 8);
      ti.dims.push_back(dim);
    }
    const uint32_t type_id = c.read<uint32_t>("tensor type");
    const auto traits = ggml_type_traits(type_id);
    if (!traits) c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' has unknown type id " + std::to_string(type_id), c.pos() - 4);
    ti.type = traits->type;
    if (ti.dims[0] % traits->block_size != 0)
      c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' row of " + std::to_string(ti.dims[0]) + " elements is not a whole number of " +
             std::string(traits->name) + " blocks of " + std::to_string(traits->block_size), at);
    if (mul_overflows(ti.n_elements / traits->block_size, traits->type_size, ti.n_bytes))
      c.fail(GgufErrc::bad_tensor, "tensor '" + nm + "' byte size overflows", at);
    ti.offset = c.read<uint64_t>("tensor offset");
    if (ti.offset % alignment_ != 0)
      c.fail(GgufErrc::bad_alignment, "tensor '" + nm + "' offset " + std::to_string(ti.offset) + " is not a multiple of the alignment " + std::to_string(alignment_), c.pos() - 8);
    if (!tensor_index_.emplace(ti.name, tensors_.size()).second)
      c.fail(GgufErrc::duplicate, "duplicate tensor name '" + nm + "'", at);
    tensors_.push_back(std::move(ti));
  }

  data_offset_ = (c.pos() + alignment_ - 1) / alignment_ * alignment_;

  // Every tensor lies inside the file and none overlaps another.
  const uint64_t file_size = header_only_ ? declared_size_ : size_;
  std::vector<const GgufTensor*> by_offset;
  for (auto& t : tensors_) {
    uint64_t end = 0;
    if (__builtin_add_overflow(data_offset_, t.offset, &t.file_offset) ||
        __builtin_add_overflow(t.file_offset, t.n_bytes, &end) || end > file_size) {
      c.fail(GgufErrc::data_out_of_bounds, "tensor '" + std::string(t.name) + "' data [" + std::to_string(t.file_offset) + ", +" +
             std::to_string(t.n_bytes) + ") lies outside the file of " + std::to_string(file_size) + " bytes", data_offset_ + t.offset);
    }
    t.data = header_only_ ? nullptr : base_ + t.file_offset;
    by_offset.push_back(&t);
  }
  std::sort(by_offset.begin(), by_offset.end(), [](auto* a, auto* b) { return a->offset < b->offset; });
  for (size_t k = 1; k < by_offset.size(); ++k) {
    const GgufTensor& prev = *by_offset[k - 1];
    const GgufTensor& cur = *by_offset[k];
    if (prev.offset + prev.n_bytes > cur.offset)
      c.fail(GgufErrc::overlap, "tensor '" + std::string(cur.name) + "' overlaps tensor '" + std::string(prev.name) + "'", cur.file_offset);
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue& GgufFile::require(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw GgufError(GgufErrc::missing_key, path_, 0, "missing metadata key '" + std::string(key) + "'");
  return *v;
}

void GgufFile::wrong_type(std::string_view key, const GgufValue& v, std::string_view want) const {
  std::string got(gguf_type_name(v.type));
  if (v.type == GgufType::array) got += " of " + std::string(gguf_type_name(v.elem_type));
  throw GgufError(GgufErrc::wrong_type, path_, 0,
                  "metadata key '" + std::string(key) + "' is " + got + ", expected " + std::string(want));
}

uint64_t GgufFile::get_u64(std::string_view key) const {
  const GgufValue& v = require(key);
  if (!v.is_integer()) wrong_type(key, v, "an integer");
  if (v.type == GgufType::i8 || v.type == GgufType::i16 || v.type == GgufType::i32 || v.type == GgufType::i64) {
    if (v.i < 0) wrong_type(key, v, "a non-negative integer");
    return static_cast<uint64_t>(v.i);
  }
  return v.u;
}

int64_t GgufFile::get_i64(std::string_view key) const {
  const GgufValue& v = require(key);
  if (!v.is_integer()) wrong_type(key, v, "an integer");
  if (v.type == GgufType::u64 && v.u > static_cast<uint64_t>(INT64_MAX)) wrong_type(key, v, "an integer that fits in i64");
  const bool is_unsigned = v.type == GgufType::u8 || v.type == GgufType::u16 || v.type == GgufType::u32 || v.type == GgufType::u64;
  return is_unsigned ? static_cast<int64_t>(v.u) : v.i;
}

double GgufFile::get_f64(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.is_float()) return v.f;
  if (v.is_integer()) return static_cast<double>(get_i64(key));
  wrong_type(key, v, "a number");
}

bool GgufFile::get_bool(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::boolean) wrong_type(key, v, "bool");
  return v.u != 0;
}

std::string_view GgufFile::get_string(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::string) wrong_type(key, v, "string");
  return v.str;
}

const std::vector<std::string_view>& GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::array || v.elem_type != GgufType::string) wrong_type(key, v, "array of string");
  return v.strings;
}

std::vector<float> GgufFile::get_f32_array(std::string_view key) const {
  const GgufValue& v = require(key);
  if (v.type != GgufType::array || v.elem_type != GgufType::f32) wrong_type(key, v, "array of f32");
  std::vector<float> out(v.count);
  for (uint64_t k = 0; k < v.count; ++k) out[k] = static_cast<float>(v.float_at(k));
  return out;
}

std::vector<int32_t> GgufFile::get_i32_array(std::string_view key) const {
  const GgufValue& v = require(key);
  const bool ok = v.type == GgufType::array &&
                  (v.elem_type == GgufType::i32 || v.elem_type == GgufType::u32 || v.elem_type == GgufType::i8 ||
                   v.elem_type == GgufType::u8 || v.elem_type == GgufType::i16 || v.elem_type == GgufType::u16);
  if (!ok) wrong_type(key, v, "array of i32");
  std::vector<int32_t> out(v.count);
  for (uint64_t k = 0; k < v.count; ++k) out[k] = static_cast<int32_t>(v.int_at(k));
  return out;
}

uint64_t GgufFile::get_u64_or(std::string_view key, uint64_t dflt) const { return has(key) ? get_u64(key) : dflt; }
double GgufFile::get_f64_or(std::string_view key, double dflt) const { return has(key) ? get_f64(key) : dflt; }
bool GgufFile::get_bool_or(std::string_view key, bool dflt) const { return has(key) ? get_bool(key) : dflt; }
std::string_view GgufFile::get_string_or(std::string_view key, std::string_view dflt) const {
  return has(key) ? get_string(key) : dflt;
}

}  // namespace orcd
