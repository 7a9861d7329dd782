#include "engine/cpu_reference.h"

#include <cmath>
#include <cstring>
#include <stdexcept>

#include "gguf/gguf.h"

namespace orcd::ref {

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exp = (h >> 10) & 0x1F, man = h & 0x3FF;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(man), -24);  // subnormal
  else if (exp == 31) v = man ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(man | 0x400), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

namespace {
uint16_t u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
float f16(const uint8_t* p) { return half_to_float(u16(p)); }

void scale_min_k4(int j, const uint8_t* q, int& d, int& m) {
  if (j < 4) {
    d = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}
}  // namespace

std::vector<float> dequantize(GgmlType type, const uint8_t* x, int64_t n) {
  std::vector<float> y(n);
  float* out = y.data();
  const auto& tr = ggml_traits(type);
  const int64_t nb = n / tr.block_size;
  for (int64_t b = 0; b < nb; ++b, x += tr.type_size) {
    switch (type) {
      case GgmlType::F32: std::memcpy(out, x, 4); out += 1; break;
      case GgmlType::F16: *out++ = f16(x); break;
      case GgmlType::BF16: { uint32_t u = static_cast<uint32_t>(u16(x)) << 16; std::memcpy(out++, &u, 4); break; }
      case GgmlType::Q8_0: {
        const float d = f16(x);
        for (int j = 0; j < 32; ++j) *out++ = d * static_cast<float>(static_cast<int8_t>(x[2 + j]));
        break;
      }
      case GgmlType::Q4_0: case GgmlType::Q4_1: {
        const bool has_min = type == GgmlType::Q4_1;
        const float d = f16(x), m = has_min ? f16(x + 2) : 0.0f;
        const uint8_t* qs = x + (has_min ? 4 : 2);
        for (int j = 0; j < 16; ++j) {
          if (has_min) {
            out[j] = static_cast<float>(qs[j] & 0xF) * d + m;
            out[j + 16] = static_cast<float>(qs[j] >> 4) * d + m;
          } else {
            out[j] = static_cast<float>((qs[j] & 0xF) - 8) * d;
            out[j + 16] = static_cast<float>((qs[j] >> 4) - 8) * d;
          }
        }
        out += 32;
        break;
      }
      case GgmlType::Q5_0: case GgmlType::Q5_1: {
        const bool has_min = type == GgmlType::Q5_1;
        const float d = f16(x), m = has_min ? f16(x + 2) : 0.0f;
        uint32_t qh;
        std::memcpy(&qh, x + (has_min ? 4 : 2), 4);
        const uint8_t* qs = x + (has_min ? 8 : 6);
        for (int j = 0; j < 16; ++j) {
          const int x0 = (qs[j] & 0xF) | (((qh >> j) << 4) & 0x10);
          const int x1 = (qs[j] >> 4) | ((qh >> (j + 12)) & 0x10);
          if (has_min) {
            out[j] = static_cast<float>(x0) * d + m;
            out[j + 16] = static_cast<float>(x1) * d + m;
          } else {
            out[j] = static_cast<float>(x0 - 16) * d;
            out[j + 16] = static_cast<float>(x1 - 16) * d;
          }
        }
        out += 32;
        break;
      }
      case GgmlType::Q4_K: case GgmlType::Q5_K: {
        const bool five = type == GgmlType::Q5_K;
        const float d = f16(x), dmin = f16(x + 2);
        const uint8_t* scales = x + 4;
        const uint8_t* qh = x + 16;
        const uint8_t* q = x + (five ? 48 : 16);
        int is = 0;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0; j < 256; j += 64) {
          int sc, m;
          scale_min_k4(is, scales, sc, m);
          const float d1 = d * static_cast<float>(sc), m1 = dmin * static_cast<float>(m);
          scale_min_k4(is + 1, scales, sc, m);
          const float d2 = d * static_cast<float>(sc), m2 = dmin * static_cast<float>(m);
          for (int l = 0; l < 32; ++l) *out++ = d1 * static_cast<float>((q[l] & 0xF) + (five && (qh[l] & u1) ? 16 : 0)) - m1;
          for (int l = 0; l < 32; ++l) *out++ = d2 * static_cast<float>((q[l] >> 4) + (five && (qh[l] & u2) ? 16 : 0)) - m2;
          q += 32;
          is += 2;
          u1 <<= 2;
          u2 <<= 2;
        }
        break;
      }
      case GgmlType::Q6_K: {
        const float d = f16(x + 208);
        const uint8_t* ql = x;
        const uint8_t* qh = x + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
        for (int n128 = 0; n128 < 256; n128 += 128) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            out[l] = d * static_cast<float>(sc[is]) * static_cast<float>(q1);
            out[l + 32] = d * static_cast<float>(sc[is + 2]) * static_cast<float>(q2);
            out[l + 64] = d * static_cast<float>(sc[is + 4]) * static_cast<float>(q3);
            out[l + 96] = d * static_cast<float>(sc[is + 6]) * static_cast<float>(q4);
          }
          out += 128;
          ql += 64;
          qh += 32;
          sc += 8;
        }
        break;
      }
      default:
        throw std::invalid_argument("reference dequantize: unsupported type");
    }
  }
  return y;
}

RefModel::Mat RefModel::mat(const GgufFile& f, const std::string& name) const {
  const GgufTensor* t = f.find_tensor(name);
  if (!t) throw std::runtime_error("reference: missing " + name);
  Mat m;
  m.cols = static_cast<int64_t>(t->dims[0]);
  m.rows = static_cast<int64_t>(t->dims.size() > 1 ? t->dims[1] : 1);
  const auto fl = dequantize(t->type, t->data, m.rows * m.cols);
  m.w.assign(fl.begin(), fl.end());
  return m;
}

std::vector<double> RefModel::vec(const GgufFile& f, const std::string& name) const {
  if (!f.find_tensor(name)) return {};
  return mat(f, name).w;
}

std::vector<double> RefModel::matvec(const Mat& m, const std::vector<double>& x) const {
  std::vector<double> y(m.rows, 0.0);
  for (int64_t r = 0; r < m.rows; ++r) {
    const double* w = m.w.data() + r * m.cols;
    double s = 0;
    for (int64_t i = 0; i < m.cols; ++i) s += w[i] * x[i];
    y[r] = s;
  }
  return y;
}

RefModel::RefModel(const GgufFile& f, const ModelConfig& c) : c_(c) {
  tok_embd_ = mat(f, "token_embd.weight");
  output_ = c.tied_embeddings ? tok_embd_ : mat(f, "output.weight");
  output_norm_ = vec(f, "output_norm.weight");
  for (int l = 0; l < c.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    Layer L;
    L.attn_norm = vec(f, p + "attn_norm.weight");
    L.ffn_norm = vec(f, p + "ffn_norm.weight");
    L.bq = vec(f, p + "attn_q.bias");
    L.bk = vec(f, p + "attn_k.bias");
    L.bv = vec(f, p + "attn_v.bias");
    L.wq = mat(f, p + "attn_q.weight");
    L.wk = mat(f, p + "attn_k.weight");
    L.wv = mat(f, p + "attn_v.weight");
    L.wo = mat(f, p + "attn_output.weight");
    L.gate = mat(f, p + "ffn_gate.weight");
    L.up = mat(f, p + "ffn_up.weight");
    L.down = mat(f, p + "ffn_down.weight");
    layers_.push_back(std::move(L));
  }
  kcache_.resize(c.n_layers);
  vcache_.resize(c.n_layers);
}

std::vector<std::vector<double>> RefModel::forward(const std::vector<int32_t>& tokens) {
  const int E = c_.n_embd, hd = c_.head_dim, H = c_.n_heads, KVH = c_.n_kv_heads;
  auto rmsnorm = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double inv = 1.0 / std::sqrt(ss / x.size() + c_.rms_eps);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * inv * w[i];
    return y;
  };
  auto rope = [&](double* head, int pos) {
    const int half = c_.rope_dims / 2;
    for (int i = 0; i < half; ++i) {
      const double theta = pos * static_cast<double>(c_.rope_freq_scale) * std::pow(static_cast<double>(c_.rope_base), -2.0 * i / c_.rope_dims);
      const int a = c_.rope_neox ? i : 2 * i, b = c_.rope_neox ? i + half : 2 * i + 1;
      const double x0 = head[a], x1 = head[b];
      head[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
      head[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  };
  std::vector<std::vector<double>> all_logits;
  for (int32_t tok : tokens) {
    const int pos = static_cast<int>(kcache_[0].size());
    std::vector<double> x(tok_embd_.w.begin() + static_cast<int64_t>(tok) * E, tok_embd_.w.begin() + static_cast<int64_t>(tok + 1) * E);
    for (int l = 0; l < c_.n_layers; ++l) {
      const Layer& L = layers_[l];
      auto xb = rmsnorm(x, L.attn_norm);
      auto q = matvec(L.wq, xb), k = matvec(L.wk, xb), v = matvec(L.wv, xb);
      if (!L.bq.empty())
        for (size_t i = 0; i < q.size(); ++i) q[i] += L.bq[i];
      if (!L.bk.empty())
        for (size_t i = 0; i < k.size(); ++i) k[i] += L.bk[i], v[i] += L.bv[i];
      for (int h = 0; h < H; ++h) rope(q.data() + h * hd, pos);
      for (int h = 0; h < KVH; ++h) rope(k.data() + h * hd, pos);
      kcache_[l].push_back(k);
      vcache_[l].push_back(v);
      std::vector<double> att(static_cast<size_t>(H) * hd, 0.0);
      for (int h = 0; h < H; ++h) {
        const int kvh = h / (H / KVH);
        std::vector<double> s(pos + 1);
        double mx = -1e300;
        for (int p = 0; p <= pos; ++p) {
          double d = 0;
          for (int i = 0; i < hd; ++i) d += q[h * hd + i] * kcache_[l][p][kvh * hd + i];
          s[p] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[p]);
        }
        double sum = 0;
        for (auto& e : s) sum += (e = std::exp(e - mx));
        for (int p = 0; p <= pos; ++p)
          for (int i = 0; i < hd; ++i) att[h * hd + i] += s[p] / sum * vcache_[l][p][kvh * hd + i];
      }
      auto o = matvec(L.wo, att);
      for (int i = 0; i < E; ++i) x[i] += o[i];
      xb = rmsnorm(x, L.ffn_norm);
      auto g = matvec(L.gate, xb), u = matvec(L.up, xb);
      for (size_t i = 0; i < g.size(); ++i) g[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      auto dn = matvec(L.down, g);
      for (int i = 0; i < E; ++i) x[i] += dn[i];
    }
    all_logits.push_back(matvec(output_, rmsnorm(x, output_norm_)));
  }
  return all_logits;
}

}  // namespace orcd::ref
