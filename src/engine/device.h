// What CUDA devices this machine has, asked of the runtime without allocating anything.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace orcd {

struct GpuDevice {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

struct GpuInventory {
  std::vector<GpuDevice> devices;
  std::string error;  // why there are none, when there are none
  int runtime_version = 0;
  int driver_version = 0;
};

GpuInventory probe_gpus();

}  // namespace orcd
