// CUDA device probing.
#include "kernels/cuda/cuda_runtime.h"

#include <cuda_runtime_api.h>

#include <cstdio>

#include "src/common/cuda_check.h"

namespace strata::kernels::cuda {

StatusOr<int> device_count() {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
    (void)cudaGetLastError();
    return 0;
  }
  if (err != cudaSuccess) return cuda_status(err, "cudaGetDeviceCount(&n)", __FILE__, __LINE__);
  return n;
}

StatusOr<std::string> device_description(int index) {
  cudaDeviceProp prop{};
  const cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) return cuda_status(err, "cudaGetDeviceProperties(&prop, index)", __FILE__, __LINE__);
  char buf[384];
  std::snprintf(buf, sizeof(buf), "%s (sm_%d%d, %.1f GiB)", prop.name, prop.major, prop.minor,
                static_cast<double>(prop.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return std::string(buf);
}

}  // namespace strata::kernels::cuda
