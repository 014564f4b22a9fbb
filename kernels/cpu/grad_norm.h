// Global L2 norm and inf/NaN check over many gradient buffers (fp32, bf16, fp16), vectorised per
// ISA and accumulated in double. Deterministic: partial sums per fixed chunk, added in order, so
// the result does not depend on the thread count.
#pragma once

#include <cmath>
#include <span>
#include <vector>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

struct NormResult {
  double sumsq = 0.0;  // sum of squares of every element, in double
  bool finite = true;  // false when any element is inf or NaN
  double l2() const { return std::sqrt(sumsq); }
};

// Each view: valid dtype, data non-null and aligned to its element size unless count is 0.
Status validate_views(std::span<const TensorView> views);

// Runs in parallel on the calling thread's task arena. In double, squares of finite fp32 values
// cannot overflow, so `finite` is exactly "no element is inf or NaN".
NormResult multi_tensor_sumsq(const KernelTable& k, std::span<const TensorView> views);
// The partial sums multi_tensor_sumsq adds, in its order (the fixed chunks of each view in turn).
// Partials of some views taken earlier (a gradient written away once final), concatenated with
// the rest's in view order and added front to back, give multi_tensor_sumsq's result bit for bit.
std::vector<double> sumsq_partials(const KernelTable& k, std::span<const TensorView> views);

// Benchmark limit: the same chunks and threads as multi_tensor_sumsq, reading every byte once
// with the cheapest arithmetic. Returns a checksum so the reads cannot be optimised away.
double stream_read(const KernelTable& k, std::span<const TensorView> views);

// torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)); 1 if max_norm <= 0.
double clip_coefficient(double norm, double max_norm);

}  // namespace strata::kernels
