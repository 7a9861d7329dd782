// Other processes on our GPU, asked of NVML, which is loaded at run time (dlopen) so the worker
// has no link-time dependency on the driver's library.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace orcd {

struct GpuProcess {
  uint32_t pid = 0;
  uint64_t used_bytes = 0;  // 0 when the driver does not say (e.g. inside some VMs)
  bool graphics = false;
};

class GpuProcessLister {
 public:
  virtual ~GpuProcessLister() = default;
  // Processes with a context on our GPU other than `exclude_pid`; nullopt when unknown.
  virtual std::optional<std::vector<GpuProcess>> list(uint32_t exclude_pid) = 0;
  virtual std::optional<std::pair<uint64_t, uint64_t>> memory() = 0;  // free, total
};

// Loads libnvidia-ml.so.1 and finds the device by PCI bus id (NVML and CUDA may number devices
// differently). Returns nullptr with `why` set when NVML cannot be used.
std::unique_ptr<GpuProcessLister> open_nvml(const std::string& pci_bus_id, std::string* why);

}  // namespace orcd
