// CPU Adam: argument checks, per-step coefficients, the parallel driver and the CpuAdam object.
#include "kernels/cpu/adam.h"

#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/info.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "kernels/cpu/opt_tensor.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/work_split.h"

namespace strata::kernels {
namespace {

Status bad_hyper(const char* field, float value, const char* rule) {
  return invalid_argument(std::string("Adam hyper-parameter ") + field + " = " + fmt_float(value) + ": must be " +
                          rule);
}

template <class F>
void parallel_items(const std::vector<WorkItem>& items, F&& f) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, items.size()), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i != r.end(); ++i) f(items[i]);
  });
}

std::vector<WorkItem> items_of(std::span<const AdamTensor> tensors) {
  std::vector<size_t> counts(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) counts[i] = tensors[i].count;
  return split_work(counts);
}

}  // namespace

Status validate_adam_hyper(const AdamHyper& h) {
  // Written so that NaN fails every check.
  if (!(h.lr >= 0.0f && std::isfinite(h.lr))) return bad_hyper("lr", h.lr, "finite and >= 0");
  if (!(h.beta1 >= 0.0f && h.beta1 < 1.0f)) return bad_hyper("beta1", h.beta1, "in [0, 1)");
  if (!(h.beta2 >= 0.0f && h.beta2 < 1.0f)) return bad_hyper("beta2", h.beta2, "in [0, 1)");
  if (!(h.eps > 0.0f && std::isfinite(h.eps))) return bad_hyper("eps", h.eps, "finite and > 0");
  if (!(h.weight_decay >= 0.0f && std::isfinite(h.weight_decay)))
    return bad_hyper("weight_decay", h.weight_decay, "finite and >= 0");
  if (!(h.grad_scale > 0.0f && std::isfinite(h.grad_scale)))
    return bad_hyper("grad_scale", h.grad_scale, "finite and > 0");
  return Status::ok();
}

Status validate_adam_tensors(std::span<const AdamTensor> tensors) {
  if (tensors.empty()) return invalid_argument("Adam step: no tensors given");
  std::vector<BufferField> fields;
  fields.reserve(tensors.size() * 5);
  for (size_t i = 0; i < tensors.size(); ++i) {
    const AdamTensor& t = tensors[i];
    STRATA_RETURN_IF_ERROR(check_tensor_header(i, t.count, t.grad_dtype, t.params_out, t.out_dtype));
    fields.push_back({t.params, "params", 4, t.count, i, false});
    fields.push_back({t.exp_avg, "exp_avg", 4, t.count, i, false});
    fields.push_back({t.exp_avg_sq, "exp_avg_sq", 4, t.count, i, false});
    fields.push_back({t.grads, "grads", dtype_size(t.grad_dtype), t.count, i, false});
    fields.push_back({t.params_out, "params_out", 2, t.count, i, true});
  }
  return check_buffers(std::move(fields));
}

AdamCoeffs make_adam_coeffs(AdamMode mode, bool bias_correction, int64_t step, const AdamHyper& h) {
  const double t = static_cast<double>(step);
  const double bc1 = bias_correction ? 1.0 - std::pow(static_cast<double>(h.beta1), t) : 1.0;
  const double bc2 = bias_correction ? 1.0 - std::pow(static_cast<double>(h.beta2), t) : 1.0;
  AdamCoeffs c;
  c.mode = mode;
  c.beta1 = h.beta1;
  c.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  c.beta2 = h.beta2;
  c.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  c.eps = h.eps;
  c.step_size = static_cast<float>(h.lr / bc1);
  c.inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  c.weight_decay = mode == AdamMode::kAdam ? h.weight_decay : 0.0f;
  c.decay = mode == AdamMode::kAdamW ? static_cast<float>(1.0 - static_cast<double>(h.lr) * h.weight_decay) : 1.0f;
  c.grad_scale = h.grad_scale;
  return c;
}

bool adam_update(const KernelTable& k, const AdamCoeffs& c, std::span<const AdamTensor> tensors) {
  std::atomic<bool> finite{true};
  parallel_items(items_of(tensors), [&](const WorkItem& w) {
    if (!k.adam(c, tensors[w.tensor], w.begin, w.end)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

void stream_mix(const KernelTable& k, std::span<const AdamTensor> tensors) {
  parallel_items(items_of(tensors), [&](const WorkItem& w) { k.stream_mix(tensors[w.tensor], w.begin, w.end); });
}

CpuAdam::CpuAdam(const CpuAdamOptions& options, const KernelTable* kernels)
    : options_(options),
      kernels_(kernels),
      arena_(options.num_threads > 0 ? options.num_threads : tbb::info::default_concurrency()) {}

StatusOr<std::unique_ptr<CpuAdam>> CpuAdam::create(const CpuAdamOptions& options) {
  if (options.mode != AdamMode::kAdam && options.mode != AdamMode::kAdamW)
    return invalid_argument("Adam mode must be ADAM (0) or ADAMW (1), not " +
                            std::to_string(static_cast<int>(options.mode)));
  if (options.num_threads < 0)
    return invalid_argument("num_threads = " + std::to_string(options.num_threads) + ": must be >= 0 (0 = all cores)");
  STRATA_ASSIGN_OR_RETURN(const KernelTable* kernels, kernel_table(options.isa));
  return std::unique_ptr<CpuAdam>(new CpuAdam(options, kernels));
}

Status CpuAdam::step(const AdamHyper& h, std::span<const AdamTensor> tensors) {
  STRATA_RETURN_IF_ERROR(validate_adam_hyper(h));
  STRATA_RETURN_IF_ERROR(validate_adam_tensors(tensors));
  const AdamCoeffs c = make_adam_coeffs(options_.mode, options_.bias_correction, step_ + 1, h);
  arena_execute(arena_, [&] { (void)adam_update(*kernels_, c, tensors); });
  ++step_;
  return Status::ok();
}

StatusOr<NormResult> CpuAdam::grad_norm(std::span<const TensorView> grads) {
  STRATA_RETURN_IF_ERROR(validate_views(grads));
  NormResult r;
  arena_execute(arena_, [&] { r = multi_tensor_sumsq(*kernels_, grads); });
  return r;
}

Status CpuAdam::set_step_count(int64_t step) {
  if (step < 0) return invalid_argument("step count " + std::to_string(step) + ": must be >= 0");
  step_ = step;
  return Status::ok();
}

}  // namespace strata::kernels
