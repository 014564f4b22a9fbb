// Adagrad (DeepSpeed's CPU Adagrad; keys lr, eps, weight_decay): master and the sum of squares.
#include <vector>

#include "kernels/cpu/adagrad.h"
#include "kernels/cpu/opt_tensor.h"
#include "src/optim/optimizer.h"
#if defined(STRATA_HAVE_CUDA)
#include "kernels/cuda/optimizers_cuda.h"
#endif

namespace strata::optim {
namespace {

constexpr const char* kArrays[] = {"master", "sum"};
constexpr const char* kKeys[] = {"lr", "eps", "weight_decay"};

kernels::OptTensor one_state(const Tensor& t) {
  return kernels::OptTensor{t.array[0], t.array[1], t.grads, t.grad_dtype, t.params_out, t.out_dtype, t.count};
}

class Adagrad final : public Optimizer {
 public:
  explicit Adagrad(const Hyper& h) : Optimizer(h) {}
  std::string_view type() const override { return "Adagrad"; }
  std::span<const char* const> arrays() const override { return kArrays; }

  StatusOr<StepCoeffs> coeffs(int64_t, double lr, float grad_scale) const override {
    const kernels::AdagradHyper h{static_cast<float>(lr), static_cast<float>(hyper_.eps),
                                  static_cast<float>(hyper_.weight_decay), grad_scale};
    STRATA_RETURN_IF_ERROR(kernels::validate_adagrad_hyper(h));
    return pack(kernels::make_adagrad_coeffs(h));
  }

  bool update_host(const kernels::KernelTable& k, const StepCoeffs& c, std::span<const Tensor> t) const override {
    std::vector<kernels::OptTensor> ts;
    for (const Tensor& x : t) ts.push_back(one_state(x));
    return kernels::adagrad_update(k, unpack<kernels::AdagradCoeffs>(c), ts);
  }

  Status update_cuda(const StepCoeffs& c, const Tensor& t, void* stream) const override {
#if defined(STRATA_HAVE_CUDA)
    return kernels::cuda::adagrad_update(unpack<kernels::AdagradCoeffs>(c), one_state(t),
                                         static_cast<cudaStream_t>(stream));
#else
    (void)c, (void)t, (void)stream;
    return unsupported("GPU Adagrad in a build without CUDA");
#endif
  }

  void stream_limit(const kernels::KernelTable& k, std::span<const Tensor> t) const override {
    std::vector<kernels::OptTensor> ts;
    for (const Tensor& x : t) ts.push_back(one_state(x));
    kernels::stream_mix1(k, ts);
  }
};

std::unique_ptr<Optimizer> make_adagrad(const Hyper& h) { return std::make_unique<Adagrad>(h); }

Hyper adagrad_defaults() {  // DeepSpeedCPUAdagrad's defaults
  Hyper h;
  h.lr = 1e-2;
  h.eps = 1e-10;
  h.weight_decay = 0.0;
  return h;
}

}  // namespace

extern const Registration kAdagradRegistration = {"Adagrad", kKeys, adagrad_defaults(), make_adagrad};

}  // namespace strata::optim
