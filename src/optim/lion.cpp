// Lion (DeepSpeed's CPU Lion; keys lr, betas, weight_decay): master and one moment, exp_avg.
#include <vector>

#include "kernels/cpu/lion.h"
#include "kernels/cpu/opt_tensor.h"
#include "src/optim/optimizer.h"
#if defined(STRATA_HAVE_CUDA)
#include "kernels/cuda/optimizers_cuda.h"
#endif

namespace strata::optim {
namespace {

constexpr const char* kArrays[] = {"master", "exp_avg"};
constexpr const char* kKeys[] = {"lr", "betas", "weight_decay"};

kernels::OptTensor one_state(const Tensor& t) {
  return kernels::OptTensor{t.array[0], t.array[1], t.grads, t.grad_dtype, t.params_out, t.out_dtype, t.count};
}

class Lion final : public Optimizer {
 public:
  explicit Lion(const Hyper& h) : Optimizer(h) {}
  std::string_view type() const override { return "Lion"; }
  std::span<const char* const> arrays() const override { return kArrays; }

  StatusOr<StepCoeffs> coeffs(int64_t, double lr, float grad_scale) const override {
    const kernels::LionHyper h{static_cast<float>(lr), static_cast<float>(hyper_.beta1),
                               static_cast<float>(hyper_.beta2), static_cast<float>(hyper_.weight_decay), grad_scale};
    STRATA_RETURN_IF_ERROR(kernels::validate_lion_hyper(h));
    return pack(kernels::make_lion_coeffs(h));
  }

  bool update_host(const kernels::KernelTable& k, const StepCoeffs& c, std::span<const Tensor> t) const override {
    std::vector<kernels::OptTensor> ts;
    for (const Tensor& x : t) ts.push_back(one_state(x));
    return kernels::lion_update(k, unpack<kernels::LionCoeffs>(c), ts);
  }

  Status update_cuda(const StepCoeffs& c, const Tensor& t, void* stream) const override {
#if defined(STRATA_HAVE_CUDA)
    return kernels::cuda::lion_update(unpack<kernels::LionCoeffs>(c), one_state(t), static_cast<cudaStream_t>(stream));
#else
    (void)c, (void)t, (void)stream;
    return unsupported("GPU Lion in a build without CUDA");
#endif
  }

  void stream_limit(const kernels::KernelTable& k, std::span<const Tensor> t) const override {
    std::vector<kernels::OptTensor> ts;
    for (const Tensor& x : t) ts.push_back(one_state(x));
    kernels::stream_mix1(k, ts);
  }
};

std::unique_ptr<Optimizer> make_lion(const Hyper& h) { return std::make_unique<Lion>(h); }

Hyper lion_defaults() {  // DeepSpeedCPULion's defaults
  Hyper h;
  h.lr = 1e-3;
  h.beta1 = 0.9;
  h.beta2 = 0.999;
  h.weight_decay = 0.0;
  return h;
}

}  // namespace

extern const Registration kLionRegistration = {"Lion", kKeys, lion_defaults(), make_lion};

}  // namespace strata::optim
