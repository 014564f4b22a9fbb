// cudaHostRegister / cudaHostUnregister, or no-ops in builds without CUDA.
#include "offload/cuda_pin.h"

#if defined(STRATA_HAVE_CUDA)
#include <cuda_runtime_api.h>

#include "src/common/cuda_check.h"
#endif

namespace strata::offload {

#if defined(STRATA_HAVE_CUDA)
bool cuda_pinning_available() {
  static const bool available = [] {
    int n = 0;
    const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
    (void)cudaGetLastError();
    return ok;
  }();
  return available;
}

Status cuda_pin(void* p, size_t bytes) {
  STRATA_CUDA_CHECK(cudaHostRegister(p, bytes, cudaHostRegisterDefault));
  return Status::ok();
}

void cuda_unpin(void* p) {
  (void)cudaHostUnregister(p);
  (void)cudaGetLastError();
}
#else
bool cuda_pinning_available() { return false; }
Status cuda_pin(void*, size_t) { return unsupported("this build of strata has no CUDA"); }
void cuda_unpin(void*) {}
#endif

}  // namespace strata::offload
