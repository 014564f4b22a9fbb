// DeviceOps of the host-emulated device: the CPU kernels, run in stream order by launch_host.
#include "src/engine/device_ops.h"

#include <cstring>
#include <limits>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/isa.h"

namespace strata::engine {
namespace {

class HostDeviceOps final : public DeviceOps {
 public:
  explicit HostDeviceOps(const kernels::KernelTable* k) : k_(k) {}
  Status accumulate(offload::Stream& s, float* acc, const kernels::TensorView& grad, float scale) override {
    const kernels::KernelTable* k = k_;
    return s.launch_host([k, acc, grad, scale] {
      kernels::accumulate(*k, acc, grad, scale);
      return Status::ok();
    });
  }
  Status zero(offload::Stream& s, void* p, size_t bytes) override {
    return s.launch_host([p, bytes] {
      std::memset(p, 0, bytes);
      return Status::ok();
    });
  }
  Status sumsq(offload::Stream& s, const kernels::TensorView& v, void*, double* host_out) override {
    const kernels::KernelTable* k = k_;
    return s.launch_host([k, v, host_out] {
      const kernels::TensorView views[1] = {v};
      const kernels::NormResult r = kernels::multi_tensor_sumsq(*k, views);
      *host_out = r.finite ? r.sumsq : std::numeric_limits<double>::infinity();
      return Status::ok();
    });
  }
  Status update(offload::Stream& s, const optim::Optimizer& opt, const optim::StepCoeffs& c,
                const optim::Tensor& t) override {
    const kernels::KernelTable* k = k_;
    return s.launch_host([k, &opt, c, t] {
      (void)opt.update_host(*k, c, {&t, 1});
      return Status::ok();
    });
  }

 private:
  const kernels::KernelTable* k_;
};

}  // namespace

StatusOr<std::unique_ptr<DeviceOps>> make_device_ops(offload::Device& device) {
  if (device.is_cuda()) {
#if defined(STRATA_HAVE_CUDA)
    return make_cuda_device_ops();
#else
    return unsupported("a CUDA device in a build without CUDA");
#endif
  }
  STRATA_ASSIGN_OR_RETURN(const kernels::KernelTable* k, kernels::kernel_table(kernels::best_isa()));
  return std::unique_ptr<DeviceOps>(new HostDeviceOps(k));
}

}  // namespace strata::engine
