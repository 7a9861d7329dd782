// The real GpuAccess: the CUDA runtime for the context and loads, NVML for processes and memory.
#include <cuda_runtime_api.h>
#include <fmt/format.h>

#include "engine/device.h"
#include "engine/engine.h"
#include "server/worker.h"

namespace orcd {

namespace {

class CudaGpu final : public GpuAccess {
 public:
  std::optional<std::string> open(int device) override {
    device_ = device;
    if (!probed_) {
      const GpuInventory inv = probe_gpus();
      probed_ = true;
      if (inv.devices.empty())
        return fmt::format("NO_GPU: no usable CUDA device ({}). worker-orcd is VRAM-only by policy and never runs on the CPU; "
                           "run it on a machine with an NVIDIA GPU and driver.", inv.error);
      if (device >= static_cast<int>(inv.devices.size()))
        return fmt::format("NO_GPU: --gpu-device {} does not exist; this machine has {} device(s).", device, inv.devices.size());
      const GpuDevice& d = inv.devices[device];
      name_ = fmt::format("{} (sm_{}{})", d.name, d.sm_major, d.sm_minor);
    }
    if (cudaSetDevice(device) != cudaSuccess || cudaFree(nullptr) != cudaSuccess)
      return fmt::format("POOL_UNAVAILABLE: cannot create a CUDA context on GPU {} ({}). Try: close other programs that use this GPU.", device,
                         cudaGetErrorName(cudaGetLastError()));
    if (!nvml_tried_) {
      nvml_tried_ = true;
      char pci[32] = {0};
      std::string why;
      if (cudaDeviceGetPCIBusId(pci, sizeof pci, device) == cudaSuccess) nvml_ = open_nvml(pci, &why);
    }
    return std::nullopt;
  }
  std::string name() const override { return name_; }
  std::optional<Memory> memory() override {
    if (nvml_)
      if (auto m = nvml_->memory()) return Memory{m->first, m->second};
    size_t f = 0, t = 0;
    cudaSetDevice(device_);
    if (cudaMemGetInfo(&f, &t) != cudaSuccess) return std::nullopt;
    return Memory{f, t};
  }
  std::shared_ptr<GpuProcessLister> processes() override { return nvml_; }
  std::shared_ptr<InferenceBackend> load(const std::string& path, const EngineOptions& opt) override {
    return make_engine_backend(InferenceEngine::load(path, opt));
  }
  void release_context() override {
    cudaSetDevice(device_);
    cudaDeviceReset();  // every allocation is already freed; this gives back the context itself
  }

 private:
  int device_ = 0;
  bool probed_ = false, nvml_tried_ = false;
  std::string name_;
  std::shared_ptr<GpuProcessLister> nvml_;
};

}  // namespace

std::unique_ptr<GpuAccess> make_cuda_gpu() { return std::make_unique<CudaGpu>(); }

}  // namespace orcd
