// The C API's shared CPU-optimizer arguments (cpu_args.h).
#include "cpu_args.h"

#include <string>

#include "api_guard.h"

namespace strata::capi {

Status read_isa(const strata_isa_t& field, kernels::Isa* isa) {
  const int v = raw_enum(field);
  if (v < STRATA_ISA_BEST || v > STRATA_ISA_AVX512)
    return invalid_argument("config.isa = " + std::to_string(v) +
                            " is not a strata_isa_t (BEST = 0, SCALAR = 1, AVX2 = 2, AVX512 = 3)");
  if (v == STRATA_ISA_BEST) return Status::ok();
  *isa = static_cast<kernels::Isa>(v - 1);
  if (!kernels::isa_supported(*isa))
    return unsupported("config.isa: this CPU has no " + std::string(kernels::isa_name(*isa)));
  return Status::ok();
}

StatusOr<std::vector<kernels::TensorView>> grad_views(const void* const* grads, const strata_dtype_t* dtypes,
                                                      const size_t* counts, size_t num_grads) {
  if (num_grads > 0 && (grads == nullptr || dtypes == nullptr || counts == nullptr))
    return invalid_argument("grads, dtypes and counts must be non-NULL when num_grads > 0");
  std::vector<kernels::TensorView> views(num_grads);
  for (size_t i = 0; i < num_grads; ++i) {
    views[i].data = grads[i];
    views[i].count = counts[i];
    STRATA_ASSIGN_OR_RETURN(views[i].dtype, to_dtype(dtypes[i], "dtypes[" + std::to_string(i) + "]"));
  }
  return views;
}

}  // namespace strata::capi
