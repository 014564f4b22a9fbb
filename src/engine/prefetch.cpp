// Engine: working buffers for params that rest off the device. A fetch finds its chunk in a
// buffer (loaded ahead by prefetch, or earlier) or loads it on demand: host -> H2D, or NVMe ->
// pinned staging (libaio) -> H2D. Prefetch follows the fetch order recorded in the first
// micro-batch (offload::PrefetchScheduler): after every fetch and release it starts loads of the
// next chunks within stage3_prefetch_bucket_size elements, into buffers whose chunks are needed
// later than the new one (never one in use or in flight), within stage3_max_live_parameters.
// The buffers are allocated once at prepare, so the device budget cannot be exceeded.
#include <algorithm>

#include "src/engine/collectives.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {

void Engine::Impl::call_begin(const char* what) {
  const Clock::time_point now = Clock::now();
  if (tracer && last_return.time_since_epoch().count() != 0) trace_span(TraceLane::kHost, what, last_return, now);
}

size_t Engine::Impl::resident_elems() const {
  size_t n = 0;
  for (const WorkBuffer& w : work)
    if (w.chunk >= 0) n += chunks[static_cast<size_t>(w.chunk)].rest_numel;
  return n;
}

// A chunk reused further away than stage3_max_reuse_distance counts as not reused.
size_t Engine::Impl::effective_next_use(uint32_t ci) const {
  if (!sched()) return offload::PrefetchScheduler::kNever;
  const size_t d = sched()->next_use(ci);
  return d > cfg.max_reuse_distance ? offload::PrefetchScheduler::kNever : d;
}

Staging* Engine::Impl::idle_staging() {
  for (Staging& s : param_staging) {
    if (s.loading_work >= 0 || s.staged_chunk >= 0 || s.io.valid()) continue;
    if (s.pending) {
      if (!s.copied->query()) continue;
      s.pending = false;
    }
    return &s;
  }
  return nullptr;
}

Staging* Engine::Impl::staged(uint32_t ci) {
  for (Staging& s : param_staging)
    if (s.staged_chunk == static_cast<int>(ci)) return &s;
  return nullptr;
}

void Engine::Impl::drop_staging(Staging& sb) {
  if (sb.io.valid()) (void)sb.io.wait();  // its data is not used; an error shows on the next read
  sb.io = offload::IoHandle();
  sb.staged_chunk = -1;
}

Status Engine::Impl::start_read(Staging& sb, uint32_t ci) {
  // The step's write-back of these params must land before they are read.
  for (Staging& o : param_staging) {
    if (o.put_chunk != static_cast<int>(ci) || !o.io.valid()) continue;
    const Clock::time_point t0 = Clock::now();
    Status r = o.io.wait();
    st.stall_fetch_s += seconds_since(t0);
    o.io = offload::IoHandle();
    o.put_chunk = -1;
    STRATA_RETURN_IF_ERROR(r);
  }
  const size_t bytes = chunks[ci].rest_numel * 2;
  sb.io = param_store->get(key(ci, "p16"), sb.buf, bytes, io_span(TraceLane::kNvmeRead, "read " + key(ci, "p16")));
  sb.staged_chunk = static_cast<int>(ci);
  st.bytes_nvme_read += bytes;
  return Status::ok();
}

int Engine::Impl::pick_work(uint32_t ci, bool for_prefetch) {
  const bool follow = sched() != nullptr && sched()->following();
  const size_t need = for_prefetch ? effective_next_use(ci) : 0;
  int pick = -1;
  size_t pick_next = 0;
  for (size_t i = 0; i < work.size(); ++i) {
    WorkBuffer& w = work[i];
    if (w.pins > 0) continue;
    // In lockstep (stage 3 across ranks) a copy in flight does not count: the choice must not
    // depend on timing. Its stream keeps the copies in order.
    const bool busy = !gathers() && (w.loading != nullptr || (w.chunk >= 0 && !w.ready->query()));
    if (for_prefetch && busy) continue;
    if (w.chunk < 0) return static_cast<int>(i);  // empty: nothing to lose
    const size_t next = follow ? effective_next_use(static_cast<uint32_t>(w.chunk)) : 0;
    if (for_prefetch && !(next > need)) continue;  // keep what is needed before the new chunk
    bool better = pick < 0;
    if (!better) {
      const WorkBuffer& p = work[static_cast<size_t>(pick)];
      const bool p_busy = !gathers() && (p.loading != nullptr || !p.ready->query());
      if (busy != p_busy) {
        better = !busy;
      } else if (next != pick_next) {
        better = next > pick_next;  // needed last (Belady)
      } else {
        better = w.last_use < p.last_use;  // least recently used
      }
    }
    if (better) {
      pick = static_cast<int>(i);
      pick_next = next;
    }
  }
  return pick;
}

Status Engine::Impl::finish_load(WorkBuffer& w) {
  if (w.loading == nullptr) return Status::ok();
  Staging* sb = w.loading;
  const Clock::time_point t0 = Clock::now();
  Status r = sb->io.valid() ? sb->io.wait() : Status::ok();
  st.stall_fetch_s += seconds_since(t0);
  sb->io = offload::IoHandle();
  sb->loading_work = -1;
  sb->staged_chunk = -1;
  w.loading = nullptr;
  if (!r.is_ok()) {
    chunks[static_cast<size_t>(w.chunk)].work = -1;
    w.chunk = -1;
    return r;
  }
  const size_t bytes = chunks[static_cast<size_t>(w.chunk)].rest_numel * 2;
  STRATA_RETURN_IF_ERROR(traced_copy(*h2d, TraceLane::kH2D, "h2d c" + std::to_string(w.chunk), w.dev, sb->buf.data(),
                                     bytes, offload::CopyKind::kHostToDevice));
  STRATA_RETURN_IF_ERROR(h2d->record(*sb->copied));
  sb->pending = true;
  STRATA_RETURN_IF_ERROR(h2d->record(*w.ready));
  st.bytes_h2d += bytes;
  return Status::ok();
}

Status Engine::Impl::pump_loads() {
  for (WorkBuffer& w : work)
    if (w.loading != nullptr && (!w.loading->io.valid() || w.loading->io.done())) STRATA_RETURN_IF_ERROR(finish_load(w));
  return Status::ok();
}

Status Engine::Impl::load(int wi, uint32_t ci, bool for_prefetch) {
  WorkBuffer& w = work[static_cast<size_t>(wi)];
  ChunkState& c = chunks[ci];
  if (w.loading != nullptr) {  // an unneeded load in flight: let it land, then drop it
    w.loading->loading_work = -1;
    drop_staging(*w.loading);
    w.loading = nullptr;
  }
  if (w.chunk >= 0) chunks[static_cast<size_t>(w.chunk)].work = -1;
  w.chunk = -1;
  w.prefetched = false;
  // On a GPU the caller's kernels may still read the buffer's old chunk.
  if (last_native != nullptr) {
    STRATA_RETURN_IF_ERROR(dev->record_native(*user_ready, last_native));
    STRATA_RETURN_IF_ERROR(h2d->wait(*user_ready));
  }
  const size_t bytes = c.rest_numel * 2;
  w.chunk = static_cast<int>(ci);
  c.work = wi;
  w.prefetched = for_prefetch;
  if (gathers()) return gather_into(w, ci);
  if (c.at.params16 == Tier::kHost) {
    STRATA_RETURN_IF_ERROR(traced_copy(*h2d, TraceLane::kH2D, "h2d c" + std::to_string(ci), w.dev, c.p16_host.data(),
                                       bytes, offload::CopyKind::kHostToDevice));
    STRATA_RETURN_IF_ERROR(h2d->record(*w.ready));
    st.bytes_h2d += bytes;
    return Status::ok();
  }
  // A read already staged by prefetch, else one started now.
  Staging* sb = staged(ci);
  if (sb == nullptr) {
    if (for_prefetch) {
      sb = idle_staging();
      if (sb == nullptr) return internal_error("prefetch of chunk " + std::to_string(ci) + ": no idle staging buffer");
    } else {
      STRATA_ASSIGN_OR_RETURN(sb, take_staging(&st.stall_fetch_s));
    }
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
  }
  sb->loading_work = wi;
  w.loading = sb;
  if (!for_prefetch || !cfg.overlap) return finish_load(w);
  return Status::ok();
}

Status Engine::Impl::ensure_loaded(uint32_t ci, const std::string& name) {
  ChunkState& c = chunks[ci];
  if (sched() != nullptr) {
    if (sched()->on_fetch(ci) == offload::PrefetchScheduler::Seen::kOrderChanged) {
      ++st.order_changes;
      if (st.order_changes == 1)
        log("fetch order changed (" + sched()->last_change() +
            "): fetching on demand for the rest of this micro-batch and recording the new order (logged once; "
            "stats count further changes)");
    }
  }
  if (c.work >= 0) {
    WorkBuffer& w = work[static_cast<size_t>(c.work)];
    if (w.prefetched) {
      ++st.prefetch_hits;
      w.prefetched = false;
    }
    return finish_load(w);
  }
  const int pick = pick_work(ci, false);
  if (pick < 0) {
    std::string held;
    for (const WorkBuffer& w : work) {
      for (uint32_t q : chunks[static_cast<size_t>(w.chunk)].params)
        if (params[q].fetches > 0) held += (held.empty() ? "'" : ", '") + layout->params()[q].name + "'";
    }
    return failed_precondition("fetch of '" + name + "': all " + std::to_string(work.size()) +
                               " device working buffers (strata.live_chunks) hold fetched params (" + held +
                               "); release params before fetching more, or raise strata.live_chunks");
  }
  ++st.demand_loads;
  return load(pick, ci, false);
}

// Two levels: chunks that can get a device buffer are loaded into it (H2D, after an NVMe read
// for NVMe-resident ones); NVMe-resident chunks further ahead are read into free pinned staging
// buffers (offload_param.buffer_count) so that their H2D can start as soon as a buffer frees up.
Status Engine::Impl::prefetch() {
  if (!cfg.overlap || sched() == nullptr || !sched()->following() || work.empty()) return Status::ok();
  STRATA_RETURN_IF_ERROR(pump_loads());
  bool device_full = false;
  for (uint32_t ci : sched()->upcoming(cfg.prefetch_bucket_size)) {
    const ChunkState& c = chunks[ci];
    if (c.work >= 0) continue;
    const bool nvme = c.at.params16 == Tier::kNvme && !gathers();  // gathers read their shard themselves
    if (!device_full) {
      const int w = nvme && staged(ci) == nullptr && idle_staging() == nullptr ? -1 : pick_work(ci, true);
      const int old = w >= 0 ? work[static_cast<size_t>(w)].chunk : -1;
      const size_t freed = old >= 0 ? chunks[static_cast<size_t>(old)].rest_numel : 0;
      if (w >= 0 && resident_elems() - freed + c.rest_numel <= cfg.max_live_parameters) {
        ++st.prefetches;
        STRATA_RETURN_IF_ERROR(load(w, ci, true));
        continue;
      }
      device_full = true;  // later chunks are needed later still: no buffer for them either
    }
    if (!nvme || staged(ci) != nullptr) continue;
    Staging* sb = idle_staging();
    if (sb == nullptr) break;
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
  }
  return Status::ok();
}

// Stage 3 across ranks: this rank's bit16 shard is gathered with the other ranks' — on the device
// straight into the working buffer, or from the host / NVMe into pinned host memory and copied
// to the working buffer. Synchronous up to that copy, so that every rank issues its gathers in
// the order of its (identical) loads.
Status Engine::Impl::gather_into(WorkBuffer& w, uint32_t ci) {
  ChunkState& c = chunks[ci];
  const void* send = c.p16_host.data();
  const Clock::time_point t0 = Clock::now();
  if (c.at.params16 == Tier::kDevice) {
    // Shards on the device gather straight into the working buffer, after whatever the h2d
    // stream holds (the caller's kernels still reading the buffer's old chunk, on a GPU).
    STRATA_RETURN_IF_ERROR(engine::device_collective(*dev, *h2d, [&](void* s) {
      return opts.comm->all_gather(c.p16_dev, w.dev, c.shard, comm::Elem::kBF16, s);
    }));
    st.allgather_s += seconds_since(t0);
    st.bytes_allgather += c.numel * 2;
    STRATA_RETURN_IF_ERROR(h2d->record(*w.ready));
    trace_span(TraceLane::kEngine, "gather c" + std::to_string(ci), t0, Clock::now());
    return Status::ok();
  }
  if (c.at.params16 == Tier::kNvme) {
    STRATA_ASSIGN_OR_RETURN(Staging * sb, take_staging(&st.stall_fetch_s));
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
    Status r = sb->io.wait();
    sb->io = offload::IoHandle();
    sb->staged_chunk = -1;
    if (!r.is_ok()) {
      c.work = -1;
      w.chunk = -1;
      return r;
    }
    send = sb->buf.data();
  }
  if (gather_pending) {
    STRATA_RETURN_IF_ERROR(wait_timed(*gather_copied, &st.stall_fetch_s));
    gather_pending = false;
  }
  const Clock::time_point tg = Clock::now();
  STRATA_RETURN_IF_ERROR(opts.comm->all_gather_sync(send, gather_full.data(), c.shard, comm::Elem::kBF16));
  st.allgather_s += seconds_since(tg);
  st.bytes_allgather += c.numel * 2;
  STRATA_RETURN_IF_ERROR(traced_copy(*h2d, TraceLane::kH2D, "h2d c" + std::to_string(ci), w.dev, gather_full.data(),
                                     c.numel * 2, offload::CopyKind::kHostToDevice));
  STRATA_RETURN_IF_ERROR(h2d->record(*gather_copied));
  gather_pending = true;
  STRATA_RETURN_IF_ERROR(h2d->record(*w.ready));
  st.bytes_h2d += c.numel * 2;
  trace_span(TraceLane::kEngine, "gather c" + std::to_string(ci), t0, Clock::now());
  return Status::ok();
}

// Every NVMe operation finished: the runner's, then the staging buffers' (a finished read stays
// staged for its working buffer; a failed one is forgotten with its buffer's chunk).
Status Engine::Impl::quiesce_io() {
  Status first = runner ? runner->quiesce() : Status::ok();
  for (Staging& sb : param_staging) {
    if (!sb.io.valid()) continue;
    Status r = sb.io.wait();
    sb.io = offload::IoHandle();
    sb.put_chunk = -1;
    if (r.is_ok()) continue;
    if (sb.loading_work >= 0) {
      WorkBuffer& w = work[static_cast<size_t>(sb.loading_work)];
      if (w.chunk >= 0) chunks[static_cast<size_t>(w.chunk)].work = -1;
      w.chunk = -1;
      w.loading = nullptr;
      w.prefetched = false;
    }
    sb.loading_work = sb.staged_chunk = -1;
    if (first.is_ok()) first = std::move(r);
  }
  return first;
}

void Engine::Impl::on_pass_end() {
  if (train_sched) train_sched->end_pass();
}

}  // namespace strata::engine
