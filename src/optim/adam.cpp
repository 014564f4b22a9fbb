// Adam and AdamW (torch.optim.Adam / AdamW; DeepSpeed's CPU Adam): master, exp_avg, exp_avg_sq.
#include <vector>

#include "kernels/cpu/adam.h"
#include "src/optim/optimizer.h"
#if defined(STRATA_HAVE_CUDA)
#include "kernels/cuda/adam_cuda.h"
#endif

namespace strata::optim {
namespace {

constexpr const char* kArrays[] = {"master", "exp_avg", "exp_avg_sq"};
constexpr const char* kKeys[] = {"lr", "betas", "eps", "weight_decay", "bias_correction", "adam_w_mode"};

kernels::AdamTensor adam_tensor(const Tensor& t) {
  return kernels::AdamTensor{t.array[0],   t.array[1],   t.array[2],  t.grads,
                             t.grad_dtype, t.params_out, t.out_dtype, t.count};
}

class Adam final : public Optimizer {
 public:
  explicit Adam(const Hyper& h) : Optimizer(h) {}
  std::string_view type() const override { return hyper_.adam_w_mode ? "AdamW" : "Adam"; }
  std::span<const char* const> arrays() const override { return kArrays; }

  StatusOr<StepCoeffs> coeffs(int64_t step, double lr, float grad_scale) const override {
    kernels::AdamHyper h;
    h.lr = static_cast<float>(lr);
    h.beta1 = static_cast<float>(hyper_.beta1);
    h.beta2 = static_cast<float>(hyper_.beta2);
    h.eps = static_cast<float>(hyper_.eps);
    h.weight_decay = static_cast<float>(hyper_.weight_decay);
    h.grad_scale = grad_scale;
    STRATA_RETURN_IF_ERROR(kernels::validate_adam_hyper(h));
    const auto mode = hyper_.adam_w_mode ? kernels::AdamMode::kAdamW : kernels::AdamMode::kAdam;
    return pack(kernels::make_adam_coeffs(mode, hyper_.bias_correction, step, h));
  }

  bool update_host(const kernels::KernelTable& k, const StepCoeffs& c, std::span<const Tensor> t) const override {
    std::vector<kernels::AdamTensor> ts;
    ts.reserve(t.size());
    for (const Tensor& x : t) ts.push_back(adam_tensor(x));
    return kernels::adam_update(k, unpack<kernels::AdamCoeffs>(c), ts);
  }

  Status update_cuda(const StepCoeffs& c, const Tensor& t, void* stream) const override {
#if defined(STRATA_HAVE_CUDA)
    return kernels::cuda::adam_update(unpack<kernels::AdamCoeffs>(c), adam_tensor(t),
                                      static_cast<cudaStream_t>(stream));
#else
    (void)c, (void)t, (void)stream;
    return unsupported("GPU Adam in a build without CUDA");
#endif
  }

  void stream_limit(const kernels::KernelTable& k, std::span<const Tensor> t) const override {
    std::vector<kernels::AdamTensor> ts;
    for (const Tensor& x : t) ts.push_back(adam_tensor(x));
    kernels::stream_mix(k, ts);
  }
};

std::unique_ptr<Optimizer> make_adam(const Hyper& h) { return std::make_unique<Adam>(h); }

Hyper adam_defaults(bool w) {
  Hyper h;
  h.adam_w_mode = w;
  return h;
}

}  // namespace

extern const Registration kAdamRegistration = {"Adam", kKeys, adam_defaults(false), make_adam};
extern const Registration kAdamWRegistration = {"AdamW", kKeys, adam_defaults(true), make_adam};

}  // namespace strata::optim
