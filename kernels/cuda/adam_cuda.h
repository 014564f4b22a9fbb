// GPU Adam / AdamW: the same update as the CPU kernels (kernels/cpu/simd_body.inc), for when the
// optimizer state stays on the device. Pointers in the tensor are device pointers.
#pragma once

#include <cuda_runtime_api.h>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels::cuda {

// Enqueues one update of `t` on `stream`; returns launch errors. Asynchronous.
Status adam_update(const AdamCoeffs& c, const AdamTensor& t, cudaStream_t stream);

}  // namespace strata::kernels::cuda
