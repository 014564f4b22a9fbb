// GradientPath: buckets, the fp32 gradient shards, and their reduction across ranks.
#include "src/engine/gradient_path.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <utility>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/grad_norm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cpu/work_split.h"
#include "src/engine/collectives.h"

namespace strata::engine {

Status GradientPath::allocate(const Context& ctx, Reduction r, std::vector<Chunk> chunks) {
  ctx_ = ctx;
  red_ = r;
  size_t max_chunk = 0, max_nvme_shard = 0;
  bool host_grads = false, device_grads = false;
  chunks_.resize(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    ChunkGrads& c = chunks_[i];
    c.geom = chunks[i];
    max_chunk = std::max(max_chunk, c.geom.numel);
    if (c.geom.tier == Tier::kDevice) {
      STRATA_ASSIGN_OR_RETURN(c.dev, ctx_.dev->allocate(c.geom.shard * 4));
      STRATA_RETURN_IF_ERROR(ctx_.ops->zero(*ctx_.compute, c.dev, c.geom.shard * 4));
      device_grads = true;
    } else if (c.geom.tier == Tier::kNvme) {
      max_nvme_shard = std::max(max_nvme_shard, c.geom.shard);
      host_grads = true;
    } else {
      STRATA_ASSIGN_OR_RETURN(c.host, offload::AlignedBuffer::create(c.geom.shard * 4, ctx_.pin));
      std::memset(c.host.data(), 0, c.geom.shard * 4);
      host_grads = true;
    }
  }
  STRATA_RETURN_IF_ERROR(ctx_.compute->synchronize());
  buckets_.resize(static_cast<size_t>(ctx_.buckets));
  for (Bucket& bk : buckets_) {
    STRATA_ASSIGN_OR_RETURN(bk.dev, ctx_.dev->allocate(max_chunk * 2));
    STRATA_ASSIGN_OR_RETURN(bk.done, ctx_.dev->create_event());
    if (host_grads) {
      STRATA_ASSIGN_OR_RETURN(bk.landing, offload::AlignedBuffer::create(max_chunk * 2, ctx_.pin));
    }
  }
  if (max_nvme_shard > 0) {
    if (ctx_.store == nullptr) return internal_error("gradients on NVMe without a store");
    assembly_.resize(static_cast<size_t>(grad_assembly_buffers(ctx_.buckets)));
    for (Assembly& a : assembly_) {
      STRATA_ASSIGN_OR_RETURN(a.buf, offload::AlignedBuffer::create(max_nvme_shard * 4, ctx_.pin));
    }
  }
  if (sharded() && device_grads) {
    STRATA_ASSIGN_OR_RETURN(rs_dev_, ctx_.dev->allocate(max_chunk * 4));
  }
  STRATA_ASSIGN_OR_RETURN(user_ready_, ctx_.dev->create_event());
  STRATA_ASSIGN_OR_RETURN(copy_done_, ctx_.dev->create_event());
  return Status::ok();
}

Status GradientPath::free() {
  Status first;
  auto keep = [&first](Status s) {
    if (first.is_ok() && !s.is_ok()) first = std::move(s);
  };
  for (auto& r : reduces_) keep(r.second->wait());
  reduces_.clear();
  keep(quiesce());
  assembly_.clear();
  if (ctx_.dev != nullptr) {
    for (ChunkGrads& c : chunks_) keep(ctx_.dev->free(std::exchange(c.dev, nullptr)));
    for (Bucket& b : buckets_) keep(ctx_.dev->free(std::exchange(b.dev, nullptr)));
    keep(ctx_.dev->free(std::exchange(rs_dev_, nullptr)));
  }
  chunks_.clear();
  buckets_.clear();
  return first;
}

double GradientPath::ranks_in_sum() const {
  return red_ == Reduction::kNone || ctx_.comm == nullptr ? 1.0 : static_cast<double>(ctx_.comm->size());
}

const void* GradientPath::grads(uint32_t ci) const {
  const ChunkGrads& c = chunks_[ci];
  if (c.geom.tier == Tier::kNvme) return nullptr;
  return c.dev != nullptr ? c.dev : c.host.data();
}

Status GradientPath::wait_timed(offload::Event& e, double* counter) {
  if (e.query()) return e.synchronize();
  const Clock::time_point t0 = Clock::now();
  Status s = e.synchronize();
  *counter += seconds_since(t0);
  return s;
}

Status GradientPath::traced_copy(offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src,
                                 size_t bytes, offload::CopyKind kind) {
  return engine::traced_copy(ctx_.tracer, s, lane, std::move(name), dst, src, bytes, kind);
}

StatusOr<int> GradientPath::acquire(uint32_t ci) {
  for (;;) {
    // Finished flushes free their buckets without waiting — except with shards across ranks,
    // where a drain is a collective and must not depend on when a copy happened to finish.
    for (size_t b = 0; b < buckets_.size() && !sharded(); ++b)
      if (buckets_[b].state == Bucket::State::kInFlight && buckets_[b].done->query())
        STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));
    for (size_t b = 0; b < buckets_.size(); ++b) {
      Bucket& bk = buckets_[b];
      if (bk.state != Bucket::State::kFree) continue;
      bk.state = Bucket::State::kOpen;
      bk.chunk = static_cast<int>(ci);
      bk.params.clear();
      bk.opened = ++clock_;
      chunks_[ci].bucket = static_cast<int>(b);
      return static_cast<int>(b);
    }
    // None free: wait for the oldest flush, or flush the oldest open bucket early.
    int oldest_flight = -1, oldest_open = -1;
    for (size_t b = 0; b < buckets_.size(); ++b) {
      const Bucket& bk = buckets_[b];
      int& o = bk.state == Bucket::State::kInFlight ? oldest_flight : oldest_open;
      if (o < 0 || bk.opened < buckets_[static_cast<size_t>(o)].opened) o = static_cast<int>(b);
    }
    if (oldest_flight >= 0) {
      STRATA_RETURN_IF_ERROR(drain(oldest_flight));
    } else {
      ++ctx_.stats->early_flushes;
      STRATA_RETURN_IF_ERROR(flush(oldest_open));
    }
  }
}

std::pair<size_t, size_t> GradientPath::span(const Bucket& bk) const {
  size_t lo = SIZE_MAX, hi = 0;
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = ctx_.layout->params()[pi];
    lo = std::min(lo, slot.offset);
    hi = std::max(hi, slot.offset + slot.numel);
  }
  return {lo, hi};
}

Status GradientPath::flush(int b) {
  Bucket& bk = buckets_[static_cast<size_t>(b)];
  ChunkGrads& c = chunks_[static_cast<size_t>(bk.chunk)];
  c.bucket = -1;
  ++ctx_.stats->bucket_flushes;
  if (c.dev != nullptr && sharded()) {
    STRATA_RETURN_IF_ERROR(reduce_span_device(bk, c));
    STRATA_RETURN_IF_ERROR(ctx_.compute->record(*bk.done));
  } else if (c.dev != nullptr) {
    for (uint32_t pi : bk.params) {
      const ParamSlot& slot = ctx_.layout->params()[pi];
      const kernels::TensorView g{static_cast<const uint8_t*>(bk.dev) + slot.offset * 2, ctx_.dtype, slot.numel};
      STRATA_RETURN_IF_ERROR(ctx_.ops->accumulate(
          *ctx_.compute, static_cast<float*>(c.dev) + (slot.offset - c.geom.shard_begin), g, 1.0f));
    }
    STRATA_RETURN_IF_ERROR(ctx_.compute->record(*bk.done));
  } else {
    // One copy of the bucket's span, from its first to its last received element.
    const auto [lo, hi] = span(bk);
    STRATA_RETURN_IF_ERROR(ctx_.compute->record(*copy_done_));
    STRATA_RETURN_IF_ERROR(ctx_.d2h->wait(*copy_done_));
    STRATA_RETURN_IF_ERROR(traced_copy(*ctx_.d2h, TraceLane::kD2H, "d2h grads c" + std::to_string(bk.chunk),
                                       bk.landing.bytes() + lo * 2, static_cast<const uint8_t*>(bk.dev) + lo * 2,
                                       (hi - lo) * 2, offload::CopyKind::kDeviceToHost));
    STRATA_RETURN_IF_ERROR(ctx_.d2h->record(*bk.done));
    ctx_.stats->bytes_d2h += (hi - lo) * 2;
  }
  bk.state = Bucket::State::kInFlight;
  return Status::ok();
}

Status GradientPath::drain(int b) {
  Bucket& bk = buckets_[static_cast<size_t>(b)];
  STRATA_RETURN_IF_ERROR(wait_timed(*bk.done, &ctx_.stats->stall_grad_s));
  ChunkGrads& c = chunks_[static_cast<size_t>(bk.chunk)];
  if (c.dev == nullptr && sharded()) {
    STRATA_RETURN_IF_ERROR(reduce_span_host(bk, c));
  } else if (c.dev == nullptr) {
    STRATA_ASSIGN_OR_RETURN(float* acc, host_grads(static_cast<uint32_t>(bk.chunk)));
    const Clock::time_point t0 = Clock::now();
    kernels::arena_execute(*ctx_.arena, [&] {
      for (uint32_t pi : bk.params) {
        const ParamSlot& slot = ctx_.layout->params()[pi];
        kernels::accumulate(*ctx_.k, acc + (slot.offset - c.geom.shard_begin),
                            kernels::TensorView{bk.landing.bytes() + slot.offset * 2, ctx_.dtype, slot.numel}, 1.0f);
      }
    });
    if (ctx_.tracer)
      ctx_.tracer->span(TraceLane::kUpdate, "accumulate grads c" + std::to_string(bk.chunk), t0, Clock::now());
  }
  const auto ci = static_cast<uint32_t>(bk.chunk);
  bk.state = Bucket::State::kFree;
  bk.chunk = -1;
  bk.params.clear();
  return note_landed(ci);
}

Status GradientPath::note_landed(uint32_t ci) {
  const ChunkGrads& c = chunks_[ci];
  if (replicated() || c.bucket >= 0 || c.in_micro != ctx_.layout->chunks()[ci].params.size()) return Status::ok();
  for (const Bucket& bk : buckets_)
    if (bk.chunk == static_cast<int>(ci) && bk.state != Bucket::State::kFree) return Status::ok();
  // (NVMe gradients come without accumulation: every micro-batch ends a cycle.)
  if (c.geom.tier == Tier::kNvme) STRATA_RETURN_IF_ERROR(write_chunk(ci));
  if (boundary_) final_.push_back(ci);
  return Status::ok();
}

Status GradientPath::poll(bool wait) {
  if (replicated()) return progress_reduces(wait);
  for (size_t b = 0; b < buckets_.size() && !sharded(); ++b)
    if (buckets_[b].state == Bucket::State::kInFlight && (wait || buckets_[b].done->query()))
      STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));
  return Status::ok();
}

std::vector<uint32_t> GradientPath::take_final() { return std::exchange(final_, {}); }

Status GradientPath::add(uint32_t pi, const void* g, void* native, bool boundary) {
  const ParamSlot& slot = ctx_.layout->params()[pi];
  ChunkGrads& c = chunks_[slot.chunk];
  boundary_ = boundary;
  int b = c.bucket;
  if (b < 0) {
    STRATA_ASSIGN_OR_RETURN(b, acquire(slot.chunk));
  }
  Bucket& bk = buckets_[static_cast<size_t>(b)];
  if (native != nullptr) {
    STRATA_RETURN_IF_ERROR(ctx_.dev->record_native(*user_ready_, native));
    STRATA_RETURN_IF_ERROR(ctx_.compute->wait(*user_ready_));
  }
  // On the emulated device the caller's gradient is ordinary host memory.
  const auto kind = ctx_.dev->is_cuda() ? offload::CopyKind::kDeviceToDevice : offload::CopyKind::kHostToDevice;
  STRATA_RETURN_IF_ERROR(traced_copy(*ctx_.compute, TraceLane::kCompute, "grad " + slot.name,
                                     static_cast<uint8_t*>(bk.dev) + slot.offset * 2, g, slot.numel * 2, kind));
  STRATA_RETURN_IF_ERROR(ctx_.compute->record(*copy_done_));
  if (native != nullptr) {
    STRATA_RETURN_IF_ERROR(ctx_.dev->wait_native(native, *copy_done_));
  } else {
    STRATA_RETURN_IF_ERROR(wait_timed(*copy_done_, &ctx_.stats->stall_grad_s));
  }
  bk.params.push_back(pi);
  if (++c.in_micro == ctx_.layout->chunks()[slot.chunk].params.size()) {
    STRATA_RETURN_IF_ERROR(flush(b));
    if (replicated() && boundary && ctx_.overlap) reduce_ready_.push_back(slot.chunk);
  }
  if (replicated()) STRATA_RETURN_IF_ERROR(progress_reduces());
  return Status::ok();
}

void GradientPath::new_micro() {
  for (ChunkGrads& c : chunks_) c.in_micro = 0;
  boundary_ = false;
  final_.clear();
}

Status GradientPath::flush_open() {
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (buckets_[b].state == Bucket::State::kOpen) STRATA_RETURN_IF_ERROR(flush(static_cast<int>(b)));
  return Status::ok();
}

Status GradientPath::drain_all() {
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (buckets_[b].state == Bucket::State::kOpen) STRATA_RETURN_IF_ERROR(flush(static_cast<int>(b)));
  for (size_t b = 0; b < buckets_.size(); ++b)
    if (buckets_[b].state == Bucket::State::kInFlight) STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));
  return Status::ok();
}

// Host shards in one deterministic multi-tensor pass (NVMe-resident ones by the partial sums
// taken when they were written, added in the same order: the same sum bit for bit), device shards
// one by one; sharded: summed over the ranks.
StatusOr<GradientPath::Norm> GradientPath::norm() {
  std::vector<kernels::TensorView> host_views;
  std::vector<double> dev_sumsq(chunks_.size(), 0.0);
  for (size_t i = 0; i < chunks_.size(); ++i) {
    ChunkGrads& c = chunks_[i];
    if (c.dev != nullptr) {
      STRATA_RETURN_IF_ERROR(ctx_.ops->sumsq(*ctx_.compute, kernels::TensorView{c.dev, DType::kF32, c.geom.shard},
                                             ctx_.scratch, &dev_sumsq[i]));
    } else if (c.geom.tier != Tier::kNvme) {
      host_views.push_back(kernels::TensorView{c.host.data(), DType::kF32, c.geom.shard});
    }
  }
  std::vector<double> host_partials;
  kernels::arena_execute(*ctx_.arena, [&] { host_partials = kernels::sumsq_partials(*ctx_.k, host_views); });
  STRATA_RETURN_IF_ERROR(ctx_.compute->synchronize());
  double sumsq = 0.0;
  size_t next = 0;  // the first of the next host shard's partials
  for (const ChunkGrads& c : chunks_) {
    if (c.dev != nullptr) continue;
    if (c.geom.tier == Tier::kNvme) {
      for (double p : c.partials) sumsq += p;
      continue;
    }
    const size_t count = (c.geom.shard + kernels::kChunkElems - 1) / kernels::kChunkElems;
    for (size_t j = 0; j < count; ++j) sumsq += host_partials[next + j];
    next += count;
  }
  Norm n{sumsq, std::isfinite(sumsq)};
  for (double d : dev_sumsq) n.sumsq += d;
  if (sharded()) {  // each rank holds its shard of the gradients: sum the squares and flags
    double v[2] = {n.sumsq, n.finite ? 0.0 : 1.0};
    STRATA_RETURN_IF_ERROR(ctx_.comm->all_reduce_sync(v, v, 2, comm::Elem::kF64, comm::ReduceOp::kSum));
    n.sumsq = v[0];
    n.finite = v[1] == 0.0;
  }
  n.finite = n.finite && std::isfinite(n.sumsq);
  return n;
}

Status GradientPath::zero() {
  std::vector<std::pair<float*, size_t>> pieces;
  // Host gradients in pieces over all threads: one thread's memset of 1.2 G fp32 gradients was
  // ~450 ms of a 1.2 s step on a 16-core GPU machine (trace of gpt-1.3b, params + optimizer cpu).
  constexpr size_t kPiece = size_t{1} << 20;  // elements
  for (ChunkGrads& c : chunks_) {
    if (c.dev != nullptr) {
      STRATA_RETURN_IF_ERROR(ctx_.ops->zero(*ctx_.compute, c.dev, c.geom.shard * 4));
      continue;
    }
    if (c.geom.tier == Tier::kNvme) {  // assembly buffers are zeroed when taken; one held now is let go
      if (c.assembly >= 0) assembly_[static_cast<size_t>(std::exchange(c.assembly, -1))].chunk = -1;
      c.written = c.spilled = c.adopted = false;
      c.partials.clear();
      c.bad_param = -1;
      continue;
    }
    for (size_t off = 0; off < c.geom.shard; off += kPiece)
      pieces.emplace_back(static_cast<float*>(c.host.data()) + off, std::min(kPiece, c.geom.shard - off));
  }
  kernels::arena_execute(*ctx_.arena, [&] {
    kernels::parallel_for(tbb::blocked_range<size_t>(0, pieces.size()), [&](const tbb::blocked_range<size_t>& r) {
      for (size_t i = r.begin(); i != r.end(); ++i) std::memset(pieces[i].first, 0, pieces[i].second * 4);
    });
  });
  return ctx_.compute->synchronize();
}

std::pair<int64_t, int64_t> GradientPath::first_nonfinite_in(uint32_t ci, const float* g) const {
  const ChunkGrads& c = chunks_[ci];
  for (uint32_t pi : ctx_.layout->chunks()[ci].params) {
    const ParamSlot& s = ctx_.layout->params()[pi];
    const size_t lo = std::max(s.offset, c.geom.shard_begin),
                 hi = std::min(s.offset + s.numel, c.geom.shard_begin + c.geom.shard);
    for (size_t e = lo; e < hi; ++e)
      if (!std::isfinite(g[e - c.geom.shard_begin])) return {pi, static_cast<int64_t>(e - s.offset)};
  }
  return {-1, 0};
}

// Runs only when a run is stopped for it; sharded: every rank looks at its shard and the lowest
// param index wins.
StatusOr<std::string> GradientPath::first_nonfinite() {
  const auto& slots = ctx_.layout->params();
  int64_t best = -1, best_elem = 0;
  std::vector<float> host;
  for (size_t ci = 0; ci < chunks_.size() && best < 0; ++ci) {
    ChunkGrads& c = chunks_[ci];
    const float* g = static_cast<const float*>(c.host.data());
    if (c.geom.tier == Tier::kNvme) {  // found when it was written
      best = c.bad_param;
      best_elem = c.bad_elem;
      continue;
    }
    if (c.dev != nullptr) {
      host.resize(c.geom.shard);
      STRATA_RETURN_IF_ERROR(
          ctx_.compute->copy(host.data(), c.dev, c.geom.shard * 4, offload::CopyKind::kDeviceToHost));
      STRATA_RETURN_IF_ERROR(ctx_.compute->synchronize());
      g = host.data();
    }
    std::tie(best, best_elem) = first_nonfinite_in(static_cast<uint32_t>(ci), g);
  }
  if (sharded()) {  // the lowest param index over the ranks, then that rank's element
    const int32_t n = static_cast<int32_t>(slots.size());
    int32_t v[1] = {best < 0 ? -n : -static_cast<int32_t>(best)};
    STRATA_RETURN_IF_ERROR(ctx_.comm->all_reduce_sync(v, v, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
    const int64_t global = -static_cast<int64_t>(v[0]);
    double e[1] = {global == best ? static_cast<double>(best_elem) : -1.0};
    STRATA_RETURN_IF_ERROR(ctx_.comm->all_reduce_sync(e, e, 1, comm::Elem::kF64, comm::ReduceOp::kMax));
    best = global < n ? global : -1;
    best_elem = static_cast<int64_t>(e[0]);
  }
  if (best < 0) return std::string("not in any single param (the norm's sum of squares overflowed)");
  const ParamSlot& s = slots[static_cast<size_t>(best)];
  std::string shape = "[";
  for (size_t i = 0; i < s.shape.size(); ++i) shape += (i ? ", " : "") + std::to_string(s.shape[i]);
  return "in '" + s.name + "' (element " + std::to_string(best_elem) + " of " + shape + "])";
}

}  // namespace strata::engine
