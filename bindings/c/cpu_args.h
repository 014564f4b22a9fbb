// Arguments the two standalone CPU optimizers of the C API share (strata_cpu_adam_* and
// strata_cpu_optimizer_*): the ISA choice of their configs and the gradients of their grad_norm.
#pragma once

#include <cstddef>
#include <vector>

#include "kernels/cpu/isa.h"
#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"
#include "strata.h"

namespace strata::capi {

// config.isa: BEST leaves *isa as it is; another value must be a strata_isa_t this CPU has.
Status read_isa(const strata_isa_t& field, kernels::Isa* isa);
// grads[i] ([counts[i]] of dtypes[i]) as views; errors name the array and the index.
StatusOr<std::vector<kernels::TensorView>> grad_views(const void* const* grads, const strata_dtype_t* dtypes,
                                                      const size_t* counts, size_t num_grads);

}  // namespace strata::capi
