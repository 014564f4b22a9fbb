// Asking the CUDA runtime whether a usable GPU is here. Without a driver or a device the answer is
// 0 devices, not an error; strata then runs on the host-emulated device.
#pragma once

#include <string>

#include "src/common/status.h"

namespace strata::kernels::cuda {

// Number of usable CUDA devices: 0 when the driver is missing or too old, or there is no GPU.
// Other runtime errors are returned as kCuda.
StatusOr<int> device_count();

// "NVIDIA H100 80GB HBM3 (sm_90, 79.1 GiB)" for device `index`.
StatusOr<std::string> device_description(int index);

}  // namespace strata::kernels::cuda
