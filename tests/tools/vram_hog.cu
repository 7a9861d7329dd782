// Test helper: another process on the GPU. Takes `MiB` of VRAM (or all but `-N` MiB of what is
// free), prints "holding ..." and waits until killed or `seconds` pass.
#include <cuda_runtime_api.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: vram_hog MIB|-LEAVE_MIB [seconds]\n");
    return 2;
  }
  const long arg = std::atol(argv[1]);
  const int seconds = argc > 2 ? std::atoi(argv[2]) : 3600;
  size_t free_b = 0, total_b = 0;
  if (cudaMemGetInfo(&free_b, &total_b) != cudaSuccess) return 1;
  size_t want = arg >= 0 ? static_cast<size_t>(arg) << 20 : free_b - (static_cast<size_t>(-arg) << 20);
  std::vector<void*> held;
  size_t got = 0;
  while (got < want) {  // in 256 MiB pieces, so a fragmented device still fills up
    const size_t n = std::min<size_t>(256u << 20, want - got);
    void* p = nullptr;
    if (cudaMalloc(&p, n) != cudaSuccess) break;
    cudaMemset(p, 1, n);
    held.push_back(p);
    got += n;
  }
  cudaDeviceSynchronize();
  cudaMemGetInfo(&free_b, &total_b);
  std::printf("holding %zu MiB, %zu MiB free\n", got >> 20, free_b >> 20);
  std::fflush(stdout);
  sleep(seconds);
  return 0;
}
