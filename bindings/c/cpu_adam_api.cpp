// C API: the standalone CPU Adam (wraps strata::kernels::CpuAdam).
#include <memory>
#include <string>
#include <vector>

#include "api_guard.h"
#include "cpu_args.h"
#include "kernels/cpu/adam.h"
#include "strata.h"

struct strata_cpu_adam {
  std::unique_ptr<strata::kernels::CpuAdam> impl;
};

namespace strata::capi {
namespace {

Status convert_tensors(const strata_adam_tensor_t* tensors, size_t n, std::vector<kernels::AdamTensor>* out) {
  out->resize(n);
  for (size_t i = 0; i < n; ++i) {
    const strata_adam_tensor_t& t = tensors[i];
    const std::string who = "tensors[" + std::to_string(i) + "]";
    if (t.reserved[0] != nullptr || t.reserved[1] != nullptr) return invalid_argument(who + ".reserved must be NULL");
    kernels::AdamTensor& k = (*out)[i];
    k.params = t.params;
    k.exp_avg = t.exp_avg;
    k.exp_avg_sq = t.exp_avg_sq;
    k.grads = t.grads;
    STRATA_ASSIGN_OR_RETURN(k.grad_dtype, to_dtype(t.grad_dtype, who + ".grad_dtype"));
    k.params_out = t.params_out;
    if (t.params_out != nullptr) {
      STRATA_ASSIGN_OR_RETURN(k.out_dtype, to_dtype(t.out_dtype, who + ".out_dtype"));
    }
    k.count = t.count;
  }
  return Status::ok();
}

}  // namespace
}  // namespace strata::capi

using strata::Status;
using strata::capi::guard;
using strata::capi::null_arg;

extern "C" {

STRATA_API strata_status_t strata_cpu_adam_create(const strata_cpu_adam_config_t* config, strata_cpu_adam_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    if (config == nullptr) return null_arg("config");
    STRATA_RETURN_IF_ERROR(strata::capi::check_struct("config", config->struct_size, sizeof(*config), config->reserved,
                                                      sizeof(config->reserved), "STRATA_CPU_ADAM_CONFIG_INIT"));
    strata::kernels::CpuAdamOptions o;
    const int mode = strata::capi::raw_enum(config->mode);
    if (mode != STRATA_ADAM && mode != STRATA_ADAMW)
      return strata::invalid_argument("config.mode = " + std::to_string(mode) +
                                      " is not a strata_adam_mode_t (STRATA_ADAM = 0, STRATA_ADAMW = 1)");
    o.mode = static_cast<strata::kernels::AdamMode>(mode);
    STRATA_RETURN_IF_ERROR(strata::capi::read_isa(config->isa, &o.isa));
    o.bias_correction = config->bias_correction != 0;
    o.num_threads = config->num_threads;
    STRATA_ASSIGN_OR_RETURN(auto impl, strata::kernels::CpuAdam::create(o));
    auto handle = std::make_unique<strata_cpu_adam>();
    handle->impl = std::move(impl);
    *out = handle.release();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_adam_destroy(strata_cpu_adam_t* adam) {
  return guard(__func__, [&]() -> Status {
    delete adam;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_adam_step(strata_cpu_adam_t* adam, const strata_adam_step_args_t* args,
                                                const strata_adam_tensor_t* tensors, size_t num_tensors) {
  return guard(__func__, [&]() -> Status {
    if (adam == nullptr) return null_arg("adam");
    if (args == nullptr) return null_arg("args");
    if (tensors == nullptr) return null_arg("tensors");
    if (num_tensors == 0) return strata::invalid_argument("num_tensors is 0");
    STRATA_RETURN_IF_ERROR(strata::capi::check_struct("args", args->struct_size, sizeof(*args), args->reserved,
                                                      sizeof(args->reserved), "STRATA_ADAM_STEP_ARGS_INIT"));
    std::vector<strata::kernels::AdamTensor> ts;
    STRATA_RETURN_IF_ERROR(strata::capi::convert_tensors(tensors, num_tensors, &ts));
    strata::kernels::AdamHyper h;
    h.lr = args->lr;
    h.beta1 = args->beta1;
    h.beta2 = args->beta2;
    h.eps = args->eps;
    h.weight_decay = args->weight_decay;
    h.grad_scale = args->grad_scale;
    return adam->impl->step(h, ts);
  });
}

STRATA_API strata_status_t strata_cpu_adam_grad_norm(strata_cpu_adam_t* adam, const void* const* grads,
                                                     const strata_dtype_t* dtypes, const size_t* counts,
                                                     size_t num_grads, double* norm, int* all_finite) {
  return guard(__func__, [&]() -> Status {
    if (adam == nullptr) return null_arg("adam");
    if (norm == nullptr) return null_arg("norm");
    if (all_finite == nullptr) return null_arg("all_finite");
    STRATA_ASSIGN_OR_RETURN(auto views, strata::capi::grad_views(grads, dtypes, counts, num_grads));
    STRATA_ASSIGN_OR_RETURN(strata::kernels::NormResult r, adam->impl->grad_norm(views));
    *norm = r.l2();
    *all_finite = r.finite ? 1 : 0;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_adam_get_step(const strata_cpu_adam_t* adam, int64_t* step) {
  return guard(__func__, [&]() -> Status {
    if (adam == nullptr) return null_arg("adam");
    if (step == nullptr) return null_arg("step");
    *step = adam->impl->step_count();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_adam_set_step(strata_cpu_adam_t* adam, int64_t step) {
  return guard(__func__, [&]() -> Status {
    if (adam == nullptr) return null_arg("adam");
    return adam->impl->set_step_count(step);
  });
}

STRATA_API strata_status_t strata_cpu_adam_get_isa(const strata_cpu_adam_t* adam, const char** isa) {
  return guard(__func__, [&]() -> Status {
    if (adam == nullptr) return null_arg("adam");
    if (isa == nullptr) return null_arg("isa");
    *isa = strata::kernels::isa_name(adam->impl->options().isa).data();
    return Status::ok();
  });
}

}  // extern "C"
