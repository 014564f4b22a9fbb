// Check macros for the CUDA runtime and NCCL: on failure they return a Status (kCuda / kNccl) from
// the enclosing function naming the call, the error's name and text, and file:line. Include only
// from targets that link CUDA::cudart (and strata::nccl for the NCCL macro).
#pragma once

#include <cuda_runtime_api.h>

#include <string>

#include "src/common/status.h"

namespace strata {

inline Status cuda_status(cudaError_t err, const char* call, const char* file, int line) {
  // Clear the (non-sticky) error so the next unrelated call does not report it again.
  (void)cudaGetLastError();
  return Status(StatusCode::kCuda, std::string(call) + " failed: " + cudaGetErrorName(err) + ": " +
                                       cudaGetErrorString(err) + " at " + file + ":" + std::to_string(line));
}

}  // namespace strata

#define STRATA_CUDA_CHECK(call)                                                                                     \
  do {                                                                                                              \
    const cudaError_t strata_cuda_err_ = (call);                                                                    \
    if (strata_cuda_err_ != cudaSuccess) return ::strata::cuda_status(strata_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#if defined(STRATA_HAVE_NCCL)
#include <nccl.h>

namespace strata {
inline Status nccl_status(ncclResult_t res, const char* call, const char* file, int line) {
  return Status(StatusCode::kNccl, std::string(call) + " failed: " + ncclGetErrorString(res) + " (ncclResult " +
                                       std::to_string(static_cast<int>(res)) + ") at " + file + ":" +
                                       std::to_string(line));
}
}  // namespace strata

#define STRATA_NCCL_CHECK(call)                                                                                     \
  do {                                                                                                              \
    const ncclResult_t strata_nccl_res_ = (call);                                                                   \
    if (strata_nccl_res_ != ncclSuccess) return ::strata::nccl_status(strata_nccl_res_, #call, __FILE__, __LINE__); \
  } while (0)
#endif
