#include <cuda_runtime_api.h>

#include <filesystem>

#include "engine/engine.h"
#include "gguf/model_info.h"
#include "server/backend.h"

namespace orcd {

std::string quant_kind_name(int64_t ft, const std::string& dominant) {
  switch (ft) {
    case 0: return "F32";
    case 1: return "F16";
    case 2: return "Q4_0";
    case 3: return "Q4_1";
    case 7: return "Q8_0";
    case 8: return "Q5_0";
    case 9: return "Q5_1";
    case 10: return "Q2_K";
    case 11: return "Q3_K_S";
    case 12: return "Q3_K_M";
    case 13: return "Q3_K_L";
    case 14: return "Q4_K_S";
    case 15: return "Q4_K_M";
    case 16: return "Q5_K_S";
    case 17: return "Q5_K_M";
    case 18: return "Q6_K";
    case 32: return "BF16";
    default: return dominant;
  }
}

namespace {

class EngineBackend final : public InferenceBackend {
 public:
  explicit EngineBackend(std::unique_ptr<InferenceEngine> e) : e_(std::move(e)) {
    const GgufFile& f = e_->gguf();
    const ModelInfo m = describe_model(f);
    std::string dominant;
    uint64_t most = 0;
    for (const auto& [type, bytes] : m.bytes_by_type)
      if (bytes > most) most = bytes, dominant = type;
    info_.model_path = f.path();
    info_.model_name = m.name.empty() ? std::filesystem::path(f.path()).stem().string() : m.name;
    info_.quant_kind = quant_kind_name(f.has("general.file_type") ? f.get_i64("general.file_type") : -1, dominant);
    info_.tokenizer_kind = std::string(e_->tokenizer().kind_name());
    info_.architecture = e_->config().arch_name;
    info_.vocab_size = e_->tokenizer().vocab_size();
    info_.context_length = e_->n_ctx();
    info_.device = e_->device();
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, e_->device()) == cudaSuccess) info_.sm = "sm_" + std::to_string(p.major) + std::to_string(p.minor);
    cudaRuntimeGetVersion(&info_.cuda_runtime_version);
    info_.chat_format = detect_chat_format(e_->tokenizer().vocab().chat_template);
  }
  const BackendInfo& info() const override { return info_; }
  std::vector<int32_t> tokenize(std::string_view prompt) const override { return e_->tokenizer().encode(prompt); }
  GenerateResult generate(const GenerateRequest& req, const std::function<bool(std::string_view)>& on_piece) override {
    return orcd::generate(*e_, req, on_piece);
  }
  std::map<std::string, uint64_t> vram_breakdown() const override {
    std::map<std::string, uint64_t> m;
    for (const auto& [p, b] : e_->tracker().bytes_by_purpose()) m[std::string(vram_purpose_name(p))] = b;
    return m;
  }
  uint64_t vram_bytes() const override { return e_->tracker().total_bytes(); }
  ResidencyReport verify_residency() override {
    cudaSetDevice(e_->device());
    return e_->tracker().verify_residency();
  }
  bool device_lost() override {
    // A sticky error (illegal address, launch failure, ECC) fails every later call, this one too.
    cudaSetDevice(e_->device());
    const cudaError_t err = cudaDeviceSynchronize();
    return err != cudaSuccess && err != cudaErrorMemoryAllocation;
  }

 private:
  std::unique_ptr<InferenceEngine> e_;
  BackendInfo info_;
};

}  // namespace

std::unique_ptr<InferenceBackend> make_engine_backend(std::unique_ptr<InferenceEngine> engine) {
  return std::make_unique<EngineBackend>(std::move(engine));
}

}  // namespace orcd
