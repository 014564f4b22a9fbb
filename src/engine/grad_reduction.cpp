// GradientPath: the sums across ranks — sharded (each bucket's span as it drains) and replicated
// (each chunk's fp32 gradient, started in backward once the chunk is complete).
#include <algorithm>

#include "kernels/cpu/casts.h"
#include "src/engine/collectives.h"
#include "src/engine/gradient_path.h"

namespace strata::engine {

// Sharded: every rank drains the same buckets in the same order (the same model hands the same
// gradients, and drains never depend on timing), so this collective lines up. The span of the
// chunk from the bucket's first to its last param (the same on every rank) is summed over the
// ranks in fp32; this rank adds the part inside its shard. A chunk whose gradients came in several
// buckets (an early flush) is summed span by span, never twice. (An all-reduce rather than a
// reduce-scatter: OpenMPI's non-blocking reduce-scatter is ~8x slower here, ADR 0004.)
Status GradientPath::reduce_span_host(const Bucket& bk, ChunkGrads& c) {
  const auto [lo, hi] = span(bk);
  if (lo >= hi) return Status::ok();
  rs_full_.assign(hi - lo, 0.0f);
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = ctx_.layout->params()[pi];
    kernels::cast_to_fp32(*ctx_.k, kernels::TensorView{bk.landing.bytes() + slot.offset * 2, ctx_.dtype, slot.numel},
                          1.0f, rs_full_.data() + (slot.offset - lo));
  }
  const Clock::time_point t0 = Clock::now();
  STRATA_RETURN_IF_ERROR(
      ctx_.comm->all_reduce_sync(rs_full_.data(), rs_full_.data(), hi - lo, comm::Elem::kF32, comm::ReduceOp::kSum));
  ctx_.stats->allreduce_s += seconds_since(t0);
  ctx_.stats->bytes_allreduce += (hi - lo) * 4;
  STRATA_ASSIGN_OR_RETURN(float* acc, host_grads(static_cast<uint32_t>(bk.chunk)));
  const size_t from = std::max(lo, c.geom.shard_begin), to = std::min(hi, c.geom.shard_begin + c.geom.shard);
  for (size_t i = from; i < to; ++i) acc[i - c.geom.shard_begin] += rs_full_[i - lo];
  return Status::ok();
}

// As above, on the device: the bucket's span widened into rs_dev_, summed over the ranks in place
// (NCCL on the compute stream; MPI reads the emulated device's memory after the stream's work),
// then this rank's part added to its gradient shard.
Status GradientPath::reduce_span_device(const Bucket& bk, ChunkGrads& c) {
  const auto [lo, hi] = span(bk);
  if (lo >= hi) return Status::ok();
  float* sp = static_cast<float*>(rs_dev_);
  STRATA_RETURN_IF_ERROR(ctx_.ops->zero(*ctx_.compute, sp, (hi - lo) * 4));
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = ctx_.layout->params()[pi];
    STRATA_RETURN_IF_ERROR(ctx_.ops->accumulate(
        *ctx_.compute, sp + (slot.offset - lo),
        kernels::TensorView{static_cast<const uint8_t*>(bk.dev) + slot.offset * 2, ctx_.dtype, slot.numel}, 1.0f));
  }
  const Clock::time_point t0 = Clock::now();
  const size_t count = hi - lo;  // (a structured binding: not capturable by a lambda before clang 16)
  STRATA_RETURN_IF_ERROR(device_collective(*ctx_.dev, *ctx_.compute, [&](void* s) {
    return ctx_.comm->all_reduce(sp, sp, count, comm::Elem::kF32, comm::ReduceOp::kSum, s);
  }));
  ctx_.stats->allreduce_s += seconds_since(t0);
  ctx_.stats->bytes_allreduce += (hi - lo) * 4;
  const size_t from = std::max(lo, c.geom.shard_begin), to = std::min(hi, c.geom.shard_begin + c.geom.shard);
  if (from >= to) return Status::ok();
  return ctx_.ops->accumulate(*ctx_.compute, static_cast<float*>(c.dev) + (from - c.geom.shard_begin),
                              kernels::TensorView{sp + (from - lo), DType::kF32, to - from}, 1.0f);
}

// Replicated: every chunk's fp32 gradient summed over the ranks. A chunk whose gradients of the
// cycle are complete in backward starts its all-reduce then (progress_reduces, from add); the
// step starts the rest and waits for all. The sums are the same on every rank, so the norm, the
// overflow flag and the update agree everywhere.
Status GradientPath::start_reduce(uint32_t ci) {
  ChunkGrads& c = chunks_[ci];
  void* g = c.dev != nullptr ? c.dev : c.host.data();  // host memory on the emulated device
  // On a GPU the chunk's gradients were accumulated on the compute stream (its buckets landed).
  STRATA_ASSIGN_OR_RETURN(auto w, ctx_.comm->all_reduce(g, g, c.geom.shard, comm::Elem::kF32, comm::ReduceOp::kSum,
                                                        ctx_.compute->native_handle()));
  reduces_.emplace_back(ci, std::move(w));
  c.reduce_started = true;
  ctx_.stats->bytes_allreduce += c.geom.shard * 4;
  return Status::ok();
}

Status GradientPath::progress_reduces(bool wait) {
  for (size_t i = 0; i < reduce_ready_.size();) {
    const uint32_t ci = reduce_ready_[i];
    bool landed = true;
    for (size_t b = 0; b < buckets_.size() && landed; ++b) {
      Bucket& bk = buckets_[b];
      if (bk.chunk != static_cast<int>(ci) || bk.state == Bucket::State::kFree) continue;
      if (bk.state == Bucket::State::kInFlight && (wait || bk.done->query())) {
        STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));  // landed: accumulate, no wait
      } else {
        landed = false;
      }
    }
    // Collectives pair up by the order the ranks start them: start in the order of reduce_ready_
    // (backward's, the same on every rank), never a later chunk whose buckets landed sooner.
    if (!landed) break;
    STRATA_RETURN_IF_ERROR(start_reduce(ci));
    ++ctx_.stats->allreduce_early;
    reduce_ready_.erase(reduce_ready_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  // Finished all-reduces are final (backward starts them only in the cycle's last micro-batch).
  for (size_t i = 0; i < reduces_.size();) {
    bool done = wait;
    if (!wait) {
      STRATA_ASSIGN_OR_RETURN(done, reduces_[i].second->test());
    }
    if (!done) {
      ++i;
      continue;
    }
    STRATA_RETURN_IF_ERROR(reduces_[i].second->wait());
    final_.push_back(reduces_[i].first);
    reduces_.erase(reduces_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  return Status::ok();
}

Status GradientPath::reduce_all() {
  STRATA_RETURN_IF_ERROR(drain_all());
  STRATA_RETURN_IF_ERROR(finish_nvme());
  STRATA_RETURN_IF_ERROR(ctx_.compute->synchronize());
  if (!replicated()) return Status::ok();
  const Clock::time_point t0 = Clock::now();
  // Every bucket has landed: start what backward did not, in an order every rank shares — the
  // rest of backward's list, then the other chunks by index.
  std::vector<uint32_t> order(reduce_ready_.begin(), reduce_ready_.end());
  reduce_ready_.clear();
  std::vector<bool> listed(chunks_.size(), false);
  for (uint32_t ci = 0; ci < chunks_.size(); ++ci) listed[ci] = chunks_[ci].reduce_started;
  for (uint32_t ci : order) listed[ci] = true;
  for (uint32_t ci = 0; ci < chunks_.size(); ++ci)
    if (!listed[ci]) order.push_back(ci);
  for (uint32_t ci : order) STRATA_RETURN_IF_ERROR(start_reduce(ci));
  Status s = Status::ok();
  for (auto& r : reduces_)
    if (Status w = r.second->wait(); s.is_ok() && !w.is_ok()) s = w;
  reduces_.clear();
  for (ChunkGrads& c : chunks_) c.reduce_started = false;
  ctx_.stats->allreduce_s += seconds_since(t0);
  if (ctx_.tracer) ctx_.tracer->span(TraceLane::kEngine, "gradient all-reduce", t0, Clock::now());
  return s;
}

}  // namespace strata::engine
