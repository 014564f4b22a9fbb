// The standalone CPU optimizer: argument checks, then the registered optimizer's kernels.
#include "src/optim/cpu_optimizer.h"

#include <oneapi/tbb/info.h>

#include "kernels/cpu/opt_tensor.h"
#include "kernels/cpu/parallel.h"

namespace strata::optim {

CpuOptimizer::CpuOptimizer(const CpuOptimizerOptions& o, const kernels::KernelTable* k, std::string type,
                           std::vector<std::string> names)
    : options_(o),
      k_(k),
      type_(std::move(type)),
      arrays_(std::move(names)),
      arena_(o.num_threads > 0 ? o.num_threads : tbb::info::default_concurrency()) {}

StatusOr<std::unique_ptr<CpuOptimizer>> CpuOptimizer::create(const CpuOptimizerOptions& o) {
  if (o.num_threads < 0)
    return invalid_argument("num_threads = " + std::to_string(o.num_threads) + ": must be >= 0 (0 = all cores)");
  STRATA_ASSIGN_OR_RETURN(const Registration* r, find(o.type));
  Hyper h = r->defaults;
  h.bias_correction = o.bias_correction;
  STRATA_ASSIGN_OR_RETURN(auto opt, make(r->type, h));
  STRATA_ASSIGN_OR_RETURN(const kernels::KernelTable* k, kernels::kernel_table(o.isa));
  std::vector<std::string> names(opt->arrays().begin(), opt->arrays().end());
  return std::unique_ptr<CpuOptimizer>(new CpuOptimizer(o, k, std::string(opt->type()), std::move(names)));
}

std::vector<std::string> CpuOptimizer::state_names() const { return {arrays_.begin() + 1, arrays_.end()}; }

Status CpuOptimizer::step(const StepArgs& a, std::span<const Tensor> tensors) {
  STRATA_ASSIGN_OR_RETURN(const Registration* r, find(type_));
  Hyper h = r->defaults;
  h.beta1 = a.beta1;
  h.beta2 = a.beta2;
  h.eps = a.eps;
  h.weight_decay = a.weight_decay;
  h.bias_correction = options_.bias_correction;
  const std::unique_ptr<Optimizer> opt = r->make(h);
  STRATA_ASSIGN_OR_RETURN(const StepCoeffs c, opt->coeffs(step_ + 1, a.lr, a.grad_scale));
  if (tensors.empty()) return invalid_argument(type_ + " step: no tensors given");
  std::vector<kernels::BufferField> fields;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const std::string who = "tensor " + std::to_string(i);
    STRATA_RETURN_IF_ERROR(kernels::check_tensor_header(i, t.count, t.grad_dtype, t.params_out, t.out_dtype));
    for (size_t a_i = arrays_.size(); a_i < static_cast<size_t>(kMaxArrays); ++a_i)
      if (t.array[a_i] != nullptr)
        return invalid_argument(who + ": state array " + std::to_string(a_i - 1) + " must be NULL: " + type_ +
                                " keeps " + std::to_string(arrays_.size() - 1));
    for (size_t a_i = 0; a_i < arrays_.size(); ++a_i)
      fields.push_back({t.array[a_i], a_i == 0 ? "params" : arrays_[a_i].c_str(), 4, t.count, i, false});
    fields.push_back({t.grads, "grads", dtype_size(t.grad_dtype), t.count, i, false});
    fields.push_back({t.params_out, "params_out", 2, t.count, i, true});
  }
  STRATA_RETURN_IF_ERROR(kernels::check_buffers(std::move(fields)));
  kernels::arena_execute(arena_, [&] { (void)opt->update_host(*k_, c, tensors); });
  ++step_;
  return Status::ok();
}

StatusOr<kernels::NormResult> CpuOptimizer::grad_norm(std::span<const kernels::TensorView> grads) {
  STRATA_RETURN_IF_ERROR(kernels::validate_views(grads));
  kernels::NormResult r;
  kernels::arena_execute(arena_, [&] { r = kernels::multi_tensor_sumsq(*k_, grads); });
  return r;
}

Status CpuOptimizer::set_step_count(int64_t step) {
  if (step < 0) return invalid_argument("step count " + std::to_string(step) + ": must be >= 0");
  step_ = step;
  return Status::ok();
}

}  // namespace strata::optim
