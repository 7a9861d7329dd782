#include "engine/synth.h"

#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <atomic>
#include <thread>

#include "gguf/gguf.h"
#include "gguf/gguf_writer.h"

namespace orcd {

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> p = {
      // name, arch, layers, embd, heads, kv, ff, vocab, ctx, rope base, eps, tied
      {"tiny-llama", "llama", 2, 256, 4, 2, 512, 0, 2048, 10000.0f, 1e-5f, false},
      {"tiny-qwen2", "qwen2", 2, 192, 3, 1, 512, 0, 2048, 1000000.0f, 1e-6f, true},
      {"qwen2.5-0.5b", "qwen2", 24, 896, 14, 2, 4864, 151936, 32768, 1000000.0f, 1e-6f, true},
      {"llama3.2-1b", "llama", 16, 2048, 32, 8, 8192, 128256, 131072, 500000.0f, 1e-5f, true},
      {"llama3-8b", "llama", 32, 4096, 32, 8, 14336, 128256, 8192, 500000.0f, 1e-5f, false},
  };
  return p;
}

const SynthPreset* find_synth_preset(const std::string& name) {
  for (const auto& p : synth_presets())
    if (p.name == name) return &p;
  return nullptr;
}

GgmlType synth_tensor_type(const std::string& scheme, const std::string& tensor, int layer, int n_layers, uint64_t row_len) {
  const bool k_ok = row_len % 256 == 0;
  if (scheme == "f16") return GgmlType::F16;
  if (scheme == "q8_0") return GgmlType::Q8_0;
  const bool is_output = tensor == "output.weight" || (tensor == "token_embd.weight" && scheme == "q4_k_m_tied_out");
  if (scheme == "q4_0") return is_output ? (k_ok ? GgmlType::Q6_K : GgmlType::Q8_0) : GgmlType::Q4_0;
  if (scheme == "q4_k_m") {
    // llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
    const bool more_bits = layer >= 0 && (layer < n_layers / 8 || layer >= 7 * n_layers / 8 || (layer - n_layers / 8) % 3 == 2);
    const bool six = is_output || ((tensor.ends_with("attn_v.weight") || tensor.ends_with("ffn_down.weight")) && more_bits);
    if (six) return k_ok ? GgmlType::Q6_K : GgmlType::Q8_0;
    return k_ok ? GgmlType::Q4_K : GgmlType::Q5_0;
  }
  throw std::invalid_argument("unknown quantization scheme '" + scheme + "' (f16, q8_0, q4_0, q4_k_m)");
}

namespace {

struct Rng {
  uint64_t s;
  uint64_t next() {
    s += 0x9E3779B97F4A7C15ull;
    uint64_t z = s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uniform() { return static_cast<float>(next() >> 40) / 16777216.0f; }  // [0, 1)
  float normal() {
    const float u1 = std::max(uniform(), 1e-7f), u2 = uniform();
    return std::sqrt(-2.0f * std::log(u1)) * std::cos(6.2831853f * u2);
  }
};

void put_half(uint8_t* p, float f) {
  const __half h = __float2half(f);
  std::memcpy(p, &h, 2);
}

}  // namespace

void fill_random_blocks(GgmlType type, uint8_t* dst, size_t n_blocks, uint64_t seed, float sd) {
  Rng rng{seed};
  const auto& tr = ggml_traits(type);
  if (type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16) {
    for (size_t i = 0; i < n_blocks; ++i) {
      const float v = rng.normal() * sd;
      if (type == GgmlType::F32) std::memcpy(dst + 4 * i, &v, 4);
      else if (type == GgmlType::F16) put_half(dst + 2 * i, v);
      else {
        uint32_t u;
        std::memcpy(&u, &v, 4);
        const uint16_t h = static_cast<uint16_t>(u >> 16);
        std::memcpy(dst + 2 * i, &h, 2);
      }
    }
    return;
  }
  // Quant bits uniformly random; the scale fields set so values spread about `sd`.
  const size_t bytes = n_blocks * tr.type_size;
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const uint64_t r = rng.next();
    std::memcpy(dst + i, &r, 8);
  }
  for (; i < bytes; ++i) dst[i] = static_cast<uint8_t>(rng.next());
  for (size_t b = 0; b < n_blocks; ++b) {
    uint8_t* blk = dst + b * tr.type_size;
    const float jitter = 0.75f + 0.5f * rng.uniform();
    switch (type) {
      case GgmlType::Q8_0: put_half(blk, sd / 73.9f * jitter); break;             // int8 std ~73.9
      case GgmlType::Q4_0: put_half(blk, sd / 4.6f * jitter); break;              // (q - 8) std ~4.6
      case GgmlType::Q5_0: put_half(blk, sd / 9.2f * jitter); break;              // (q - 16) std ~9.2
      case GgmlType::Q4_1: put_half(blk, sd / 4.6f * jitter); put_half(blk + 2, -7.5f * sd / 4.6f); break;
      case GgmlType::Q5_1: put_half(blk, sd / 9.2f * jitter); put_half(blk + 2, -15.5f * sd / 9.2f); break;
      case GgmlType::Q4_K: case GgmlType::Q5_K: {
        // value = d*sc*q - dmin*m with sc, m ~ U[0, 63]: dmin = d * qmean centres it.
        const float qmean = type == GgmlType::Q4_K ? 7.5f : 15.5f, qsd = type == GgmlType::Q4_K ? 4.6f : 9.2f;
        const float d = sd / (36.4f * qsd) * jitter;
        put_half(blk, d);
        put_half(blk + 2, d * qmean);
        break;
      }
      case GgmlType::Q6_K: put_half(blk + 208, sd / (73.9f * 18.5f) * jitter); break;
      default: throw std::invalid_argument("synth: no random fill for type " + std::string(tr.name));
    }
  }
}

uint64_t write_synthetic_model(const SynthOptions& opt) {
  const SynthPreset* pp = find_synth_preset(opt.preset);
  if (!pp) {
    std::string names;
    for (const auto& p : synth_presets()) names += (names.empty() ? "" : ", ") + p.name;
    throw std::runtime_error("unknown preset '" + opt.preset + "' (known: " + names + ")");
  }
  SynthPreset P = *pp;
  if (opt.layers_override > 0) P.n_layers = opt.layers_override;
  const GgufFile vocab = GgufFile::open(opt.vocab_path);
  auto tokens = vocab.get_string_array("tokenizer.ggml.tokens");
  if (P.n_vocab == 0) P.n_vocab = static_cast<int>(tokens.size());
  if (static_cast<int>(tokens.size()) > P.n_vocab)
    throw std::runtime_error("vocabulary of " + std::to_string(tokens.size()) + " tokens is larger than the preset's " +
                             std::to_string(P.n_vocab));

  GgufWriter w;
  const std::string a = P.arch + ".";
  w.set_string("general.architecture", P.arch);
  w.set_string("general.name", "synthetic " + P.name + " " + opt.scheme);
  w.set_u32(a + "block_count", P.n_layers);
  w.set_u32(a + "context_length", P.n_ctx);
  w.set_u32(a + "embedding_length", P.n_embd);
  w.set_u32(a + "feed_forward_length", P.n_ff);
  w.set_u32(a + "attention.head_count", P.n_heads);
  w.set_u32(a + "attention.head_count_kv", P.n_kv_heads);
  w.set_f32(a + "rope.freq_base", P.rope_base);
  w.set_f32(a + "attention.layer_norm_rms_epsilon", P.rms_eps);
  w.set_u32(a + "rope.dimension_count", P.n_embd / P.n_heads);
  // Tokenizer: every tokenizer.* key copied; the vocabulary padded with unused tokens if the
  // preset's embedding has more rows (as real models pad theirs).
  for (const auto& [k, v] : vocab.metadata())
    if (k.starts_with("tokenizer.")) w.set_value(k, v);
  if (static_cast<int>(tokens.size()) < P.n_vocab) {
    std::vector<std::string> toks(tokens.begin(), tokens.end());
    auto types = vocab.has("tokenizer.ggml.token_type") ? vocab.get_i32_array("tokenizer.ggml.token_type") : std::vector<int32_t>(toks.size(), 1);
    std::vector<float> scores = vocab.has("tokenizer.ggml.scores") ? vocab.get_f32_array("tokenizer.ggml.scores") : std::vector<float>(toks.size(), 0.0f);
    for (int i = static_cast<int>(toks.size()); i < P.n_vocab; ++i) {
      toks.push_back("<|synth_pad_" + std::to_string(i) + "|>");
      types.push_back(5);
      scores.push_back(0.0f);
    }
    w.set_string_array("tokenizer.ggml.tokens", toks);
    w.set_i32_array("tokenizer.ggml.token_type", types);
    if (vocab.has("tokenizer.ggml.scores")) w.set_f32_array("tokenizer.ggml.scores", scores);
  }

  struct Spec {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type;
    float sd;
  };
  std::vector<Spec> specs;
  const uint64_t E = P.n_embd, hd = P.n_embd / P.n_heads, Q = hd * P.n_heads, KV = hd * P.n_kv_heads, F = P.n_ff, V = P.n_vocab;
  auto mat = [&](const std::string& name, int layer, uint64_t cols, uint64_t rows, float sd) {
    specs.push_back({name, {cols, rows}, synth_tensor_type(opt.scheme, name, layer, P.n_layers, cols), sd});
  };
  auto vec = [&](const std::string& name, uint64_t n, float sd) { specs.push_back({name, {n}, GgmlType::F32, sd}); };
  mat("token_embd.weight", -1, E, V, 1.0f);
  for (int l = 0; l < P.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    vec(p + "attn_norm.weight", E, -1);
    mat(p + "attn_q.weight", l, E, Q, 1.0f / std::sqrt(static_cast<float>(E)));
    mat(p + "attn_k.weight", l, E, KV, 1.0f / std::sqrt(static_cast<float>(E)));
    mat(p + "attn_v.weight", l, E, KV, 1.0f / std::sqrt(static_cast<float>(E)));
    mat(p + "attn_output.weight", l, Q, E, 0.5f / std::sqrt(static_cast<float>(Q)));
    if (P.arch == "qwen2") {
      vec(p + "attn_q.bias", Q, 0.1f);
      vec(p + "attn_k.bias", KV, 0.1f);
      vec(p + "attn_v.bias", KV, 0.1f);
    }
    vec(p + "ffn_norm.weight", E, -1);
    mat(p + "ffn_gate.weight", l, E, F, 1.0f / std::sqrt(static_cast<float>(E)));
    mat(p + "ffn_up.weight", l, E, F, 1.0f / std::sqrt(static_cast<float>(E)));
    mat(p + "ffn_down.weight", l, F, E, 0.5f / std::sqrt(static_cast<float>(F)));
  }
  vec("output_norm.weight", E, -1);
  if (!P.tied_embeddings) mat("output.weight", -1, E, V, 1.0f / std::sqrt(static_cast<float>(E)));

  // Generate tensor data on all cores; each tensor gets its own seed so the result does not
  // depend on the thread count.
  std::vector<std::vector<uint8_t>> data(specs.size());
  const unsigned n_threads = opt.threads > 0 ? opt.threads : std::max(1u, std::thread::hardware_concurrency());
  std::vector<std::thread> pool;
  std::atomic<size_t> next{0};
  for (unsigned t = 0; t < n_threads; ++t)
    pool.emplace_back([&] {
      for (size_t i; (i = next++) < specs.size();) {
        const Spec& s = specs[i];
        uint64_t n = 1;
        for (auto d : s.dims) n *= d;
        const auto& tr = ggml_traits(s.type);
        data[i].resize(n / tr.block_size * tr.type_size);
        const uint64_t seed = opt.seed * 1000003 + i;
        if (s.sd < 0) {  // norm weights: around 1
          Rng r{seed};
          for (uint64_t k = 0; k < n; ++k) {
            const float v = 1.0f + 0.1f * r.normal();
            std::memcpy(data[i].data() + 4 * k, &v, 4);
          }
        } else {
          fill_random_blocks(s.type, data[i].data(), n / tr.block_size, seed, s.sd);
        }
      }
    });
  for (auto& th : pool) th.join();
  for (size_t i = 0; i < specs.size(); ++i) w.add_tensor(specs[i].name, specs[i].dims, specs[i].type, std::move(data[i]));
  w.write(opt.out_path);
  return GgufFile::open(opt.out_path).file_size();
}

}  // namespace orcd
