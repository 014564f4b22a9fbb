// A host program that initialises MPI itself (as frameworks do) and then makes strata's
// communicator: the bf16 / fp16 reductions still work (their MPI ops exist), and the program's
// own MPI_Finalize at the end is not disturbed. Run under mpirun with 2 ranks.
#include <mpi.h>

#include <cstdio>
#include <vector>

#include "comm/communicator.h"
#include "kernels/reference/half.h"

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  int failed = 0;
  {
    auto c = strata::comm::create_mpi();
    if (!c.is_ok()) {
      std::fprintf(stderr, "create_mpi: %s\n", c.status().to_string().c_str());
      failed = 1;
    } else {
      const int n = c.value()->size(), r = c.value()->rank();
      for (auto e : {strata::comm::Elem::kBF16, strata::comm::Elem::kF16}) {
        std::vector<uint16_t> v(1000);
        for (auto& x : v)
          x = e == strata::comm::Elem::kBF16 ? strata::reference::float_to_bf16(static_cast<float>(r + 1))
                                             : strata::reference::float_to_fp16(static_cast<float>(r + 1));
        auto s = c.value()->all_reduce_sync(v.data(), v.data(), v.size(), e, strata::comm::ReduceOp::kSum);
        const float want = static_cast<float>(n * (n + 1) / 2);
        for (uint16_t x : v) {
          const float got = e == strata::comm::Elem::kBF16 ? strata::reference::bf16_to_float(x)
                                                           : strata::reference::fp16_to_float(x);
          if (!s.is_ok() || got != want) {
            std::fprintf(stderr, "rank %d: %s sum %g, want %g (%s)\n", r, strata::comm::elem_name(e), got, want,
                         s.to_string().c_str());
            failed = 1;
            break;
          }
        }
      }
    }
  }
  MPI_Finalize();
  std::printf("mpi_host_init_test: %s\n", failed ? "FAILED" : "passed");
  return failed;
}
