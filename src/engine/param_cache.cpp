// ParamCache: allocation, initial values, fetch / release, the step's updated params, checkpoint
// reads and writes (the loads themselves are in param_loads.cpp).
#include "src/engine/param_cache.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "src/engine/param_cache_state.h"

namespace strata::engine {

ParamCache::ParamCache() = default;
ParamCache::~ParamCache() { (void)free(); }

Status ParamCache::allocate(const Context& ctx, std::vector<Chunk> chunks) {
  s_ = std::make_unique<State>();
  State& m = *s_;
  m.ctx = ctx;
  const PlacementConfig& pc = ctx.cfg->placement;
  size_t max_chunk = 0;
  for (const Chunk& c : chunks) max_chunk = std::max(max_chunk, c.numel);
  const int staging = pc.offload_param == OffloadTarget::kNvme                           ? pc.param_buffer_count
                      : (pc.offload_param == OffloadTarget::kNone && ctx.host_optimizer) ? kParamOutStaging
                                                                                         : 0;
  m.staging.resize(static_cast<size_t>(staging));
  for (Staging& sb : m.staging) {
    STRATA_ASSIGN_OR_RETURN(sb.buf, offload::AlignedBuffer::create(max_chunk * 2, ctx.pin));
    STRATA_ASSIGN_OR_RETURN(sb.copied, ctx.dev->create_event());
  }
  m.chunks.resize(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    State::ChunkRest& c = m.chunks[i];
    c.geom = chunks[i];
    const ArraySite site{
        ctx.dev, ctx.compute, ctx.ops, ctx.pin, ctx.store, m.staging.empty() ? nullptr : &m.staging[0].buf, ctx.stats};
    STRATA_ASSIGN_OR_RETURN(c.rest,
                            make_array(c.geom.tier, site, m.key(static_cast<uint32_t>(i)), c.geom.rest_numel * 2));
  }
  if (pc.offload_param != OffloadTarget::kNone || m.gathers()) {
    m.work.resize(static_cast<size_t>(pc.live_chunks));
    for (WorkBuffer& w : m.work) {
      STRATA_ASSIGN_OR_RETURN(w.dev, ctx.dev->allocate(max_chunk * 2));
      STRATA_ASSIGN_OR_RETURN(w.ready, ctx.dev->create_event());
    }
  }
  if (m.gathers() && pc.offload_param != OffloadTarget::kNone) {
    STRATA_ASSIGN_OR_RETURN(m.gather_full, offload::AlignedBuffer::create(max_chunk * 2, ctx.pin));
    STRATA_ASSIGN_OR_RETURN(m.gather_copied, ctx.dev->create_event());
  }
  STRATA_ASSIGN_OR_RETURN(m.user_ready, ctx.dev->create_event());
  m.fetches.assign(ctx.layout->params().size(), 0);
  if (!m.work.empty() && ctx.cfg->overlap) {
    std::vector<size_t> elems;
    for (const State::ChunkRest& c : m.chunks) elems.push_back(c.geom.rest_numel);
    m.train_sched = std::make_unique<offload::PrefetchScheduler>(elems);
    m.eval_sched = std::make_unique<offload::PrefetchScheduler>(std::move(elems));
  }
  return Status::ok();
}

Status ParamCache::free() {
  if (!s_) return Status::ok();
  Status first = quiesce();
  auto keep = [&first](Status s) {
    if (first.is_ok() && !s.is_ok()) first = std::move(s);
  };
  for (State::ChunkRest& c : s_->chunks)
    if (c.rest) keep(c.rest->release());
  for (WorkBuffer& w : s_->work) keep(s_->ctx.dev->free(std::exchange(w.dev, nullptr)));
  s_.reset();
  return first;
}

bool ParamCache::gathers() const { return s_->gathers(); }

Status ParamCache::init(uint32_t ci, const void* bit16) {
  const State::ChunkRest& c = s_->chunks[ci];
  return c.rest->write(0, bit16, c.geom.rest_numel * 2);
}

Status ParamCache::read_shard(uint32_t ci, uint16_t* dst) {
  const State::ChunkRest& c = s_->chunks[ci];
  return c.rest->read(s_->rest_off(ci) * 2, dst, c.geom.shard * 2);
}

Status ParamCache::write_shard(uint32_t ci, const uint16_t* src) {
  const State::ChunkRest& c = s_->chunks[ci];
  return c.rest->write(s_->rest_off(ci) * 2, src, c.geom.shard * 2);
}

void* ParamCache::resident(uint32_t ci) const {
  const State::ChunkRest& c = s_->chunks[ci];
  return c.geom.tier == Tier::kDevice && !s_->gathers() ? c.rest->resident() : nullptr;
}

Status ParamCache::State::wait_timed(offload::Event& e, double* counter) {
  if (e.query()) return e.synchronize();
  const Clock::time_point t0 = Clock::now();
  Status s = e.synchronize();
  *counter += seconds_since(t0);
  return s;
}

StatusOr<ParamCache::Staging*> ParamCache::State::take_staging(double* stall) {
  Staging& s = staging[next_staging];
  next_staging = (next_staging + 1) % staging.size();
  if (s.loading_work >= 0) STRATA_RETURN_IF_ERROR(finish_load(work[static_cast<size_t>(s.loading_work)]));
  if (s.pending) {
    STRATA_RETURN_IF_ERROR(wait_timed(*s.copied, stall));
    s.pending = false;
  }
  const Clock::time_point t0 = Clock::now();
  const bool busy = s.io.valid() && !s.io.done();
  Status r = drop_staging(s);  // a write-back's error is the step's; a read's data is not used
  if (busy) {
    *stall += seconds_since(t0);
    span(TraceLane::kEngine, "staging waits for its I/O", t0);
  }
  STRATA_RETURN_IF_ERROR(r);
  return &s;
}

StatusOr<ParamCache::Fetched> ParamCache::fetch(uint32_t ci, const std::string& name, void* native) {
  State& m = *s_;
  State::ChunkRest& c = m.chunks[ci];
  if (c.geom.tier == Tier::kDevice && !m.gathers())
    return Fetched{static_cast<uint8_t*>(c.rest->resident()), nullptr};  // refreshed by the last step, which finished
  if (native != nullptr) m.last_native = native;
  STRATA_RETURN_IF_ERROR(m.ensure_loaded(ci, name));
  WorkBuffer& w = m.work[static_cast<size_t>(c.work)];
  w.last_use = ++m.clock;
  return Fetched{static_cast<uint8_t*>(w.dev), w.ready.get()};
}

void ParamCache::pin(uint32_t pi) {
  State& m = *s_;
  const State::ChunkRest& c = m.chunks[m.ctx.layout->params()[pi].chunk];
  if (c.work >= 0) ++m.work[static_cast<size_t>(c.work)].pins;
  ++m.fetches[pi];
}

Status ParamCache::unpin(uint32_t pi) {
  State& m = *s_;
  --m.fetches[pi];
  const State::ChunkRest& c = m.chunks[m.ctx.layout->params()[pi].chunk];
  if (c.work >= 0 && --m.work[static_cast<size_t>(c.work)].pins == 0) return m.prefetch();
  return Status::ok();
}

int ParamCache::fetches(uint32_t pi) const { return s_->fetches[pi]; }
Status ParamCache::prefetch() { return s_->prefetch(); }

void ParamCache::set_eval(bool eval) {
  if (!eval && s_->eval_sched) s_->eval_sched->end_pass();
  s_->in_eval = eval;
}

void ParamCache::end_pass() {
  if (s_->train_sched) s_->train_sched->end_pass();
}

Status ParamCache::retire_loads() {
  State& m = *s_;
  Status first;
  for (WorkBuffer& w : m.work) {
    w.loading = nullptr;
    w.chunk = -1;
    w.prefetched = false;
  }
  // Reads into staging (for working buffers or staged ahead) hold values the step is about to change.
  for (Staging& s : m.staging) {
    if (s.loading_work < 0 && s.staged_chunk < 0) continue;
    if (s.io.valid()) {
      Status r = s.io.wait();
      if (first.is_ok() && !r.is_ok()) first = std::move(r);
    }
    s.clear_io();
    s.loading_work = s.staged_chunk = -1;
  }
  for (State::ChunkRest& c : m.chunks) c.work = -1;
  if (Status r = m.ctx.h2d->synchronize(); first.is_ok() && !r.is_ok()) first = std::move(r);
  for (Staging& s : m.staging) s.pending = false;
  return first;
}

// A finished read stays staged for its working buffer; a failed one is forgotten with its buffer's chunk.
Status ParamCache::quiesce() {
  State& m = *s_;
  Status first;
  for (Staging& sb : m.staging) {
    if (!sb.io.valid()) continue;
    Status r = sb.io.wait();
    sb.clear_io();
    if (r.is_ok()) continue;
    if (sb.loading_work >= 0) {
      WorkBuffer& w = m.work[static_cast<size_t>(sb.loading_work)];
      if (w.chunk >= 0) m.chunks[static_cast<size_t>(w.chunk)].work = -1;
      w.chunk = -1;
      w.loading = nullptr;
      w.prefetched = false;
    }
    sb.loading_work = sb.staged_chunk = -1;
    if (first.is_ok()) first = std::move(r);
  }
  return first;
}

Status ParamCache::publish_shards() {
  State& m = *s_;
  if (!m.ctx.sharded || m.gathers()) return Status::ok();  // stage 3: the updated shard is all that rests here
  const Clock::time_point t0 = Clock::now();
  std::vector<std::unique_ptr<comm::Work>> inflight;
  for (State::ChunkRest& c : m.chunks) {
    // Stage 1 / 2 keep the whole chunk at rest (device or host); this rank's shard is fresh.
    auto* rest = static_cast<uint8_t*>(c.rest->resident());
    STRATA_ASSIGN_OR_RETURN(auto w, m.ctx.comm->all_gather(rest + c.geom.shard_begin * 2, rest, c.geom.shard,
                                                           comm::Elem::kBF16, m.ctx.compute->native_handle()));
    inflight.push_back(std::move(w));
    m.st().bytes_allgather += c.geom.numel * 2;
  }
  for (auto& w : inflight) STRATA_RETURN_IF_ERROR(w->wait());
  m.st().allreduce_s += seconds_since(t0);
  return Status::ok();
}

bool ParamCache::update_in_place(uint32_t ci, bool device_optimizer) const {
  return device_optimizer || s_->chunks[ci].geom.tier == Tier::kHost;
}

StatusOr<void*> ParamCache::update_out(uint32_t ci, bool device_optimizer) {
  State& m = *s_;
  State::ChunkRest& c = m.chunks[ci];
  m.out = nullptr;
  if (update_in_place(ci, device_optimizer))  // where the params rest
    return static_cast<void*>(static_cast<uint8_t*>(c.rest->resident()) + m.rest_off(ci) * 2);
  STRATA_ASSIGN_OR_RETURN(m.out, m.take_staging(&m.st().step_nvme_s));
  return m.out->buf.data();
}

Status ParamCache::update_written(uint32_t ci) {
  State& m = *s_;
  State::ChunkRest& c = m.chunks[ci];
  if (m.out == nullptr) return Status::ok();  // written in place
  Staging* sb = std::exchange(m.out, nullptr);
  if (c.geom.tier == Tier::kDevice) {
    STRATA_RETURN_IF_ERROR(m.ctx.h2d->copy(static_cast<uint8_t*>(c.rest->resident()) + m.rest_off(ci) * 2,
                                           sb->buf.data(), c.geom.shard * 2, offload::CopyKind::kHostToDevice));
    STRATA_RETURN_IF_ERROR(m.ctx.h2d->record(*sb->copied));
    sb->pending = true;
    m.st().bytes_h2d += c.geom.shard * 2;
    return Status::ok();
  }
  STRATA_ASSIGN_OR_RETURN(sb->io, c.rest->put_async(sb->buf, m.io_span(TraceLane::kNvmeWrite, "write " + m.key(ci))));
  sb->put_chunk = static_cast<int>(ci);
  // The buffer keeps the new values staged (until it is taken again): the chunks updated last are
  // the next forward's first, loaded from here rather than read back from NVMe. (Stage 3 across
  // ranks loads the gathered chunk, not this shard.)
  if (!m.gathers()) sb->staged_chunk = static_cast<int>(ci);
  if (m.cfg().overlap) return Status::ok();
  const Clock::time_point tn = Clock::now();
  Status r = sb->io.wait();
  sb->clear_io();
  m.st().step_nvme_s += seconds_since(tn);
  return r;
}

void ParamCache::step_done() {
  for (Staging& sb : s_->staging) sb.pending = false;
}

}  // namespace strata::engine
