// CPU Adagrad: hyper-parameter checks, per-step constants and the parallel driver.
#include "kernels/cpu/adagrad.h"

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/opt_tensor.h"

namespace strata::kernels {
namespace {

Status bad(const char* field, float value, const char* rule) {
  return invalid_argument(std::string("Adagrad hyper-parameter ") + field + " = " + fmt_float(value) + ": must be " +
                          rule);
}

}  // namespace

Status validate_adagrad_hyper(const AdagradHyper& h) {
  if (!(h.lr >= 0.0f && std::isfinite(h.lr))) return bad("lr", h.lr, "finite and >= 0");
  if (!(h.eps > 0.0f && std::isfinite(h.eps))) return bad("eps", h.eps, "finite and > 0");
  if (!(h.weight_decay >= 0.0f && std::isfinite(h.weight_decay)))
    return bad("weight_decay", h.weight_decay, "finite and >= 0");
  if (!(h.grad_scale > 0.0f && std::isfinite(h.grad_scale))) return bad("grad_scale", h.grad_scale, "finite and > 0");
  return Status::ok();
}

AdagradCoeffs make_adagrad_coeffs(const AdagradHyper& h) {
  return AdagradCoeffs{h.lr, h.eps, h.weight_decay, h.grad_scale};
}

bool adagrad_update(const KernelTable& k, const AdagradCoeffs& c, std::span<const OptTensor> tensors) {
  std::vector<size_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) counts[i] = tensors[i].count;
  return for_each_item(counts, [&](size_t t, size_t b, size_t e) { return k.adagrad(c, tensors[t], b, e); });
}

}  // namespace strata::kernels
