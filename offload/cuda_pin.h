// Page-locking host memory for CUDA (cudaHostRegister) when the build has CUDA and a device is
// usable; otherwise nothing to do. Kept apart so offload/ builds without CUDA.
#pragma once

#include <cstddef>

#include "src/common/status.h"

namespace strata::offload {

// True when this build has CUDA and the runtime sees at least one device (asked once).
bool cuda_pinning_available();
Status cuda_pin(void* p, size_t bytes);
void cuda_unpin(void* p);

}  // namespace strata::offload
