// Parallel, vectorised casts between fp32 and bf16 / fp16 (round to nearest even), with an
// optional scale on the way to fp32. The unfused baseline of the Adam benchmark, and the casts the
// engine uses for host-side copies.
#pragma once

#include <cstddef>

#include "kernels/cpu/kernel_types.h"

namespace strata::kernels {

// dst[i] = float(src[i]) * scale for i < src.count. Parallel on the calling arena.
void cast_to_fp32(const KernelTable& k, const TensorView& src, float scale, float* dst);
// acc[i] += float(grad[i]) * scale for i < grad.count (one rounding where the ISA has FMA).
// Parallel on the calling arena.
void accumulate(const KernelTable& k, float* acc, const TensorView& grad, float scale);
// dst[i] = round(src[i]) in dtype for i < n. Parallel on the calling arena.
void cast_from_fp32(const KernelTable& k, const float* src, size_t n, DType dtype, void* dst);

}  // namespace strata::kernels
