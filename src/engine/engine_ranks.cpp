// Engine across ranks: the combinations it refuses, per-rank NVMe folders, every rank agreeing
// on the registered params and taking rank 0's initial values.
#include "src/engine/engine_impl.h"

namespace strata::engine {

Status Engine::Impl::check_ranks() {
  if (world() == 1) return Status::ok();
  const std::string who = "data-parallel training over " + std::to_string(world()) + " ranks";
  // CPU ranks: MPI with the host-emulated device (its buffers are host memory). GPU ranks: NCCL
  // on CUDA devices (MPI is not assumed CUDA-aware).
  const bool cpu_ranks = opts.comm->backend() == "mpi" && !dev->is_cuda();
  const bool gpu_ranks = opts.comm->backend() == "nccl" && dev->is_cuda();
  if (!cpu_ranks && !gpu_ranks)
    return Status(StatusCode::kUnsupported, who +
                                                ": the MPI backend trains on the host-emulated device and the NCCL "
                                                "backend on GPUs; this engine has " +
                                                dev->name() + " and the " + opts.comm->backend() + " backend");
  // Each rank keeps its own NVMe files.
  const std::string sub = "/rank" + std::to_string(rank());
  if (!cfg.optimizer_nvme_path.empty()) cfg.optimizer_nvme_path += sub;
  if (!cfg.param_nvme_path.empty()) cfg.param_nvme_path += sub;
  return Status::ok();
}

Status Engine::Impl::agree_on_params() {
  if (world() == 1) return Status::ok();
  // Every rank must register the same params: compare a digest of names and shapes.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; };
  for (const Pending& p : pending) {
    for (unsigned char ch : p.spec.name) mix(ch);
    for (int64_t d : p.spec.shape) mix(static_cast<uint64_t>(d));
  }
  const int32_t mine = static_cast<int32_t>(h & 0x7fffffff);
  int32_t lo = -mine, hi = mine;
  STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(&lo, &lo, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
  STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(&hi, &hi, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
  if (-lo != hi)
    return invalid_argument("prepare: the ranks registered different params (names or shapes differ; rank " +
                            std::to_string(rank()) + " registered " + std::to_string(pending.size()) + ")");
  // Rank 0's initial values everywhere (params strata initialises are already equal: seeded by name).
  for (Pending& p : pending) {
    double bytes = static_cast<double>(p.init.size());  // 0: strata initialises
    STRATA_RETURN_IF_ERROR(opts.comm->broadcast_sync(&bytes, 1, comm::Elem::kF64, 0));
    if (bytes == 0) continue;
    if (static_cast<double>(p.init.size()) != bytes)
      return invalid_argument("prepare: rank 0 gave '" + p.spec.name + "' " +
                              std::to_string(static_cast<size_t>(bytes)) + " bytes of initial values and rank " +
                              std::to_string(rank()) + " " + std::to_string(p.init.size()));
    STRATA_RETURN_IF_ERROR(opts.comm->broadcast_sync(p.init.data(), p.init.size() / 2, comm::Elem::kF16, 0));
  }
  return Status::ok();
}

}  // namespace strata::engine
