// The training engine: owns the model state of registered parameters and decides where each piece
// lives (device, pinned host, NVMe) from the config and the budgets; hands bit16 parameters to the
// host program on the device (fetch / release), takes gradients back (grad), and runs the optimizer
// step (overflow check, dynamic loss scaling, global-norm clipping, the configured optimizer —
// Adam, AdamW, Lion or Adagrad — on the fp32 master state, bit16 params refreshed where they rest).
//
// Life cycle: create -> register every parameter -> prepare (explicit, or implied by the first
// fetch: builds the chunk layout, plans and prints the placement, allocates, writes the initial
// values) -> per micro-batch: fetch / release / grad ... then step -> destroy.
//
// One thread at a time per engine. Every call is synchronous unless it says otherwise; errors name
// the parameter and the rule that was broken, and leave the engine usable.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "src/common/dtype.h"
#include "src/common/status.h"
#include "src/engine/config.h"
#include "src/engine/placement.h"
#include "src/engine/weights_export.h"

namespace strata::comm {
class Communicator;
}  // namespace strata::comm

namespace strata::engine {

struct EngineSeams;  // test seams (src/engine/engine_seams.h): a device, a save hook, I/O faults

struct EngineOptions {
  // Receives the device choice, the placement plan and warnings, one message per call. Empty:
  // lines go to stderr prefixed "strata: ".
  std::function<void(const std::string&)> log;
  // Tests only: replaces parts of the engine's surroundings (copied by create; nullptr: none).
  const EngineSeams* seams = nullptr;
  // The ranks of data-parallel training (not owned; must outlive the engine). nullptr or a world
  // of one: a single rank. With more ranks (stage 0, DDP): every rank holds the whole state, the
  // gradients of each cycle are all-reduced (averaged) before the norm and the step, rank 0's
  // initial values are broadcast at prepare, and save writes from rank 0. With stage 1 or 2 each
  // rank keeps its shard of every chunk's fp32 gradient and optimizer state; with stage 3 also
  // only its shard of the bit16 params, gathered from the ranks whenever a chunk is loaded for a
  // fetch (docs/comm.md). CPU ranks: the MPI backend with the host-emulated device; GPU ranks:
  // the NCCL backend with a CUDA device (each rank's, made current before Engine::create).
  comm::Communicator* comm = nullptr;
  // Host memory the host program holds besides the engine (e.g. its activations on the CPU): the
  // plan counts it against the host budget and shows it, so a run that cannot fit is refused at
  // prepare, before either side allocates it.
  size_t host_program_bytes = 0;
};

struct StepResult {
  bool boundary = false;       // this call ended an accumulation cycle (gradient_accumulation_steps)
  bool applied = false;        // the optimizer ran (false: not a boundary, or skipped on overflow)
  bool overflow = false;       // the gradients held inf / NaN: the step was skipped
  double grad_norm = 0.0;      // global L2 norm of the unscaled, averaged gradients (before clipping)
  double clip_coef = 1.0;      // factor applied by gradient_clipping
  double loss_scale = 1.0;     // the scale for the next micro-batch's loss
  int64_t optimizer_step = 0;  // optimizer steps applied so far
  // The update during backward (strata.speculate): chunks updated as their gradients became final,
  // and of those the ones restored and updated again at the step (clipping triggered, or step's lr
  // was not the one set_lr announced); an overflow restores them all.
  int chunks_speculated = 0;
  int chunks_redone = 0;
};

struct EngineStats {
  std::array<size_t, kNumTiers> tier_bytes{};  // bytes the plan holds on device / host / nvme
  size_t device_peak_bytes = 0;                // the device arena's high-water mark
  // Collectives of data-parallel training, counted as the size of the buffers reduced / gathered
  // (the whole chunk); what one rank sends in a ring is (N-1)/N of that, twice for an all-reduce.
  size_t bytes_allreduce = 0;           // fp32 gradients all-reduced (every stage)
  size_t bytes_allgather = 0;           // bit16 params all-gathered (after the step at stage 1 / 2,
                                        // at every load of a chunk at stage 3)
  double allreduce_s = 0;               // host blocked in gradient all-reduces and the step's gathers
  double allgather_s = 0;               // host blocked in stage-3 gathers of params for fetch
  int64_t allreduce_early = 0;          // chunk all-reduces started during backward (overlapped)
  size_t bytes_h2d = 0, bytes_d2h = 0;  // over the host <-> device link
  size_t bytes_nvme_read = 0, bytes_nvme_write = 0;
  size_t bytes_param_nvme_read = 0;  // of bytes_nvme_read: bit16 params read back (prefetch timing decides)
  double stall_fetch_s = 0;          // host blocked in fetch waiting for params (copies, NVMe reads)
  double stall_grad_s = 0;           // host blocked in grad / step waiting for gradient copies
  double step_s = 0;                 // time in optimizer steps (boundary calls of step)
  double step_update_s = 0;          //   of which the optimizer update of host-resident state
  double step_nvme_s = 0;            //   of which NVMe reads and writes of the optimizer state / params
  int64_t micro_steps = 0, optimizer_steps = 0, skipped_steps = 0;
  int64_t bucket_flushes = 0;        // gradient buckets moved off the device
  int64_t early_flushes = 0;         //   of which before their chunk's gradients were complete (raise grad_buckets)
  int64_t prefetches = 0;            // chunk loads started ahead of need (following the recorded fetch order)
  int64_t prefetch_hits = 0;         //   of which were fetched before being evicted
  int64_t demand_loads = 0;          // chunk loads started by a fetch that found its chunk absent
  int64_t order_changes = 0;         // micro-batches whose fetch order left the recorded one
  int64_t chunks_speculated = 0;     // chunk updates during backward (StepResult), summed
  int64_t chunks_redone = 0;         //   of which restored and updated again at the step
  int64_t chunks_read_ahead = 0;     // NVMe chunks whose optimizer state was read before the step began
  int64_t chunks_checked_ahead = 0;  // of those, checksums checked before the step (counted as queued)
  size_t bytes_checkpoint = 0;       // written by save
  double loss_scale = 1.0;
  double last_grad_norm = 0.0;
};

class Engine {
 public:
  // Parses nothing: `config` is already parsed (parse_engine_config). Opens the device and logs
  // which one it uses.
  static StatusOr<std::unique_ptr<Engine>> create(const EngineConfig& config, EngineOptions options = {});
  ~Engine();

  // Registers a parameter. `init` (host memory, [numel] of init_dtype: fp32, bf16 or fp16) is
  // copied; nullptr asks strata to initialise it: N(0, 0.02^2) drawn from strata.seed and the name.
  // Only before prepare.
  Status register_param(const std::string& name, const std::vector<int64_t>& shape, DType init_dtype, const void* init);
  // Builds the layout, plans (refusing a plan that does not fit), logs the plan, allocates every
  // tier and writes the initial values. Idempotent.
  Status prepare();
  bool prepared() const;
  // The plan table (after prepare), and the plan itself (nullptr before prepare). With several
  // ranks, the bytes of this rank.
  std::string plan_table() const;
  const Plan* plan() const;

  // A device pointer to the param's full bit16 values, valid until its release. native_stream
  // nullptr: returns when the values are on the device. Otherwise (a cudaStream_t) returns at once
  // and makes native_stream wait for them. Fetching again before release nests.
  StatusOr<void*> fetch(const std::string& name, void* native_stream = nullptr);
  Status release(const std::string& name);
  // Hands over the gradient of a param fetched in this micro-batch: [numel] of the engine's bit16
  // dtype at `grad` (device memory; on the host-emulated device, host memory). native_stream
  // nullptr: the buffer may be reused when this returns. Otherwise the copy waits for the work so
  // far on native_stream and native_stream waits for the copy. Gradients add up across the
  // micro-batches of one accumulation cycle.
  Status grad(const std::string& name, const void* grad, DType dtype, size_t numel, void* native_stream = nullptr);
  // Brackets one evaluation pass (forward only: fetch / release, no grad, no step). Prefetch
  // records and follows the fetch order of evaluation passes apart from training micro-batches,
  // so interleaved validation does not look like a changed order. No param may be fetched.
  Status begin_eval();
  Status end_eval();
  // Ends a micro-batch; every gradient_accumulation_steps calls, runs the optimizer step with
  // learning rate `lr` (< 0: the config's). No param may be fetched.
  StatusOr<StepResult> step(double lr = -1.0);
  // The learning rate the next optimizer step will be given (< 0: the config's), so that chunks
  // updated during backward use it; without it they use the last step's. A step whose lr differs
  // redoes them (exact either way, slower). Call before the cycle's last backward.
  Status set_lr(double lr);
  // Waits for all outstanding copies, device work and NVMe write-backs of the last step.
  Status synchronize();
  // Writes the timeline so far to strata.trace (also done by the destructor).
  Status write_trace();

  // Checkpoints (format: docs/checkpoint.md). save writes <dir>/<tag> (tag "" : "step<N>") with
  // every fp32 master, moment and bit16 param, the step counters and the loss-scaler state: into
  // a temporary directory, fsync'd, renamed into place, then <dir>/latest names it. A crash at any
  // moment leaves the previous checkpoint loadable. Only at the end of an accumulation cycle,
  // with no param fetched. Synchronous.
  Status save(const std::string& dir, const std::string& tag = "");
  // Loads <dir>/<tag>, or with tag "" the checkpoint `dir` itself or the one <dir>/latest names.
  // Every registered param must be in it with the same shape (chunk size and placement may
  // differ) and the bit16 dtype must match; every checksum is verified before anything changes.
  Status load(const std::string& dir, const std::string& tag = "");
  // Writes the consolidated weights (fp32, bf16 or fp16, from the fp32 masters) to `dir`:
  // index.json + weights.bin, readable without strata (docs/checkpoint.md), or model.safetensors
  // (+ config.json) for the Python ecosystem (weights_export.h). Only into a new or empty
  // directory or over an earlier export. Across ranks every rank calls it and rank 0 writes.
  Status export_weights(const std::string& dir, DType dtype);
  Status export_weights(const std::string& dir, const ckpt::ExportOptions& options);

  // The device pointer to a param's bit16 values when they rest on the device for good (params
  // not offloaded, not a stage-3 shard across ranks): valid until the engine is destroyed and
  // rewritten in place by every step and load, so a framework can use it as the param's storage.
  // FAILED_PRECONDITION for a param that lives in working buffers (fetch it instead).
  StatusOr<void*> map_param(const std::string& name);

  // The fp32 master values of a param (after prepare), into host memory dst[numel]. With ZeRO
  // shards across ranks it gathers them: every rank calls it for the same param.
  Status read_master(const std::string& name, float* dst, size_t numel);
  double loss_scale() const;
  int64_t optimizer_step() const;  // optimizer steps applied (restored by load)
  int64_t micro_steps() const;     // step calls so far, skipped cycles included (restored by load)
  DType param_dtype() const;
  EngineStats stats() const;
  const EngineConfig& config() const;
  std::string device_name() const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::engine
