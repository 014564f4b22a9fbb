// The few kernels the engine runs on its device, enqueued on a device stream: on a CudaDevice the
// CUDA kernels of kernels/cuda; on the host-emulated device the CPU kernels of kernels/cpu, run by
// the stream's worker through launch_host. Pointers are device pointers. Every call is
// asynchronous: its work happens in stream order, its errors surface at the stream's synchronize().
#pragma once

#include <memory>

#include "kernels/cpu/kernel_types.h"
#include "offload/device.h"
#include "src/common/status.h"
#include "src/optim/optimizer.h"

namespace strata::engine {

class DeviceOps {
 public:
  virtual ~DeviceOps() = default;
  // acc[i] += float(grad[i]) * scale.
  virtual Status accumulate(offload::Stream& s, float* acc, const kernels::TensorView& grad, float scale) = 0;
  // bytes of zeros at p.
  virtual Status zero(offload::Stream& s, void* p, size_t bytes) = 0;
  // Sum of squares of v (in double) into *host_out, a host double valid after the stream's work.
  // `scratch` holds norm_scratch_bytes(v.count) device bytes (unused by the host-emulated device).
  virtual Status sumsq(offload::Stream& s, const kernels::TensorView& v, void* scratch, double* host_out) = 0;
  // The optimizer's update of t (every pointer a device pointer) with this step's constants.
  // `opt` must outlive the stream's work.
  virtual Status update(offload::Stream& s, const optim::Optimizer& opt, const optim::StepCoeffs& c,
                        const optim::Tensor& t) = 0;
};

// Ops for `device` (CUDA kernels for a CudaDevice, CPU kernels of the best ISA otherwise).
StatusOr<std::unique_ptr<DeviceOps>> make_device_ops(offload::Device& device);

#if defined(STRATA_HAVE_CUDA)
std::unique_ptr<DeviceOps> make_cuda_device_ops();
#endif

}  // namespace strata::engine
