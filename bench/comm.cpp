// bench/comm: the MPI backend's collectives across the ranks of `mpirun -np N`, each beside the
// limit measured in the same run on the same machine: one rank's memcpy bandwidth (ranks on one
// machine move bytes through shared memory, so a copy is the floor of every transfer). Reports
// NCCL-tests' conventions: algbw = bytes / time; busbw = algbw x 2(N-1)/N for all-reduce and
// x (N-1)/N for reduce-scatter / all-gather (the bytes each rank must send in a ring). Also the
// data-parallel step's all-reduce of Ψ fp32 gradients: its closed-form traffic per rank
// 2 x 4Ψ x (N-1)/N and its time at the measured all-reduce rate. One JSON line per size on rank 0.
//
//   mpirun -np N strata_bench_comm [--params PSI]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.h"
#include "comm/communicator.h"

namespace strata::bench {
namespace {

template <class F>
double timed(comm::Communicator& c, F&& op) {
  std::vector<double> t;
  for (int r = 0; r < 7; ++r) {
    if (!c.barrier().is_ok()) std::exit(1);
    t.push_back(seconds([&] {
      if (Status s = op(); !s.is_ok()) {
        std::fprintf(stderr, "comm bench: %s\n", s.to_string().c_str());
        std::exit(1);
      }
    }));
  }
  t.erase(t.begin());  // warm-up
  // The slowest rank's median: a collective is done when every rank is.
  double m = median(t);
  if (!c.all_reduce_sync(&m, &m, 1, comm::Elem::kF64, comm::ReduceOp::kMax).is_ok()) std::exit(1);
  return m;
}

}  // namespace
}  // namespace strata::bench

int main(int argc, char** argv) {
  using namespace strata;
  using namespace strata::bench;
  double psi = 100e6;
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::string(argv[i]) == "--params") psi = std::atof(argv[i + 1]);
  auto made = comm::create_mpi();
  if (!made.is_ok()) {
    std::fprintf(stderr, "comm bench: %s\n", made.status().to_string().c_str());
    return 1;
  }
  comm::Communicator& c = *made.value();
  const int n = c.size();
  const bool lead = c.rank() == 0;
  const double copy = lead ? memcpy_gbps(size_t{64} << 20) : 0.0;  // alone: the others wait
  if (!c.barrier().is_ok()) return 1;
  if (lead)
    std::fprintf(stderr, "comm bench: %d MPI ranks, memcpy %.1f GB/s (one rank alone)\n%-16s %10s %10s %10s %10s %9s\n",
                 n, copy, "collective", "MiB/rank", "ms", "algbw", "busbw", "vs copy");
  double allreduce_bus = 0;
  for (size_t mib : {1, 16, 64}) {
    const size_t bytes = mib << 20, count = bytes / 4;
    std::vector<float> a(count * static_cast<size_t>(n), 1.0f), b(count * static_cast<size_t>(n));
    struct Op {
      const char* name;
      double factor;
    };
    const Op ops[] = {
        {"all_reduce", 2.0 * (n - 1) / n}, {"reduce_scatter", 1.0 * (n - 1) / n}, {"all_gather", 1.0 * (n - 1) / n}};
    for (const Op& op : ops) {
      const double t = timed(c, [&]() -> Status {
        if (op.name[4] == 'r')
          return c.all_reduce_sync(a.data(), b.data(), count, comm::Elem::kF32, comm::ReduceOp::kSum);
        StatusOr<std::unique_ptr<comm::Work>> w =
            op.name[0] == 'r' ? c.reduce_scatter(a.data(), b.data(), count, comm::Elem::kF32, comm::ReduceOp::kSum)
                              : c.all_gather(a.data(), b.data(), count, comm::Elem::kF32);
        if (!w.is_ok()) return w.status();
        return w.value()->wait();
      });
      // reduce-scatter's `count` is the per-rank output; its input (and all-gather's output) is n x.
      const double moved = op.name[4] == 'r' ? bytes : static_cast<double>(bytes) * n;
      const double alg = moved / t / 1e9, bus = alg * op.factor;
      if (op.name[4] == 'r' && mib == 64) allreduce_bus = bus;
      if (lead) {
        std::printf(
            "{\"bench\": \"comm\", \"backend\": \"mpi\", \"ranks\": %d, \"collective\": \"%s\", \"bytes_per_rank\": "
            "%zu, "
            "\"seconds\": %.6f, \"algbw_gbps\": %.3f, \"busbw_gbps\": %.3f, \"memcpy_gbps\": %.2f, \"vs_memcpy\": "
            "%.3f, "
            "\"where\": %s, \"git\": \"%s\"}\n",
            n, op.name, bytes, t, alg, bus, copy, bus / copy, where_json("").c_str(), STRATA_GIT_SHA);
        std::fprintf(stderr, "%-16s %10zu %10.2f %10.2f %10.2f %8.2fx\n", op.name, mib, t * 1e3, alg, bus, bus / copy);
      }
    }
  }
  if (lead && n > 1) {
    const double wire = 2.0 * 4.0 * psi * (n - 1) / n;
    std::fprintf(
        stderr,
        "DDP step, %.0f M params: fp32 gradients all-reduced, closed form %.1f MB sent per rank per step, %.1f ms at "
        "the 64 MiB all-reduce's bus bandwidth\n",
        psi / 1e6, wire / 1e6, wire / (allreduce_bus * 1e9) * 1e3);
    std::printf(
        "{\"bench\": \"comm_ddp_closed_form\", \"ranks\": %d, \"params\": %.0f, \"bytes_sent_per_rank\": %.0f, "
        "\"seconds_at_busbw\": %.6f}\n",
        n, psi, wire, wire / (allreduce_bus * 1e9));
  }
  return 0;
}
