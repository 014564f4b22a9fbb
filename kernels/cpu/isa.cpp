// CPU feature detection (the compiler's __builtin_cpu_supports, which also checks that the OS saves
// the AVX / AVX-512 register state; CPUID for F16C) and the per-ISA kernel tables.
#include "kernels/cpu/isa.h"

#include <string>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

namespace strata::kernels {
namespace cpu {
extern const KernelTable kScalarKernels;
#if defined(__x86_64__)
extern const KernelTable kAvx2Kernels;
extern const KernelTable kAvx512Kernels;
#endif
}  // namespace cpu

#if defined(__x86_64__)
// F16C from CPUID leaf 1 (ECX bit 29): clang (14) has no "f16c" for __builtin_cpu_supports.
bool has_f16c() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  return __get_cpuid(1, &a, &b, &c, &d) != 0 && (c & (1u << 29)) != 0;
}
#endif

bool isa_supported(Isa isa) {
  switch (isa) {
    case Isa::kScalar:
      return true;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
    case Isa::kAvx512:
      return isa_supported(Isa::kAvx2) && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
#else
    case Isa::kAvx2:
    case Isa::kAvx512:
      return false;
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
    case Isa::kScalar:
      return "scalar";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kAvx512:
      return "avx512";
  }
  return "invalid";
}

StatusOr<Isa> parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::kScalar;
  if (name == "avx2") return Isa::kAvx2;
  if (name == "avx512") return Isa::kAvx512;
  if (name == "best") return best_isa();
  return invalid_argument("unknown CPU ISA '" + std::string(name) + "': expected scalar, avx2, avx512 or best");
}

StatusOr<const KernelTable*> kernel_table(Isa isa) {
  if (!isa_supported(isa)) {
    return unsupported("this CPU cannot run the " + std::string(isa_name(isa)) +
                       " kernels (best available: " + std::string(isa_name(best_isa())) + ")");
  }
  switch (isa) {
    case Isa::kScalar:
      return &cpu::kScalarKernels;
#if defined(__x86_64__)
    case Isa::kAvx2:
      return &cpu::kAvx2Kernels;
    case Isa::kAvx512:
      return &cpu::kAvx512Kernels;
#else
    default:
      break;
#endif
  }
  return internal_error("no kernel table for a supported ISA");
}

}  // namespace strata::kernels
