// Engine: fetch and release of bit16 params on the device, and the gradient hand-off through
// device buckets that are flushed (copied to the host, or accumulated on the device) as they fill.
#include <algorithm>
#include <cstring>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/parallel.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {

Status Engine::Impl::wait_timed(offload::Event& e, double* counter) {
  if (e.query()) return e.synchronize();
  const Clock::time_point t0 = Clock::now();
  Status s = e.synchronize();
  *counter += seconds_since(t0);
  return s;
}

StatusOr<Staging*> Engine::Impl::take_staging(double* stall) {
  Staging& s = param_staging[next_staging];
  next_staging = (next_staging + 1) % param_staging.size();
  if (s.loading_work >= 0) STRATA_RETURN_IF_ERROR(finish_load(work[static_cast<size_t>(s.loading_work)]));
  if (s.staged_chunk >= 0) drop_staging(s);
  if (s.pending) {
    STRATA_RETURN_IF_ERROR(wait_timed(*s.copied, stall));
    s.pending = false;
  }
  if (s.io.valid()) {
    const Clock::time_point t0 = Clock::now();
    Status r = s.io.wait();
    s.io = offload::IoHandle();
    s.put_chunk = -1;
    *stall += seconds_since(t0);
    STRATA_RETURN_IF_ERROR(r);
  }
  return &s;
}

StatusOr<void*> Engine::Impl::fetch(const std::string& name, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "fetch"));
  const ParamSlot& slot = layout->params()[pi];
  ChunkState& c = chunks[slot.chunk];
  uint8_t* base = nullptr;
  offload::Event* ready = nullptr;
  if (c.at.params16 == Tier::kDevice && !gathers()) {
    base = static_cast<uint8_t*>(c.p16_dev);  // refreshed by the last step, which finished
  } else {
    if (native_stream != nullptr) last_native = native_stream;
    STRATA_RETURN_IF_ERROR(ensure_loaded(slot.chunk, name));
    WorkBuffer& w = work[static_cast<size_t>(c.work)];
    w.last_use = ++clock;
    base = static_cast<uint8_t*>(w.dev);
    ready = w.ready.get();
  }
  if (ready != nullptr) {
    if (native_stream != nullptr) {
      STRATA_RETURN_IF_ERROR(dev->wait_native(native_stream, *ready));
    } else {
      const Clock::time_point t0 = Clock::now();
      STRATA_RETURN_IF_ERROR(wait_timed(*ready, &st.stall_fetch_s));
      if (tracer && seconds_since(t0) > 1e-5) trace_span(TraceLane::kEngine, "fetch stall " + name, t0, Clock::now());
    }
  } else if (native_stream != nullptr && !dev->is_cuda()) {
    return invalid_argument("fetch of '" + name + "': the host-emulated device has no native streams: pass a NULL stream");
  }
  if (c.work >= 0) ++work[static_cast<size_t>(c.work)].pins;
  ++params[pi].fetches;
  if (!in_eval) params[pi].fetched_in_micro = true;  // an evaluation fetch does not allow a gradient
  STRATA_RETURN_IF_ERROR(prefetch());
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  return static_cast<void*>(base + slot.offset * 2);
}

Status Engine::Impl::release(const std::string& name) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "release"));
  if (params[pi].fetches == 0)
    return failed_precondition("release of '" + name + "': not fetched (every release must match one fetch; double release?)");
  --params[pi].fetches;
  const ChunkState& c = chunks[layout->params()[pi].chunk];
  if (c.work >= 0 && --work[static_cast<size_t>(c.work)].pins == 0) return prefetch();
  return Status::ok();
}

StatusOr<int> Engine::Impl::acquire_bucket(uint32_t chunk) {
  for (;;) {
    // Finished flushes free their buckets without waiting — except with shards across ranks,
    // where a drain is a collective and must not depend on when a copy happened to finish.
    for (size_t b = 0; b < buckets.size() && !sharded(); ++b)
      if (buckets[b].state == Bucket::State::kInFlight && buckets[b].done->query()) STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));
    for (size_t b = 0; b < buckets.size(); ++b) {
      Bucket& bk = buckets[b];
      if (bk.state != Bucket::State::kFree) continue;
      bk.state = Bucket::State::kOpen;
      bk.chunk = static_cast<int>(chunk);
      bk.params.clear();
      bk.opened = ++clock;
      chunks[chunk].bucket = static_cast<int>(b);
      return static_cast<int>(b);
    }
    // None free: wait for the oldest flush, or flush the oldest open bucket early.
    int oldest_flight = -1, oldest_open = -1;
    for (size_t b = 0; b < buckets.size(); ++b) {
      const Bucket& bk = buckets[b];
      int& o = bk.state == Bucket::State::kInFlight ? oldest_flight : oldest_open;
      if (o < 0 || bk.opened < buckets[static_cast<size_t>(o)].opened) o = static_cast<int>(b);
    }
    if (oldest_flight >= 0) {
      STRATA_RETURN_IF_ERROR(drain(oldest_flight));
    } else {
      ++st.early_flushes;
      STRATA_RETURN_IF_ERROR(flush(oldest_open));
    }
  }
}

std::pair<size_t, size_t> Engine::Impl::bucket_span(const Bucket& bk) const {
  size_t lo = SIZE_MAX, hi = 0;
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = layout->params()[pi];
    lo = std::min(lo, slot.offset);
    hi = std::max(hi, slot.offset + slot.numel);
  }
  return {lo, hi};
}

Status Engine::Impl::flush(int b) {
  Bucket& bk = buckets[static_cast<size_t>(b)];
  ChunkState& c = chunks[static_cast<size_t>(bk.chunk)];
  c.bucket = -1;
  ++st.bucket_flushes;
  if (c.at.grad32 == Tier::kDevice && sharded()) {
    STRATA_RETURN_IF_ERROR(reduce_bucket_shard_device(bk, c));
    STRATA_RETURN_IF_ERROR(compute->record(*bk.done));
  } else if (c.at.grad32 == Tier::kDevice) {
    for (uint32_t pi : bk.params) {
      const ParamSlot& slot = layout->params()[pi];
      const kernels::TensorView g{static_cast<const uint8_t*>(bk.dev) + slot.offset * 2, dtype, slot.numel};
      STRATA_RETURN_IF_ERROR(
          ops->accumulate(*compute, static_cast<float*>(c.grad_dev) + (slot.offset - c.shard_begin), g, 1.0f));
    }
    STRATA_RETURN_IF_ERROR(compute->record(*bk.done));
  } else {
    // One copy of the bucket's span, from its first to its last received element.
    const auto [lo, hi] = bucket_span(bk);
    STRATA_RETURN_IF_ERROR(compute->record(*copy_done));
    STRATA_RETURN_IF_ERROR(d2h->wait(*copy_done));
    STRATA_RETURN_IF_ERROR(traced_copy(*d2h, TraceLane::kD2H, "d2h grads c" + std::to_string(bk.chunk),
                                       bk.landing.bytes() + lo * 2, static_cast<const uint8_t*>(bk.dev) + lo * 2,
                                       (hi - lo) * 2, offload::CopyKind::kDeviceToHost));
    STRATA_RETURN_IF_ERROR(d2h->record(*bk.done));
    st.bytes_d2h += (hi - lo) * 2;
  }
  bk.state = Bucket::State::kInFlight;
  return Status::ok();
}

Status Engine::Impl::drain(int b) {
  Bucket& bk = buckets[static_cast<size_t>(b)];
  STRATA_RETURN_IF_ERROR(wait_timed(*bk.done, &st.stall_grad_s));
  ChunkState& c = chunks[static_cast<size_t>(bk.chunk)];
  if (c.at.grad32 != Tier::kDevice && sharded()) {
    STRATA_RETURN_IF_ERROR(reduce_bucket_shard(bk, c, bk.landing.bytes(), static_cast<float*>(c.grad_host.data())));
  } else if (c.at.grad32 != Tier::kDevice) {
    float* acc = static_cast<float*>(c.grad_host.data());
    const Clock::time_point t0 = Clock::now();
    kernels::arena_execute(arena, [&] {
      for (uint32_t pi : bk.params) {
        const ParamSlot& slot = layout->params()[pi];
        kernels::accumulate(*k, acc + (slot.offset - c.shard_begin),
                            kernels::TensorView{bk.landing.bytes() + slot.offset * 2, dtype, slot.numel}, 1.0f);
      }
    });
    trace_span(TraceLane::kUpdate, "accumulate grads c" + std::to_string(bk.chunk), t0, Clock::now());
  }
  bk.state = Bucket::State::kFree;
  bk.chunk = -1;
  bk.params.clear();
  return Status::ok();
}

// ZeRO across ranks: every rank drains the same buckets in the same order (the same model hands
// the same gradients, and drains never depend on timing), so this collective lines up. The span
// of the chunk from the bucket's first to its last param (the same on every rank) is summed over
// the ranks in fp32; this rank adds the part inside its shard. A chunk whose gradients came in
// several buckets (an early flush) is summed span by span, never twice. (An all-reduce rather
// than a reduce-scatter: OpenMPI's non-blocking reduce-scatter is ~8x slower here, see
// docs/benchmarks.md.)
Status Engine::Impl::reduce_bucket_shard(const Bucket& bk, const ChunkState& c, const uint8_t* bits, float* acc) {
  const auto [lo, hi] = bucket_span(bk);
  if (lo >= hi) return Status::ok();
  rs_full.assign(hi - lo, 0.0f);
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = layout->params()[pi];
    kernels::cast_to_fp32(*k, kernels::TensorView{bits + slot.offset * 2, dtype, slot.numel}, 1.0f,
                          rs_full.data() + (slot.offset - lo));
  }
  const Clock::time_point t0 = Clock::now();
  STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(rs_full.data(), rs_full.data(), hi - lo, comm::Elem::kF32,
                                                    comm::ReduceOp::kSum));
  st.allreduce_s += seconds_since(t0);
  st.bytes_allreduce += (hi - lo) * 4;
  const size_t from = std::max(lo, c.shard_begin), to = std::min(hi, c.shard_begin + c.shard);
  for (size_t i = from; i < to; ++i) acc[i - c.shard_begin] += rs_full[i - lo];
  return Status::ok();
}

// As above, on the device: the bucket's span widened into rs_dev, summed over the ranks in place
// (NCCL on the compute stream; MPI reads the emulated device's memory after the stream's work),
// then this rank's part added to its gradient shard.
Status Engine::Impl::reduce_bucket_shard_device(const Bucket& bk, ChunkState& c) {
  const auto [lo, hi] = bucket_span(bk);
  if (lo >= hi) return Status::ok();
  float* span = static_cast<float*>(rs_dev);
  STRATA_RETURN_IF_ERROR(ops->zero(*compute, span, (hi - lo) * 4));
  for (uint32_t pi : bk.params) {
    const ParamSlot& slot = layout->params()[pi];
    STRATA_RETURN_IF_ERROR(ops->accumulate(
        *compute, span + (slot.offset - lo),
        kernels::TensorView{static_cast<const uint8_t*>(bk.dev) + slot.offset * 2, dtype, slot.numel}, 1.0f));
  }
  const Clock::time_point t0 = Clock::now();
  const size_t count = hi - lo;  // (a structured binding: not capturable by a lambda before clang 16)
  STRATA_RETURN_IF_ERROR(device_collective(*compute, [&](void* s) {
    return opts.comm->all_reduce(span, span, count, comm::Elem::kF32, comm::ReduceOp::kSum, s);
  }));
  st.allreduce_s += seconds_since(t0);
  st.bytes_allreduce += (hi - lo) * 4;
  const size_t from = std::max(lo, c.shard_begin), to = std::min(hi, c.shard_begin + c.shard);
  if (from >= to) return Status::ok();
  return ops->accumulate(*compute, static_cast<float*>(c.grad_dev) + (from - c.shard_begin),
                         kernels::TensorView{span + (from - lo), DType::kF32, to - from}, 1.0f);
}

Status Engine::Impl::device_collective(offload::Stream& s,
                                       const std::function<StatusOr<std::unique_ptr<comm::Work>>(void*)>& issue) {
  if (!dev->is_cuda()) STRATA_RETURN_IF_ERROR(s.synchronize());
  STRATA_ASSIGN_OR_RETURN(auto w, issue(dev->is_cuda() ? s.native_handle() : nullptr));
  return w->wait();
}

Status Engine::Impl::drain_all() {
  for (size_t b = 0; b < buckets.size(); ++b)
    if (buckets[b].state == Bucket::State::kOpen) STRATA_RETURN_IF_ERROR(flush(static_cast<int>(b)));
  for (size_t b = 0; b < buckets.size(); ++b)
    if (buckets[b].state == Bucket::State::kInFlight) STRATA_RETURN_IF_ERROR(drain(static_cast<int>(b)));
  return Status::ok();
}

Status Engine::Impl::grad(const std::string& name, const void* g, DType gdtype, size_t numel, void* native_stream) {
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, param_index(name, "grad"));
  const ParamSlot& slot = layout->params()[pi];
  if (g == nullptr) return invalid_argument("grad of '" + name + "': the gradient pointer is NULL");
  if (gdtype != dtype)
    return invalid_argument("grad of '" + name + "': dtype " + std::string(dtype_name(gdtype)) + ", the engine trains in " +
                            std::string(dtype_name(dtype)) + " and takes gradients in it");
  if (numel != slot.numel)
    return invalid_argument("grad of '" + name + "': " + std::to_string(numel) + " elements given, the param has " +
                            std::to_string(slot.numel));
  ParamState& ps = params[pi];
  if (in_eval) return failed_precondition("grad of '" + name + "' during an evaluation pass (begin_eval): end_eval first");
  if (!ps.fetched_in_micro)
    return failed_precondition("grad of '" + name + "' before fetch: a gradient is taken only for a param fetched in the same micro-batch");
  if (ps.grad_in_micro)
    return failed_precondition("grad of '" + name + "': given twice in one micro-batch (accumulation across micro-batches is strata's; call step between them)");
  if (native_stream != nullptr && !dev->is_cuda())
    return invalid_argument("grad of '" + name + "': the host-emulated device has no native streams: pass a NULL stream");

  ChunkState& c = chunks[slot.chunk];
  int b = c.bucket;
  if (b < 0) {
    STRATA_ASSIGN_OR_RETURN(b, acquire_bucket(slot.chunk));
  }
  Bucket& bk = buckets[static_cast<size_t>(b)];
  if (native_stream != nullptr) {
    STRATA_RETURN_IF_ERROR(dev->record_native(*user_ready, native_stream));
    STRATA_RETURN_IF_ERROR(compute->wait(*user_ready));
  }
  // On the emulated device the caller's gradient is ordinary host memory.
  const auto kind = dev->is_cuda() ? offload::CopyKind::kDeviceToDevice : offload::CopyKind::kHostToDevice;
  STRATA_RETURN_IF_ERROR(traced_copy(*compute, TraceLane::kCompute, "grad " + name, static_cast<uint8_t*>(bk.dev) + slot.offset * 2,
                                     g, numel * 2, kind));
  STRATA_RETURN_IF_ERROR(compute->record(*copy_done));
  if (native_stream != nullptr) {
    STRATA_RETURN_IF_ERROR(dev->wait_native(native_stream, *copy_done));
  } else {
    STRATA_RETURN_IF_ERROR(wait_timed(*copy_done, &st.stall_grad_s));
  }
  bk.params.push_back(pi);
  ps.grad_in_micro = true;
  if (runner->has_nvme() && boundary_micro()) STRATA_RETURN_IF_ERROR(runner->start_reads());
  if (++c.grads_in_micro == c.params.size()) {
    STRATA_RETURN_IF_ERROR(flush(b));
    if (world() > 1 && !sharded() && boundary_micro() && cfg.overlap) reduce_ready.push_back(slot.chunk);  // DDP
  }
  if (world() > 1 && !sharded()) STRATA_RETURN_IF_ERROR(progress_reduces());
  return Status::ok();
}

}  // namespace strata::engine
