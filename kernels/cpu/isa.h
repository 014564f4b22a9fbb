// Run-time choice of the CPU kernels: which SIMD instruction sets this CPU (and OS) supports, and
// the kernel table for each. The binary is built for baseline x86-64 and uses AVX2 or AVX-512
// only where present.
#pragma once

#include <string_view>

#include "kernels/cpu/kernel_types.h"
#include "src/common/status.h"

namespace strata::kernels {

enum class Isa : int {
  kScalar = 0,  // portable C++, one element at a time
  kAvx2 = 1,    // AVX2 + FMA + F16C
  kAvx512 = 2,  // AVX-512 F/BW/VL/DQ + FMA + F16C
};

bool isa_supported(Isa isa);
// The widest supported ISA.
Isa best_isa();
std::string_view isa_name(Isa isa);
// "scalar" | "avx2" | "avx512" | "best" -> Isa; names the accepted values on error.
StatusOr<Isa> parse_isa(std::string_view name);
// The kernels of `isa`, or an kUnsupported Status when this CPU cannot run them.
StatusOr<const KernelTable*> kernel_table(Isa isa);

}  // namespace strata::kernels
