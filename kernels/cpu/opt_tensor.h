// What the CPU optimizers share: checks of the tensors a caller hands in (null, alignment,
// overlap), the parallel driver over fixed work items, and the one-state streaming limit.
#pragma once

#include <cstddef>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

// One buffer of one tensor, as a caller passed it.
struct BufferField {
  const void* p;
  const char* name;   // "params", "exp_avg", ...
  size_t elem_bytes;  // its element size
  size_t count;
  size_t tensor;  // index in the caller's list
  bool optional;  // NULL allowed (params_out)
};

// Non-null (unless optional), aligned to its element size, not wrapping the address space, and
// no byte shared with any other buffer. The message names the tensor index and field.
Status check_buffers(std::vector<BufferField> fields);

// One tensor's scalars: count > 0, a valid grad dtype, a bf16 / fp16 output dtype when params_out is
// set. The message names the tensor index `i`.
Status check_tensor_header(size_t i, size_t count, DType grad_dtype, const void* params_out, DType out_dtype);

// Lion / Adagrad tensors: non-empty, valid dtypes, buffers as above. `state` names the state array.
Status validate_opt_tensors(std::span<const OptTensor> tensors, const char* state);

// Runs item(tensor, begin, end) over every tensor split into work items, in parallel on the calling
// thread's task arena; false when any call returned false.
bool for_each_item(std::span<const size_t> counts, const std::function<bool(size_t, size_t, size_t)>& item);

// Benchmark limit of a one-state optimizer (the same memory traffic as Lion or Adagrad).
void stream_mix1(const KernelTable& k, std::span<const OptTensor> tensors);

std::string fmt_float(float x);  // "%.9g"

}  // namespace strata::kernels
