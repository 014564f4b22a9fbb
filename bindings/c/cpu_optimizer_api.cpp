// C API: the standalone CPU optimizer of any type (wraps strata::optim::CpuOptimizer).
#include <memory>
#include <string>
#include <vector>

#include "api_guard.h"
#include "cpu_args.h"
#include "src/optim/cpu_optimizer.h"
#include "strata.h"

struct strata_cpu_optimizer {
  std::unique_ptr<strata::optim::CpuOptimizer> impl;
  std::vector<std::string> state;  // names handed out by get_state
};

using strata::Status;
using strata::capi::guard;
using strata::capi::null_arg;

extern "C" {

STRATA_API strata_status_t strata_cpu_optimizer_create(const strata_cpu_optimizer_config_t* config,
                                                       strata_cpu_optimizer_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    if (config == nullptr) return null_arg("config");
    STRATA_RETURN_IF_ERROR(strata::capi::check_struct("config", config->struct_size, sizeof(*config), config->reserved,
                                                      sizeof(config->reserved), "STRATA_CPU_OPTIMIZER_CONFIG_INIT"));
    strata::optim::CpuOptimizerOptions o;
    if (config->type != nullptr) o.type = config->type;
    STRATA_RETURN_IF_ERROR(strata::capi::read_isa(config->isa, &o.isa));
    o.bias_correction = config->bias_correction != 0;
    o.num_threads = config->num_threads;
    auto made = strata::optim::CpuOptimizer::create(o);
    if (!made.is_ok()) return std::move(made).status().annotate("config.type");
    auto handle = std::make_unique<strata_cpu_optimizer>();
    handle->impl = std::move(made).value();
    handle->state = handle->impl->state_names();
    *out = handle.release();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_destroy(strata_cpu_optimizer_t* opt) {
  return guard(__func__, [&]() -> Status {
    delete opt;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_step(strata_cpu_optimizer_t* opt,
                                                     const strata_optimizer_step_args_t* args,
                                                     const strata_optimizer_tensor_t* tensors, size_t num_tensors) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (args == nullptr) return null_arg("args");
    if (tensors == nullptr) return null_arg("tensors");
    if (num_tensors == 0) return strata::invalid_argument("num_tensors is 0");
    STRATA_RETURN_IF_ERROR(strata::capi::check_struct("args", args->struct_size, sizeof(*args), args->reserved,
                                                      sizeof(args->reserved), "STRATA_OPTIMIZER_STEP_ARGS_INIT"));
    std::vector<strata::optim::Tensor> ts(num_tensors);
    for (size_t i = 0; i < num_tensors; ++i) {
      const strata_optimizer_tensor_t& t = tensors[i];
      const std::string who = "tensors[" + std::to_string(i) + "]";
      if (t.reserved[0] != nullptr || t.reserved[1] != nullptr)
        return strata::invalid_argument(who + ".reserved must be NULL");
      strata::optim::Tensor& k = ts[i];
      k.array[0] = t.params;
      k.array[1] = t.state[0];
      k.array[2] = t.state[1];
      k.grads = t.grads;
      STRATA_ASSIGN_OR_RETURN(k.grad_dtype, strata::capi::to_dtype(t.grad_dtype, who + ".grad_dtype"));
      k.params_out = t.params_out;
      if (t.params_out != nullptr) {
        STRATA_ASSIGN_OR_RETURN(k.out_dtype, strata::capi::to_dtype(t.out_dtype, who + ".out_dtype"));
      }
      k.count = t.count;
    }
    strata::optim::StepArgs a;
    a.lr = args->lr;
    a.beta1 = args->beta1;
    a.beta2 = args->beta2;
    a.eps = args->eps;
    a.weight_decay = args->weight_decay;
    a.grad_scale = args->grad_scale;
    return opt->impl->step(a, ts);
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_grad_norm(strata_cpu_optimizer_t* opt, const void* const* grads,
                                                          const strata_dtype_t* dtypes, const size_t* counts,
                                                          size_t num_grads, double* norm, int* all_finite) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (norm == nullptr) return null_arg("norm");
    if (all_finite == nullptr) return null_arg("all_finite");
    STRATA_ASSIGN_OR_RETURN(auto views, strata::capi::grad_views(grads, dtypes, counts, num_grads));
    STRATA_ASSIGN_OR_RETURN(strata::kernels::NormResult r, opt->impl->grad_norm(views));
    *norm = r.l2();
    *all_finite = r.finite ? 1 : 0;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_get_step(const strata_cpu_optimizer_t* opt, int64_t* step) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (step == nullptr) return null_arg("step");
    *step = opt->impl->step_count();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_set_step(strata_cpu_optimizer_t* opt, int64_t step) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    return opt->impl->set_step_count(step);
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_get_type(const strata_cpu_optimizer_t* opt, const char** type) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (type == nullptr) return null_arg("type");
    *type = opt->impl->type().data();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_get_state(const strata_cpu_optimizer_t* opt, const char** names,
                                                          size_t max_names, size_t* count) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (count == nullptr) return null_arg("count");
    *count = opt->state.size();
    if (names != nullptr)
      for (size_t i = 0; i < opt->state.size() && i < max_names; ++i) names[i] = opt->state[i].c_str();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_cpu_optimizer_get_isa(const strata_cpu_optimizer_t* opt, const char** isa) {
  return guard(__func__, [&]() -> Status {
    if (opt == nullptr) return null_arg("opt");
    if (isa == nullptr) return null_arg("isa");
    *isa = strata::kernels::isa_name(opt->impl->isa()).data();
    return Status::ok();
  });
}

}  // extern "C"
