// Engine::Impl: the engine's state, shared by engine.cpp (create, register, prepare), 
// engine_params.cpp (fetch, release, gradient buckets) and engine_step.cpp (the optimizer step).
// Internal to src/engine.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "kernels/cpu/kernel_types.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "offload/prefetch_scheduler.h"
#include "src/engine/chunk_layout.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/engine_seams.h"
#include "src/engine/optimizer_runner.h"
#include "comm/communicator.h"
#include "src/engine/loss_scaler.h"
#include "src/engine/trace.h"
#include "src/engine/weights_export.h"
#include "src/optim/optimizer.h"

namespace strata::engine {

// One chunk's arrays besides the optimizer's (OptimizerRunner). The fp32 gradient holds this
// rank's shard of the chunk (the whole chunk with one rank, or at stage 0).
struct ChunkState {
  ChunkPlacement at;
  size_t numel = 0;        // the chunk, padded
  size_t shard = 0;        // owned shard, elements
  size_t shard_begin = 0;  // owned shard's first element in the chunk
  size_t rest_numel = 0;   // bit16 elements kept at rest (the chunk, or the shard at stage 3)
  // bit16 params at rest: device (p16_dev), host (p16_host) or NVMe (key "c<i>.p16").
  void* p16_dev = nullptr;
  offload::AlignedBuffer p16_host;
  // fp32 gradient of the shard, on the optimizer's side (device or host).
  void* grad_dev = nullptr;
  offload::AlignedBuffer grad_host;
  std::vector<uint32_t> params;  // indices, in layout order
  int work = -1;    // working buffer holding the chunk (offloaded params), -1 if none
  int bucket = -1;  // gradient bucket open for this chunk in the current micro-batch, -1 if none
  size_t grads_in_micro = 0;  // its params' gradients handed over since the last step call
};

struct ParamState {
  int fetches = 0;               // outstanding fetches (fetch nests, release undoes one)
  bool fetched_in_micro = false; // fetched at least once since the last step call
  bool grad_in_micro = false;    // its gradient was handed over since the last step call
};

// A device buffer holding one chunk's bit16 params while in use (when params rest off the device).
struct WorkBuffer {
  void* dev = nullptr;
  int chunk = -1;   // -1: empty
  int pins = 0;     // outstanding fetches of params in it
  uint64_t last_use = 0;
  std::unique_ptr<offload::Event> ready;  // the copy that filled it
  struct Staging* loading = nullptr;      // NVMe read in flight into this staging buffer; H2D follows
  bool prefetched = false;                // filled ahead of need and not fetched yet
};

// A device bit16 gradient bucket: gradients of one chunk are copied in as they arrive; when the
// chunk's last gradient of the micro-batch arrived (or the bucket is needed) it is flushed: copied
// to its pinned landing buffer (host-side fp32 gradient) or accumulated on the device.
struct Bucket {
  enum class State { kFree, kOpen, kInFlight } state = State::kFree;
  void* dev = nullptr;
  offload::AlignedBuffer landing;  // pinned host landing buffer (host-side gradients only)
  int chunk = -1;
  std::vector<uint32_t> params;    // params whose gradient is in the bucket
  uint64_t opened = 0;
  std::unique_ptr<offload::Event> done;  // the flush finished
};

// A pinned bit16 buffer between a host optimizer or NVMe and the device, with the event of the
// last copy that read it.
struct Staging {
  offload::AlignedBuffer buf;
  std::unique_ptr<offload::Event> copied;
  bool pending = false;   // a copy reading it may still run
  offload::IoHandle io;   // an NVMe read into it or write from it (valid while in flight)
  int loading_work = -1;  // the working buffer whose NVMe load reads into it, -1 if none
  int put_chunk = -1;     // the chunk whose bit16 params it is writing to NVMe, -1 if none
  int staged_chunk = -1;  // the chunk whose bit16 params it holds or is reading (prefetch), -1 if none
};

// "[64, 32]"
std::string shape_string(const std::vector<int64_t>& shape);



struct Engine::Impl {
  // Data-parallel ranks (EngineOptions::comm): refused combinations, per-rank NVMe paths; the
  // same params on every rank and rank 0's initial values; the cycle's gradients summed.
  int world() const;
  int rank() const;
  Status check_ranks();
  Status agree_on_params();
  // ZeRO stage 1 / 2 across ranks: the layout splits every chunk into world() shards; this rank
  // keeps the fp32 gradient and the optimizer state of its shard only.
  bool sharded() const { return layout != nullptr && layout->world() > 1; }
  // ZeRO stage 3 across ranks: only the bit16 shard rests on this rank; every use of a chunk
  // all-gathers it into a working buffer. The ranks must issue those gathers in the same order,
  // so every load decision is made in lockstep: from the (identical) fetch sequence and buffer
  // state, never from whether a copy or read happens to have finished.
  bool gathers() const { return sharded() && cfg.placement.stage == 3; }
  // Shard of chunk ci gathered from every rank into working buffer w (the H2D copy queued).
  Status gather_into(WorkBuffer& w, uint32_t ci);
  std::vector<float> rs_full;  // a bucket's span of gradients, fp32, for the cross-rank sum (host side)
  void* rs_dev = nullptr;      // the same on the device (gradients beside a device optimizer)
  // A collective on buffers the engine's stream `s` writes or reads: MPI (host-emulated device)
  // waits for the stream first, NCCL queues it on the stream; either way it has completed when
  // this returns.
  Status device_collective(offload::Stream& s,
                           const std::function<StatusOr<std::unique_ptr<comm::Work>>(void* native_stream)>& issue);
  // Sums a bucket's gradients (bit16, the chunk's layout at `bits`) over the ranks and adds this
  // rank's shard to `acc` (the chunk's fp32 gradient shard).
  Status reduce_bucket_shard(const Bucket& bk, const ChunkState& c, const uint8_t* bits, float* acc);
  // The same for a bucket whose chunk's fp32 gradient shard is on the device, on `compute`.
  Status reduce_bucket_shard_device(const Bucket& bk, ChunkState& c);
  // Every chunk's bit16 params from the ranks' updated shards (after the step).
  Status all_gather_params();
  Status read_shard_master(const ParamSlot& slot, float* dst);
  Status all_reduce_grads();
  // Starts the all-reduce of every ready chunk whose buckets have landed, and advances those in
  // flight; never blocks.
  Status progress_reduces();
  Status start_reduce(uint32_t chunk);
  Impl(const EngineConfig& c, EngineOptions o);

  EngineConfig cfg;
  EngineOptions opts;
  EngineSeams seams;
  std::unique_ptr<OptimizerRunner> runner;  // the optimizer and its arrays (optimizer_runner.h)
  DType dtype = DType::kBF16;
  LossScaler scaler;
  std::unique_ptr<offload::Device> dev;
  std::unique_ptr<DeviceOps> ops;
  std::unique_ptr<offload::Stream> h2d, d2h, compute;
  std::unique_ptr<offload::Event> user_ready, copy_done;
  const kernels::KernelTable* k = nullptr;
  tbb::task_arena arena;

  struct Pending {
    ParamSpec spec;
    DType dtype;
    std::vector<uint8_t> init;  // empty: strata initialises
  };
  std::vector<Pending> pending;
  std::unordered_map<std::string, uint32_t> pending_index;

  bool prepared = false;
  std::unique_ptr<ChunkLayout> layout;
  Plan plan;
  std::vector<ChunkState> chunks;
  std::vector<ParamState> params;
  std::vector<WorkBuffer> work;
  std::vector<Bucket> buckets;
  // DDP: chunks whose gradients of the cycle are complete, waiting for their buckets to land
  // (reduce_ready), and the chunks' all-reduces already in flight during backward.
  std::vector<uint32_t> reduce_ready;
  std::vector<std::pair<uint32_t, std::unique_ptr<comm::Work>>> reduces;
  std::vector<Staging> param_staging;
  size_t next_staging = 0;
  // gathers() of shards resting on the host / NVMe: the gathered chunk (pinned), the last H2D
  // copy out of it.
  offload::AlignedBuffer gather_full;
  std::unique_ptr<offload::Event> gather_copied;
  bool gather_pending = false;
  void* scratch = nullptr;
  std::map<std::string, std::unique_ptr<offload::NvmeStore>> stores;  // by directory
  offload::NvmeStore* opt_store = nullptr;  // handed to the runner
  offload::NvmeStore* param_store = nullptr;

  // Offloaded params with overlap only: one recorded fetch order for training micro-batches, one
  // for evaluation passes (begin_eval / end_eval), so that evaluation does not disturb training's.
  std::unique_ptr<offload::PrefetchScheduler> train_sched, eval_sched;
  bool in_eval = false;
  offload::PrefetchScheduler* sched() const { return in_eval ? eval_sched.get() : train_sched.get(); }
  void* last_native = nullptr;  // the caller's stream of the last fetch: reused buffers wait for it
  std::unique_ptr<Tracer> tracer;
  Clock::time_point last_return{};  // when the last engine call returned (host-program lane)
  EngineStats st;
  uint64_t clock = 0;
  int64_t micro = 0;
  int64_t opt_step = 0;

  void log(const std::string& line) const;
  void trace_span(TraceLane lane, std::string name, Clock::time_point b, Clock::time_point e) {
    if (tracer) tracer->span(lane, std::move(name), b, e);
  }
  // A copy on stream s, timed on `lane` when tracing (timestamps from host functions around it).
  Status traced_copy(offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src, size_t bytes,
                     offload::CopyKind kind);
  // A completion callback for NvmeStore that draws the I/O on `lane` (empty when not tracing).
  std::function<void()> io_span(TraceLane lane, std::string name) {
    if (!tracer) return {};
    return [this, lane, name = std::move(name), t0 = Clock::now()] { trace_span(lane, name, t0, Clock::now()); };
  }
  void call_begin(const char* what);  // host-program span since the last call returned
  void call_end() { last_return = Clock::now(); }
  size_t bit16_bytes(size_t n) const { return n * 2; }
  static std::string key(size_t chunk, const char* what) { return "c" + std::to_string(chunk) + "." + what; }
  const ParamSlot* find(const std::string& name) const { return layout->find(name); }
  StatusOr<uint32_t> param_index(const std::string& name, const char* call) const;

  // engine.cpp
  Status allocate_all();
  Status write_initial_values();
  Status nvme_put(offload::NvmeStore* s, const std::string& k, const offload::AlignedBuffer& b, size_t bytes);
  Status nvme_get(offload::NvmeStore* s, const std::string& k, offload::AlignedBuffer& b, size_t bytes);
  Status free_all();
  Status synchronize_streams();

  // engine_params.cpp
  StatusOr<void*> fetch(const std::string& name, void* native_stream);
  Status release(const std::string& name);
  Status grad(const std::string& name, const void* g, DType dtype, size_t numel, void* native_stream);
  // [first, last) element of the chunk that the bucket's params cover (first > last when empty).
  std::pair<size_t, size_t> bucket_span(const Bucket& bk) const;
  Status flush(int b);             // open -> in flight
  Status drain(int b);             // in flight -> free (waits, accumulates host-side)
  Status drain_all();
  StatusOr<int> acquire_bucket(uint32_t chunk);
  StatusOr<Staging*> take_staging(double* stall);  // the next staging buffer, once idle
  Status wait_timed(offload::Event& e, double* counter);

  // checkpoint.cpp
  Status save(const std::string& root, const std::string& tag);
  Status prepare_save_dir(const std::string& root, const std::string& tag);
  Status load(const std::string& root, const std::string& tag);
  Status export_weights(const std::string& out_dir, const ckpt::ExportOptions& options);
  Status quiet_for_io(const char* call);  // no param fetched; every copy and I/O finished
  // Chunk ci's optimizer arrays (opt[0 .. num_arrays)) and bit16 params to / from host memory.
  Status pull_chunk(uint32_t ci, float* const* opt, uint16_t* p16);
  Status push_chunk(uint32_t ci, const float* const* opt, const uint16_t* p16);
  Status quiesce_io();  // the runner's NVMe I/O and the param staging reads / writes finished
  void hook(const std::string& point) const;
  Status read_master_into(const ParamSlot& slot, float* dst);  // engine idle

  // prefetch.cpp: working buffers for offloaded params, filled on demand or ahead of need.
  Status ensure_loaded(uint32_t ci, const std::string& name);  // ci in a working buffer, its copy queued
  int pick_work(uint32_t ci, bool for_prefetch);
  Status load(int w, uint32_t ci, bool for_prefetch);   // false status only on errors; may start NVMe read
  Status finish_load(WorkBuffer& w);                    // NVMe read done -> queue the H2D copy
  Status pump_loads();                                  // queue H2D for NVMe reads that finished
  Status prefetch();                                    // follow the trace ahead of the caller
  Staging* idle_staging();                              // a staging buffer nothing uses, else nullptr
  Staging* staged(uint32_t ci);                         // the staging buffer holding / reading chunk ci
  Status start_read(Staging& sb, uint32_t ci);          // NVMe read of chunk ci's bit16 params into sb
  void drop_staging(Staging& sb);                       // forgets a staged read (waits for it first)
  void on_pass_end();                                   // a micro-batch ended (step)
  size_t resident_elems() const;
  size_t effective_next_use(uint32_t ci) const;

  // engine_step.cpp
  StatusOr<StepResult> step(double lr);
  struct GradNorm {
    double sumsq = 0;
    bool finite = true;
  };
  Status check_step_call() const;  // no evaluation pass open, no param fetched
  void end_micro();                // counters and per-micro-batch flags
  Status gather_grads();           // buckets drained, replicated gradients all-reduced
  StatusOr<GradNorm> grad_norm();
  StatusOr<StepResult> skip_step(StepResult r, Clock::time_point t0);
  Status apply_update(const optim::StepCoeffs& coeffs);
  Status zero_grads();
  int consecutive_skips = 0;                  // skips that could not help, in a row (max_consecutive_skips)
  StatusOr<std::string> first_nonfinite_grad();  // "in 'name' (element i of [shape])"; collective across ranks
  Status check_masters();                     // fp32 masters after an update: an error naming the first bad chunk
  Status nonfinite_masters(uint32_t chunk) const;
  Status retire_loads();                      // working buffers emptied, their loads finished
  Status after_step(const StepResult& r);     // prefetch for the next micro-batch, summary line
  Clock::time_point created_at = Clock::now(), summary_at{};
  EngineStats summary_st;                     // stats at the last summary
  bool boundary_micro() const { return (micro + 1) % cfg.gradient_accumulation_steps == 0; }
  // The sink the runner's update writes the new bit16 values through (engine_step.cpp).
  class Bit16Sink;
};

}  // namespace strata::engine
