// ParamCache: working buffers for params that rest off the device. A fetch finds its chunk in a
// buffer (loaded ahead by prefetch, or earlier) or loads it on demand: host -> H2D, or NVMe ->
// pinned staging (libaio) -> H2D. Prefetch follows the fetch order recorded in the first
// micro-batch (offload::PrefetchScheduler): after every fetch and release it starts loads of the
// next chunks within stage3_prefetch_bucket_size elements, into buffers whose chunks are needed
// later than the new one (never one in use or in flight), within stage3_max_live_parameters.
// Stage 3 across ranks gathers every chunk from the ranks' shards.
#include <algorithm>

#include "src/engine/collectives.h"
#include "src/engine/param_cache_state.h"

namespace strata::engine {

size_t ParamCache::State::resident_elems() const {
  size_t n = 0;
  for (const WorkBuffer& w : work)
    if (w.chunk >= 0) n += chunks[static_cast<size_t>(w.chunk)].geom.rest_numel;
  return n;
}

// A chunk reused further away than stage3_max_reuse_distance counts as not reused.
size_t ParamCache::State::effective_next_use(uint32_t ci) const {
  if (!sched()) return offload::PrefetchScheduler::kNever;
  const size_t d = sched()->next_use(ci);
  return d > cfg().max_reuse_distance ? offload::PrefetchScheduler::kNever : d;
}

ParamCache::Staging* ParamCache::State::idle_staging() {
  for (Staging& s : staging) {
    if (s.loading_work >= 0 || s.staged_chunk >= 0 || s.io.valid()) continue;
    if (s.pending) {
      if (!s.copied->query()) continue;
      s.pending = false;
    }
    return &s;
  }
  return nullptr;
}

ParamCache::Staging* ParamCache::State::staged(uint32_t ci) {
  for (Staging& s : staging)
    if (s.staged_chunk == static_cast<int>(ci)) return &s;
  return nullptr;
}

Status ParamCache::State::drop_staging(Staging& sb) {
  const bool put = sb.put_chunk >= 0;
  Status r = sb.io.valid() ? sb.io.wait() : Status::ok();
  sb.clear_io();
  sb.staged_chunk = -1;
  return put ? r : Status::ok();
}

ParamCache::Staging* ParamCache::State::staging_for(uint32_t ci) {
  if (Staging* s = idle_staging()) return s;
  const size_t need = effective_next_use(ci);
  Staging* pick = nullptr;
  size_t pick_next = 0;
  for (Staging& s : staging) {
    if (s.loading_work >= 0 || s.staged_chunk < 0) continue;
    if (s.io.valid() && !s.io.done()) continue;     // a read or write-back in flight
    if (s.pending && !s.copied->query()) continue;  // a copy still reads it
    const size_t next = effective_next_use(static_cast<uint32_t>(s.staged_chunk));
    if (next > need && (pick == nullptr || next > pick_next)) {
      pick = &s;
      pick_next = next;
    }
  }
  return pick;
}

Status ParamCache::State::claim(Staging& sb) {
  sb.pending = false;  // staging_for chose it with its copies done
  return drop_staging(sb);
}

Status ParamCache::State::start_read(Staging& sb, uint32_t ci) {
  // The step's write-back of these params must land before they are read.
  for (Staging& o : staging) {
    if (o.put_chunk != static_cast<int>(ci) || !o.io.valid()) continue;
    const Clock::time_point t0 = Clock::now();
    Status r = o.io.wait();
    st().stall_fetch_s += seconds_since(t0);
    if (seconds_since(t0) > 1e-5) span(TraceLane::kEngine, "fetch waits for write-back c" + std::to_string(ci), t0);
    o.clear_io();
    STRATA_RETURN_IF_ERROR(r);
  }
  STRATA_ASSIGN_OR_RETURN(sb.io, chunks[ci].rest->get_async(sb.buf, io_span(TraceLane::kNvmeRead, "read " + key(ci))));
  sb.put_chunk = -1;
  sb.staged_chunk = static_cast<int>(ci);
  st().bytes_param_nvme_read += chunks[ci].geom.rest_numel * 2;
  return Status::ok();
}

int ParamCache::State::pick_work(uint32_t ci, bool for_prefetch) {
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

Status ParamCache::State::finish_load(WorkBuffer& w) {
  if (w.loading == nullptr) return Status::ok();
  Staging* sb = w.loading;
  const Clock::time_point t0 = Clock::now();
  Status r = sb->io.valid() ? sb->io.wait() : Status::ok();
  st().stall_fetch_s += seconds_since(t0);
  if (seconds_since(t0) > 1e-5) span(TraceLane::kEngine, "fetch waits for read c" + std::to_string(w.chunk), t0);
  sb->clear_io();
  sb->loading_work = -1;
  // The copy stays staged for the chunk's next use (the backward after the forward), unless a
  // read needed sooner takes the buffer (staging_for).
  sb->staged_chunk = r.is_ok() ? w.chunk : -1;
  w.loading = nullptr;
  if (!r.is_ok()) {
    chunks[static_cast<size_t>(w.chunk)].work = -1;
    w.chunk = -1;
    return r;
  }
  const size_t bytes = chunks[static_cast<size_t>(w.chunk)].geom.rest_numel * 2;
  STRATA_RETURN_IF_ERROR(h2d_copy("h2d c" + std::to_string(w.chunk), w.dev, sb->buf.data(), bytes));
  STRATA_RETURN_IF_ERROR(ctx.h2d->record(*sb->copied));
  sb->pending = true;
  STRATA_RETURN_IF_ERROR(ctx.h2d->record(*w.ready));
  st().bytes_h2d += bytes;
  return Status::ok();
}

Status ParamCache::State::pump_loads() {
  for (WorkBuffer& w : work)
    if (w.loading != nullptr && (!w.loading->io.valid() || w.loading->io.done()))
      STRATA_RETURN_IF_ERROR(finish_load(w));
  return Status::ok();
}

Status ParamCache::State::load(int wi, uint32_t ci, bool for_prefetch) {
  WorkBuffer& w = work[static_cast<size_t>(wi)];
  ChunkRest& c = chunks[ci];
  if (w.loading != nullptr) {  // an unneeded load in flight: let it land, then drop it
    w.loading->loading_work = -1;
    Status dropped = drop_staging(*w.loading);
    w.loading = nullptr;
    STRATA_RETURN_IF_ERROR(dropped);
  }
  if (w.chunk >= 0) chunks[static_cast<size_t>(w.chunk)].work = -1;
  w.chunk = -1;
  w.prefetched = false;
  // On a GPU the caller's kernels may still read the buffer's old chunk.
  if (last_native != nullptr) {
    STRATA_RETURN_IF_ERROR(ctx.dev->record_native(*user_ready, last_native));
    STRATA_RETURN_IF_ERROR(ctx.h2d->wait(*user_ready));
  }
  const size_t bytes = c.geom.rest_numel * 2;
  w.chunk = static_cast<int>(ci);
  c.work = wi;
  w.prefetched = for_prefetch;
  if (gathers()) return gather_into(w, ci);
  if (c.geom.tier == Tier::kHost) {
    STRATA_RETURN_IF_ERROR(h2d_copy("h2d c" + std::to_string(ci), w.dev, c.rest->resident(), bytes));
    STRATA_RETURN_IF_ERROR(ctx.h2d->record(*w.ready));
    st().bytes_h2d += bytes;
    return Status::ok();
  }
  // A read already staged by prefetch, else one started now.
  Staging* sb = staged(ci);
  if (sb == nullptr) {
    if (for_prefetch) {
      sb = staging_for(ci);
      if (sb == nullptr) return internal_error("prefetch of chunk " + std::to_string(ci) + ": no free staging buffer");
      STRATA_RETURN_IF_ERROR(claim(*sb));
    } else {
      STRATA_ASSIGN_OR_RETURN(sb, take_staging(&st().stall_fetch_s));
    }
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
  }
  sb->loading_work = wi;
  w.loading = sb;
  if (!for_prefetch || !cfg().overlap) return finish_load(w);
  return Status::ok();
}

Status ParamCache::State::ensure_loaded(uint32_t ci, const std::string& name) {
  ChunkRest& c = chunks[ci];
  if (sched() != nullptr) {
    if (sched()->on_fetch(ci) == offload::PrefetchScheduler::Seen::kOrderChanged) {
      ++st().order_changes;
      if (st().order_changes == 1)
        ctx.log("fetch order changed (" + sched()->last_change() +
                "): fetching on demand for the rest of this micro-batch and recording the new order (logged once; "
                "stats count further changes)");
    }
  }
  if (c.work >= 0) {
    WorkBuffer& w = work[static_cast<size_t>(c.work)];
    if (w.prefetched) {
      ++st().prefetch_hits;
      w.prefetched = false;
    }
    return finish_load(w);
  }
  const int pick = pick_work(ci, false);
  if (pick < 0) {
    std::string held;
    for (const WorkBuffer& w : work) {
      for (uint32_t q : ctx.layout->chunks()[static_cast<size_t>(w.chunk)].params)
        if (fetches[q] > 0) held += (held.empty() ? "'" : ", '") + ctx.layout->params()[q].name + "'";
    }
    return failed_precondition("fetch of '" + name + "': all " + std::to_string(work.size()) +
                               " device working buffers (strata.live_chunks) hold fetched params (" + held +
                               "); release params before fetching more, or raise strata.live_chunks");
  }
  ++st().demand_loads;
  return load(pick, ci, false);
}

// Two levels: chunks that can get a device buffer are loaded into it (H2D, after an NVMe read
// for NVMe-resident ones); NVMe-resident chunks further ahead are read into pinned staging
// buffers (offload_param.buffer_count) so that their H2D can start as soon as a buffer frees up.
// A staging buffer keeps its copy after the H2D (the forward's last chunks are the backward's
// first); a read ahead takes an idle buffer, else the copy needed last if later than its own.
Status ParamCache::State::prefetch() {
  if (!cfg().overlap || sched() == nullptr || !sched()->following() || work.empty()) return Status::ok();
  STRATA_RETURN_IF_ERROR(pump_loads());
  bool device_full = false;
  for (uint32_t ci : sched()->upcoming(cfg().prefetch_bucket_size)) {
    const ChunkRest& c = chunks[ci];
    if (c.work >= 0) continue;
    const bool nvme = c.geom.tier == Tier::kNvme && !gathers();  // gathers read their shard themselves
    if (!device_full) {
      const int w = nvme && staged(ci) == nullptr && staging_for(ci) == nullptr ? -1 : pick_work(ci, true);
      const int old = w >= 0 ? work[static_cast<size_t>(w)].chunk : -1;
      const size_t freed = old >= 0 ? chunks[static_cast<size_t>(old)].geom.rest_numel : 0;
      if (w >= 0 && resident_elems() - freed + c.geom.rest_numel <= cfg().max_live_parameters) {
        ++st().prefetches;
        STRATA_RETURN_IF_ERROR(load(w, ci, true));
        continue;
      }
      device_full = true;  // later chunks are needed later still: no buffer for them either
    }
    if (!nvme || staged(ci) != nullptr) continue;
    Staging* sb = staging_for(ci);
    if (sb == nullptr) break;  // every buffer holds a chunk needed sooner
    STRATA_RETURN_IF_ERROR(claim(*sb));
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
  }
  return Status::ok();
}

// Stage 3 across ranks: this rank's bit16 shard is gathered with the other ranks' — on the device
// straight into the working buffer, or from the host / NVMe into pinned host memory and copied
// to the working buffer. Synchronous up to that copy, so that every rank issues its gathers in
// the order of its (identical) loads.
Status ParamCache::State::gather_into(WorkBuffer& w, uint32_t ci) {
  ChunkRest& c = chunks[ci];
  const void* send = c.rest->resident();
  const Clock::time_point t0 = Clock::now();
  if (c.geom.tier == Tier::kDevice) {
    // Shards on the device gather straight into the working buffer, after whatever the h2d
    // stream holds (the caller's kernels still reading the buffer's old chunk, on a GPU).
    STRATA_RETURN_IF_ERROR(engine::device_collective(*ctx.dev, *ctx.h2d, [&](void* s) {
      return ctx.comm->all_gather(c.rest->resident(), w.dev, c.geom.shard, comm::Elem::kBF16, s);
    }));
    st().allgather_s += seconds_since(t0);
    st().bytes_allgather += c.geom.numel * 2;
    STRATA_RETURN_IF_ERROR(ctx.h2d->record(*w.ready));
    span(TraceLane::kEngine, "gather c" + std::to_string(ci), t0);
    return Status::ok();
  }
  if (c.geom.tier == Tier::kNvme) {
    STRATA_ASSIGN_OR_RETURN(Staging * sb, take_staging(&st().stall_fetch_s));
    STRATA_RETURN_IF_ERROR(start_read(*sb, ci));
    Status r = sb->io.wait();
    sb->clear_io();
    sb->staged_chunk = -1;
    if (!r.is_ok()) {
      c.work = -1;
      w.chunk = -1;
      return r;
    }
    send = sb->buf.data();
  }
  if (gather_pending) {
    STRATA_RETURN_IF_ERROR(wait_timed(*gather_copied, &st().stall_fetch_s));
    gather_pending = false;
  }
  const Clock::time_point tg = Clock::now();
  STRATA_RETURN_IF_ERROR(ctx.comm->all_gather_sync(send, gather_full.data(), c.geom.shard, comm::Elem::kBF16));
  st().allgather_s += seconds_since(tg);
  st().bytes_allgather += c.geom.numel * 2;
  STRATA_RETURN_IF_ERROR(h2d_copy("h2d c" + std::to_string(ci), w.dev, gather_full.data(), c.geom.numel * 2));
  STRATA_RETURN_IF_ERROR(ctx.h2d->record(*gather_copied));
  gather_pending = true;
  STRATA_RETURN_IF_ERROR(ctx.h2d->record(*w.ready));
  st().bytes_h2d += c.geom.numel * 2;
  span(TraceLane::kEngine, "gather c" + std::to_string(ci), t0);
  return Status::ok();
}

}  // namespace strata::engine
