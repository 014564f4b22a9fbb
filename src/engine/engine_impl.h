// Engine::Impl: the engine's state, shared by engine.cpp (create, register, prepare),
// engine_params.cpp (fetch, release, grad), checkpoint.cpp and engine_step.cpp (the optimizer
// step). It composes the parts that own the model state: the ParamCache (bit16 params), the
// GradientPath (gradients) and the OptimizerRunner (the optimizer and its arrays).
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

#include "comm/communicator.h"
#include "kernels/cpu/kernel_types.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "src/engine/chunk_layout.h"
#include "src/engine/cpu_threads.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/engine_seams.h"
#include "src/engine/gradient_path.h"
#include "src/engine/loss_scaler.h"
#include "src/engine/optimizer_runner.h"
#include "src/engine/param_cache.h"
#include "src/engine/telemetry.h"
#include "src/engine/trace.h"
#include "src/engine/weights_export.h"
#include "src/optim/optimizer.h"

namespace strata::engine {

// One chunk's geometry and placement (its arrays belong to the parts: bit16 params to the
// ParamCache, the fp32 gradient to the GradientPath, the optimizer's arrays to the OptimizerRunner).
struct ChunkState {
  ChunkPlacement at;
  size_t numel = 0;              // the chunk, padded
  size_t shard = 0;              // owned shard, elements
  size_t shard_begin = 0;        // owned shard's first element in the chunk
  size_t rest_numel = 0;         // bit16 elements kept at rest (the chunk, or the shard at stage 3)
  std::vector<uint32_t> params;  // indices, in layout order
};

struct ParamState {               // (outstanding fetches: ParamCache::fetches)
  bool fetched_in_micro = false;  // fetched at least once since the last step call
  bool grad_in_micro = false;     // its gradient was handed over since the last step call
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
  Status read_shard_master(const ParamSlot& slot, float* dst);
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
  const kernels::KernelTable* k = nullptr;
  std::unique_ptr<CpuThreads> cpu;  // the engine's host threads (strata.optimizer_threads / _cpus)

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
  std::unique_ptr<ParamCache> cache;        // bit16 params at rest and in use (param_cache.h)
  std::unique_ptr<GradientPath> gradients;  // buckets, fp32 gradient shards, their reduction (gradient_path.h)
  void* scratch = nullptr;
  std::map<std::string, std::unique_ptr<offload::NvmeStore>> stores;  // by directory
  offload::NvmeStore* opt_store = nullptr;                            // handed to the runner
  offload::NvmeStore* param_store = nullptr;

  bool in_eval = false;  // between begin_eval and end_eval
  Telemetry telemetry;   // stats, the timeline, the step summary (telemetry.h)
  EngineStats& st = telemetry.stats();
  Tracer* tracer() const { return telemetry.tracer(); }
  int64_t micro = 0;
  int64_t opt_step = 0;
  double next_lr = -1;  // set_lr's, else the last step's (< 0: the config's)

  void log(const std::string& line) const;
  void trace_span(TraceLane lane, std::string name, Clock::time_point b, Clock::time_point e) {
    telemetry.span(lane, std::move(name), b, e);
  }
  // A copy on stream s, timed on `lane` when tracing.
  Status traced_copy(offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src, size_t bytes,
                     offload::CopyKind kind) {
    return engine::traced_copy(tracer(), s, lane, std::move(name), dst, src, bytes, kind);
  }
  // A completion callback for NvmeStore that draws the I/O on `lane` (empty when not tracing).
  std::function<void()> io_span(TraceLane lane, std::string name) {
    if (!tracer()) return {};
    return [this, lane, name = std::move(name), t0 = Clock::now()] { trace_span(lane, name, t0, Clock::now()); };
  }
  size_t bit16_bytes(size_t n) const { return n * 2; }
  static std::string key(size_t chunk, const char* what) { return "c" + std::to_string(chunk) + "." + what; }
  const ParamSlot* find(const std::string& name) const { return layout->find(name); }
  StatusOr<uint32_t> param_index(const std::string& name, const char* call) const;

  // engine.cpp
  Status allocate_all();
  Status write_initial_values();
  Status free_all();
  Status synchronize_streams();

  // engine_params.cpp
  StatusOr<void*> fetch(const std::string& name, void* native_stream);
  Status release(const std::string& name);
  Status grad(const std::string& name, const void* g, DType dtype, size_t numel, void* native_stream);

  // checkpoint.cpp
  Status save(const std::string& root, const std::string& tag);
  Status prepare_save_dir(const std::string& root, const std::string& tag);
  Status load(const std::string& root, const std::string& tag);
  Status export_weights(const std::string& out_dir, const ckpt::ExportOptions& options);
  Status quiet_for_io(const char* call);  // no param fetched; updates during backward undone; I/O finished
  // Chunk ci's optimizer arrays (opt[0 .. num_arrays)) and bit16 params to / from host memory.
  Status pull_chunk(uint32_t ci, float* const* opt, uint16_t* p16);
  Status push_chunk(uint32_t ci, const float* const* opt, const uint16_t* p16);
  Status quiesce_io();  // the runner's NVMe I/O and the param staging reads / writes finished
  void hook(const std::string& point) const;
  Status read_master_into(const ParamSlot& slot, float* dst);  // engine idle

  // engine_step.cpp
  StatusOr<StepResult> step(double lr);
  Status check_step_call() const;  // no evaluation pass open, no param fetched
  void end_micro();                // counters and per-micro-batch flags
  Status gather_grads();           // buckets drained, replicated gradients all-reduced
  StatusOr<StepResult> skip_step(StepResult r, Clock::time_point t0);
  Status apply_update(const optim::StepCoeffs& coeffs, StepResult& r);
  // 1 / (loss scale x accumulation x ranks in the sum): what turns the summed gradients into the mean.
  double grad_unscale() const;
  // The update during backward (ADR 0008): chunks whose gradients became final updated with the
  // constants of a step that neither clips nor overflows, and undone when that was not the step.
  bool speculating() const { return prepared && (plan.speculation_slots > 0 || plan.device_speculation_slots > 0); }
  // The last step clipped or overflowed: the next one likely will too, and a redo costs more than
  // waiting for the norm, so host chunks wait for it (NVMe state is still read ahead).
  bool speculation_paused = false;
  Status speculate_ready();
  Status restore_speculated();
  // The runner's counts into the stats (`undone`: every speculated chunk was restored).
  OptimizerRunner::SpecCounts count_speculation(OptimizerRunner::SpecCounts n, bool undone);
  int consecutive_skips = 0;  // skips that could not help, in a row (max_consecutive_skips)
  Status check_masters();     // fp32 masters after an update: an error naming the first bad chunk
  Status nonfinite_masters(uint32_t chunk) const;
  Status after_step(const StepResult& r);  // prefetch for the next micro-batch, summary line
  bool boundary_micro() const { return (micro + 1) % cfg.gradient_accumulation_steps == 0; }
  // The sink the runner's update writes the new bit16 values through (engine_step.cpp).
  class Bit16Sink;
};

}  // namespace strata::engine
