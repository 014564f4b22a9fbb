// CPU feature detection (GCC's __builtin_cpu_supports, which also checks that the OS saves the
// AVX / AVX-512 register state) and the per-ISA kernel tables.
#include "kernels/cpu/isa.h"

#include <string>

namespace strata::kernels {
namespace cpu {
extern const KernelTable kScalarKernels;
#if defined(__x86_64__)
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;
#endif
}  // namespace cpu

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return true;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("f16c");
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
#else
    case Isa::kAvx2:
    case Isa::kAvx512: return false;
#endif
  }
  return false;
}

Isa best_isa() {
  if (isa_supported(Isa::kAvx512)) return Isa::kAvx512;
  if (isa_supported(Isa::kAvx2)) return Isa::kAvx2;
  return Isa::kScalar;
}

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::kScalar: return "scalar";
    case Isa::kAvx2: return "avx2";
    case Isa::kAvx512: return "avx512";
  }
  return "invalid";
}

StatusOr<Isa> parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  if (name == "best") return best_isa();
  return invalid_argument("unknown CPU ISA '" + std::string(name) +
                          "': expected scalar, avx2, avx512 or best");
}

StatusOr<const KernelTable*> kernel_table(Isa isa) {
  if (!isa_supported(isa)) {
    return unsupported("this CPU cannot run the " + std::string(isa_name(isa)) +
                       " kernels (best available: " + std::string(isa_name(best_isa())) + ")");
  }
  switch (isa) {
    case Isa::kScalar: return &cpu::kScalarKernels;
#if defined(__x86_64__)
    case Isa::kAvx2: return &cpu::kAvx2Kernels;
    case Isa::kAvx512: return &cpu::kAvx512Kernels;
#else
    default: break;
#endif
  }
  return internal_error("no kernel table for a supported ISA");
}

}  // namespace strata::kernels
