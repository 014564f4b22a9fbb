// DeviceOps of a CudaDevice: the kernels of kernels/cuda on the stream's cudaStream_t.
#include <cuda_runtime_api.h>

#include "kernels/cuda/grad_kernels.h"
#include "src/common/cuda_check.h"
#include "src/engine/device_ops.h"
#include "src/engine/placement.h"

namespace strata::engine {
namespace {

cudaStream_t native(offload::Stream& s) { return static_cast<cudaStream_t>(s.native_handle()); }

class CudaDeviceOps final : public DeviceOps {
 public:
  Status accumulate(offload::Stream& s, float* acc, const kernels::TensorView& grad, float scale) override {
    return kernels::cuda::accumulate(acc, grad, scale, native(s));
  }
  Status zero(offload::Stream& s, void* p, size_t bytes) override {
    STRATA_CUDA_CHECK(cudaMemsetAsync(p, 0, bytes, native(s)));
    return Status::ok();
  }
  Status sumsq(offload::Stream& s, const kernels::TensorView& v, void* scratch, double* host_out) override {
    const std::vector<kernels::TensorView> views = {v};
    auto* ws = static_cast<double*>(scratch);
    const size_t blocks = kernels::cuda::sumsq_workspace_doubles(views);
    if ((blocks + 1) * sizeof(double) > norm_scratch_bytes(v.count))
      return internal_error("gradient norm scratch too small for " + std::to_string(v.count) + " elements");
    STRATA_RETURN_IF_ERROR(kernels::cuda::multi_tensor_sumsq(views, ws, ws + blocks, native(s)));
    STRATA_CUDA_CHECK(cudaMemcpyAsync(host_out, ws + blocks, sizeof(double), cudaMemcpyDeviceToHost, native(s)));
    return Status::ok();
  }
  Status update(offload::Stream& s, const optim::Optimizer& opt, const optim::StepCoeffs& c,
                const optim::Tensor& t) override {
    return opt.update_cuda(c, t, native(s));
  }
};

}  // namespace

std::unique_ptr<DeviceOps> make_cuda_device_ops() { return std::unique_ptr<DeviceOps>(new CudaDeviceOps()); }

}  // namespace strata::engine
