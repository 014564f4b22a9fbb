// Parallel drivers for the per-ISA cast kernels.
#include "kernels/cpu/casts.h"

#include <oneapi/tbb/blocked_range.h>

#include "kernels/cpu/parallel.h"
#include "kernels/cpu/work_split.h"

namespace strata::kernels {

void cast_to_fp32(const KernelTable& k, const TensorView& src, float scale, float* dst) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, src.count, kChunkElems),
                        [&](const tbb::blocked_range<size_t>& r) { k.to_fp32(src, scale, dst, r.begin(), r.end()); });
}

void accumulate(const KernelTable& k, float* acc, const TensorView& grad, float scale) {
  kernels::parallel_for(
      tbb::blocked_range<size_t>(0, grad.count, kChunkElems),
      [&](const tbb::blocked_range<size_t>& r) { k.accumulate(acc, grad, scale, r.begin(), r.end()); });
}

void cast_from_fp32(const KernelTable& k, const float* src, size_t n, DType dtype, void* dst) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, n, kChunkElems),
                        [&](const tbb::blocked_range<size_t>& r) { k.from_fp32(src, dtype, dst, r.begin(), r.end()); });
}

}  // namespace strata::kernels
