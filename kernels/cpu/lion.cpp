// CPU Lion: hyper-parameter checks, per-step constants and the parallel driver.
#include "kernels/cpu/lion.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/opt_tensor.h"

namespace strata::kernels {
namespace {

Status bad(const char* field, float value, const char* rule) {
  return invalid_argument(std::string("Lion hyper-parameter ") + field + " = " + fmt_float(value) + ": must be " +
                          rule);
}

}  // namespace

Status validate_lion_hyper(const LionHyper& h) {
  if (!(h.lr >= 0.0f && std::isfinite(h.lr))) return bad("lr", h.lr, "finite and >= 0");
  if (!(h.beta1 >= 0.0f && h.beta1 < 1.0f)) return bad("beta1", h.beta1, "in [0, 1)");
  if (!(h.beta2 >= 0.0f && h.beta2 < 1.0f)) return bad("beta2", h.beta2, "in [0, 1)");
  if (!(h.weight_decay >= 0.0f && std::isfinite(h.weight_decay)))
    return bad("weight_decay", h.weight_decay, "finite and >= 0");
  if (!(h.grad_scale > 0.0f && std::isfinite(h.grad_scale))) return bad("grad_scale", h.grad_scale, "finite and > 0");
  return Status::ok();
}

LionCoeffs make_lion_coeffs(const LionHyper& h) {
  LionCoeffs c;
  c.beta1 = h.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  c.beta2 = h.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  c.lr = h.lr;
  c.decay = static_cast<float>(1.0 - static_cast<double>(h.lr) * h.weight_decay);
  c.grad_scale = h.grad_scale;
  return c;
}

bool lion_update(const KernelTable& k, const LionCoeffs& c, std::span<const OptTensor> tensors) {
  std::vector<size_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) counts[i] = tensors[i].count;
  return for_each_item(counts, [&](size_t t, size_t b, size_t e) { return k.lion(c, tensors[t], b, e); });
}

}  // namespace strata::kernels
