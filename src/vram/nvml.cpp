#include "vram/nvml.h"

#include <dlfcn.h>

namespace orcd {

namespace {

// The few NVML types used here, as the NVML API documents them.
using nvmlReturn_t = int;
using nvmlDevice_t = void*;
constexpr nvmlReturn_t kNvmlSuccess = 0;
constexpr nvmlReturn_t kNvmlInsufficientSize = 7;
constexpr uint64_t kNvmlValueNotAvailable = ~0ull;
struct NvmlProcessInfo {  // nvmlProcessInfo_v2_t / v3 calls
  unsigned int pid;
  unsigned long long usedGpuMemory;
  unsigned int gpuInstanceId;
  unsigned int computeInstanceId;
};
struct NvmlMemory {
  unsigned long long total, free, used;
};

class NvmlLister final : public GpuProcessLister {
 public:
  ~NvmlLister() override {
    if (shutdown_) shutdown_();
    if (lib_) dlclose(lib_);
  }

  bool open(const std::string& pci, std::string* why) {
    lib_ = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib_) return fail(why, std::string("cannot load libnvidia-ml.so.1: ") + dlerror());
    init_ = reinterpret_cast<nvmlReturn_t (*)()>(dlsym(lib_, "nvmlInit_v2"));
    shutdown_fn_ = reinterpret_cast<nvmlReturn_t (*)()>(dlsym(lib_, "nvmlShutdown"));
    by_pci_ = reinterpret_cast<nvmlReturn_t (*)(const char*, nvmlDevice_t*)>(dlsym(lib_, "nvmlDeviceGetHandleByPciBusId_v2"));
    compute_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, NvmlProcessInfo*)>(dlsym(lib_, "nvmlDeviceGetComputeRunningProcesses_v3"));
    graphics_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, unsigned int*, NvmlProcessInfo*)>(dlsym(lib_, "nvmlDeviceGetGraphicsRunningProcesses_v3"));
    mem_ = reinterpret_cast<nvmlReturn_t (*)(nvmlDevice_t, NvmlMemory*)>(dlsym(lib_, "nvmlDeviceGetMemoryInfo"));
    err_ = reinterpret_cast<const char* (*)(nvmlReturn_t)>(dlsym(lib_, "nvmlErrorString"));
    if (!init_ || !shutdown_fn_ || !by_pci_ || !compute_ || !graphics_ || !mem_ || !err_)
      return fail(why, "libnvidia-ml.so.1 lacks a needed symbol (driver too old?)");
    if (nvmlReturn_t r = init_(); r != kNvmlSuccess) return fail(why, std::string("nvmlInit failed: ") + err_(r));
    shutdown_ = shutdown_fn_;
    if (nvmlReturn_t r = by_pci_(pci.c_str(), &dev_); r != kNvmlSuccess)
      return fail(why, "NVML does not know the GPU at PCI " + pci + ": " + err_(r));
    return true;
  }

  std::optional<std::vector<GpuProcess>> list(uint32_t exclude_pid) override {
    std::vector<GpuProcess> out;
    for (bool graphics : {false, true}) {
      std::vector<NvmlProcessInfo> buf(64);
      unsigned int n = static_cast<unsigned int>(buf.size());
      auto fn = graphics ? graphics_ : compute_;
      nvmlReturn_t r = fn(dev_, &n, buf.data());
      if (r == kNvmlInsufficientSize) {
        buf.resize(n + 16);
        n = static_cast<unsigned int>(buf.size());
        r = fn(dev_, &n, buf.data());
      }
      if (r != kNvmlSuccess) return std::nullopt;
      for (unsigned int i = 0; i < n; ++i) {
        if (buf[i].pid == exclude_pid) continue;
        const uint64_t used = buf[i].usedGpuMemory == kNvmlValueNotAvailable ? 0 : buf[i].usedGpuMemory;
        bool seen = false;  // a process with both kinds of context is listed once
        for (auto& p : out)
          if (p.pid == buf[i].pid) seen = true, p.used_bytes = std::max(p.used_bytes, used);
        if (!seen) out.push_back({buf[i].pid, used, graphics});
      }
    }
    return out;
  }

  std::optional<std::pair<uint64_t, uint64_t>> memory() override {
    NvmlMemory m{};
    if (mem_(dev_, &m) != kNvmlSuccess) return std::nullopt;
    return std::make_pair(static_cast<uint64_t>(m.free), static_cast<uint64_t>(m.total));
  }

 private:
  bool fail(std::string* why, std::string msg) {
    if (why) *why = std::move(msg);
    return false;
  }
  void* lib_ = nullptr;
  nvmlDevice_t dev_ = nullptr;
  nvmlReturn_t (*init_)() = nullptr;
  nvmlReturn_t (*shutdown_fn_)() = nullptr;
  nvmlReturn_t (*shutdown_)() = nullptr;  // set once init succeeded
  nvmlReturn_t (*by_pci_)(const char*, nvmlDevice_t*) = nullptr;
  nvmlReturn_t (*compute_)(nvmlDevice_t, unsigned int*, NvmlProcessInfo*) = nullptr;
  nvmlReturn_t (*graphics_)(nvmlDevice_t, unsigned int*, NvmlProcessInfo*) = nullptr;
  nvmlReturn_t (*mem_)(nvmlDevice_t, NvmlMemory*) = nullptr;
  const char* (*err_)(nvmlReturn_t) = nullptr;
};

}  // namespace

std::unique_ptr<GpuProcessLister> open_nvml(const std::string& pci_bus_id, std::string* why) {
  auto l = std::make_unique<NvmlLister>();
  if (!l->open(pci_bus_id, why)) return nullptr;
  return l;
}

}  // namespace orcd
