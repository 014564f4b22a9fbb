// ParamCache's state and internal steps, shared by param_cache.cpp (allocation, fetch, the step's
// outputs, checkpoints) and param_loads.cpp (working buffers, prefetch, gathers). Internal.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "src/engine/array_home.h"
#include "src/engine/param_cache.h"

namespace strata::engine {

// A device buffer holding one chunk's bit16 params while in use (when params rest off the device).
struct ParamCache::WorkBuffer {
  void* dev = nullptr;
  int chunk = -1;  // -1: empty
  int pins = 0;    // outstanding fetches of params in it
  uint64_t last_use = 0;
  std::unique_ptr<offload::Event> ready;  // the copy that filled it
  Staging* loading = nullptr;             // NVMe read in flight into this staging buffer; H2D follows
  bool prefetched = false;                // filled ahead of need and not fetched yet
};

// A pinned bit16 buffer between a host optimizer or NVMe and the device, with the event of the
// last copy that read it.
struct ParamCache::Staging {
  offload::AlignedBuffer buf;
  std::unique_ptr<offload::Event> copied;
  bool pending = false;   // a copy reading it may still run
  offload::IoHandle io;   // an NVMe read into it or write from it (valid while in flight)
  int loading_work = -1;  // the working buffer whose NVMe load reads into it, -1 if none
  int put_chunk = -1;     // the chunk whose bit16 params it is writing to NVMe, -1 if none
  // The chunk whose bit16 params it holds or is reading, -1 if none: a read ahead, the step's
  // output, or a copy already loaded to the device and kept for its next use (until the step).
  int staged_chunk = -1;
  void clear_io() {
    io = offload::IoHandle();
    put_chunk = -1;
  }
};

struct ParamCache::State {
  Context ctx;
  struct ChunkRest {
    Chunk geom;
    std::unique_ptr<ArrayHome> rest;  // the bit16 params at rest (rest_numel x 2 bytes)
    int work = -1;                    // working buffer holding the chunk, -1 if none
  };
  std::vector<ChunkRest> chunks;
  std::vector<int> fetches;  // per param: outstanding fetches
  std::vector<WorkBuffer> work;
  std::vector<Staging> staging;
  size_t next_staging = 0;
  Staging* out = nullptr;  // the staging buffer of the chunk being updated
  // Stage-3 gathers of shards resting on the host / NVMe: the gathered chunk (pinned) and the
  // last H2D copy out of it.
  offload::AlignedBuffer gather_full;
  std::unique_ptr<offload::Event> gather_copied;
  bool gather_pending = false;
  std::unique_ptr<offload::Event> user_ready;
  // One recorded fetch order for training micro-batches, one for evaluation passes.
  std::unique_ptr<offload::PrefetchScheduler> train_sched, eval_sched;
  bool in_eval = false;
  void* last_native = nullptr;  // the caller's stream of the last fetch: reused buffers wait for it
  uint64_t clock = 0;

  const EngineConfig& cfg() const { return *ctx.cfg; }
  EngineStats& st() { return *ctx.stats; }
  bool gathers() const { return ctx.sharded && ctx.cfg->placement.stage == 3; }
  offload::PrefetchScheduler* sched() const { return in_eval ? eval_sched.get() : train_sched.get(); }
  size_t rest_off(uint32_t ci) const { return ctx.cfg->placement.stage == 3 ? 0 : chunks[ci].geom.shard_begin; }
  std::string key(uint32_t ci) const { return "c" + std::to_string(ci) + ".p16"; }
  void span(TraceLane lane, std::string name, Clock::time_point b) const {
    if (ctx.tracer) ctx.tracer->span(lane, std::move(name), b, Clock::now());
  }
  std::function<void()> io_span(TraceLane lane, std::string name) const {
    if (!ctx.tracer) return {};
    return [t = ctx.tracer, lane, name = std::move(name), t0 = Clock::now()] { t->span(lane, name, t0, Clock::now()); };
  }
  Status h2d_copy(std::string name, void* dst, const void* src, size_t bytes) {
    return traced_copy(ctx.tracer, *ctx.h2d, TraceLane::kH2D, std::move(name), dst, src, bytes,
                       offload::CopyKind::kHostToDevice);
  }
  Status wait_timed(offload::Event& e, double* counter);
  StatusOr<Staging*> take_staging(double* stall);  // the next staging buffer, once idle

  // param_loads.cpp
  Status ensure_loaded(uint32_t ci, const std::string& name);  // ci in a working buffer, its copy queued
  int pick_work(uint32_t ci, bool for_prefetch);
  Status load(int w, uint32_t ci, bool for_prefetch);
  Status finish_load(WorkBuffer& w);  // NVMe read done -> queue the H2D copy
  Status pump_loads();                // queue H2D for NVMe reads that finished
  Status prefetch();
  Staging* idle_staging();       // a staging buffer nothing uses, else nullptr
  Staging* staged(uint32_t ci);  // the staging buffer holding / reading chunk ci
  // A staging buffer for a read of chunk ci ahead of need: an idle one, else the one whose
  // landed copy is needed last, later than ci (Belady); nullptr if none. claim() empties it.
  Staging* staging_for(uint32_t ci);
  Status claim(Staging& sb);
  Status start_read(Staging& sb, uint32_t ci);
  // Forgets a staged copy or read (waits for its I/O first): the error of a write-back from it
  // is returned, a read's concerns no one (its data is not used).
  Status drop_staging(Staging& sb);
  size_t resident_elems() const;
  size_t effective_next_use(uint32_t ci) const;
  Status gather_into(WorkBuffer& w, uint32_t ci);
};

}  // namespace strata::engine
