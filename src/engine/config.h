// The engine's JSON configuration, in the keys a DeepSpeed user already has ("zero_optimization",
// "offload_optimizer", "offload_param", "aio", "fp16", "bf16", "optimizer", "gradient_clipping",
// "gradient_accumulation_steps", ...) plus a "strata" section for what DeepSpeed has no key for
// (device choice and budgets, chunk size). Unknown keys, wrong types and contradictions are
// errors that name the key by its full path. Parsing only: the engine applies it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "offload/aio_config.h"
#include "src/common/status.h"
#include "src/engine/placement.h"
#include "src/optim/optimizer.h"

namespace strata::engine {

enum class Precision { kBF16, kFP16 };

struct LossScaleConfig {         // "fp16": dynamic loss scaling unless loss_scale > 0
  double loss_scale = 0.0;       // 0: dynamic
  int initial_scale_power = 16;  // dynamic scale starts at 2^this
  int loss_scale_window = 1000;  // steps without overflow before the scale doubles
  int hysteresis = 2;            // overflows tolerated before the scale halves
  double min_loss_scale = 1.0;
};

struct OptimizerConfig {  // "optimizer": {"type": one of optim::registry(), "params": {...}}
  std::string type = "AdamW";
  optim::Hyper hyper;  // the type's defaults, then the keys given
};

struct EngineConfig {
  Precision precision = Precision::kBF16;
  LossScaleConfig loss_scale;
  OptimizerConfig optimizer;
  double gradient_clipping = 0.0;  // 0: off
  int gradient_accumulation_steps = 1;
  int64_t train_batch_size = 0;  // informational, as in DeepSpeed (0: unset)
  int64_t train_micro_batch_size_per_gpu = 0;
  PlacementConfig placement;  // zero_optimization.stage, offload_*.device / ratio / buffer_count,
                              // strata.live_chunks, strata.grad_buckets
  std::string optimizer_nvme_path, param_nvme_path;
  bool pin_memory = true;
  // Prefetch limits, in elements as in DeepSpeed: how far ahead of the fetch trace to load, how
  // many elements may sit in device working buffers at once, and how soon a chunk must be needed
  // again to be kept rather than evicted for a prefetch.
  size_t prefetch_bucket_size = 50'000'000;    // stage3_prefetch_bucket_size
  size_t max_live_parameters = 1'000'000'000;  // stage3_max_live_parameters
  size_t max_reuse_distance = 1'000'000'000;   // stage3_max_reuse_distance
  size_t reduce_bucket_size = 500'000'000;     // reduce_bucket_size
  offload::AioConfig aio;
  // "strata" section
  std::string device = "auto";            // auto | host | cuda
  size_t device_bytes = 0;                // 0: all free GPU memory (required for host)
  size_t host_bytes = 0;                  // 0: no limit set
  size_t chunk_bytes = size_t{64} << 20;  // bit16 bytes per chunk
  uint64_t seed = 0;
  bool overlap = true;     // prefetch, pipelined NVMe step, DDP all-reduce during backward (false: synchronous paths)
  std::string trace_path;  // Chrome trace-event JSON written here ("" : off)
  bool step_summary = false;  // log one summary line per optimizer step
  // Steps skipped in a row before step() stops with STRATA_ERR_NONFINITE: with bf16 (or a static
  // fp16 scale) every skip counts; with dynamic fp16 only skips at min_loss_scale.
  int max_consecutive_skips = 5;
  double comm_timeout_s = 0;  // seconds a collective may take (0: the communicator's own)
  bool nvme_checksum = true;  // xxh3 of every NVMe swap write, verified on every read
  // How NVMe swap files are rewritten every step: in place (1x disk; a failed write fails the step
  // naming the tensor, and the last checkpoint is the recovery point) or through A/B slots (2x
  // disk; every rewrite atomic, the previous content kept). "in_place" | "ab_slots".
  std::string nvme_rewrite = "in_place";
  // The engine's host threads (optimizer kernels, gradient accumulation, the norm): how many (0: one
  // per CPU of optimizer_cpus, or all cores) and which CPUs they run on ("" : any; "0-7,16").
  int optimizer_threads = 0;
  std::string optimizer_cpus;
  // The work queued beside the host program's calls (the update during backward, the checks of
  // NVMe state read ahead): "normal" (optimizer_threads threads at normal priority), "idle" (one
  // thread at idle priority, SCHED_IDLE: only CPU time no other thread wants; the step does what
  // is left of it) or "auto" (idle on the host-emulated device, whose kernels run on these CPUs;
  // normal with a CUDA device).
  std::string background_priority = "auto";
  // The optimizer step during backward (docs/architecture.md): each host-side chunk is updated as
  // soon as its gradients of the cycle are final, with the coefficients of the step that neither
  // clips nor overflows; the step commits those updates or restores and redoes them, bit-identical
  // to the synchronous step either way. speculation_bytes bounds the backups (0: automatic).
  // Off with speculate = false or overlap = false. Device-resident state too with
  // speculate_device (backups in device memory; off by default: on the device the update competes
  // with backward for memory bandwidth, and is redone whenever clipping triggers).
  bool speculate = true;
  bool speculate_device = false;
  size_t speculation_bytes = 0;
  // Where the fp32 gradients of NVMe-resident optimizer state rest: "auto" (host when the plan
  // fits the host budget, else NVMe), "host" or "nvme" (PlacementConfig::gradient_tier).
  std::string gradient_tier = "auto";
};

// Parses a whole config object. Missing keys keep the defaults above.
StatusOr<EngineConfig> parse_engine_config(std::string_view json_text);

}  // namespace strata::engine
