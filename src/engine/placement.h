// The placement planner: given the chunk layout, DeepSpeed-style offload settings and the byte
// budgets of each tier, decides where every array of every chunk lives, accounts every byte
// (working and staging buffers included), prints the plan as a table, and refuses a plan that
// cannot fit with a message naming the tier, what needs it, and how much is missing — before any
// training starts.
#pragma once

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include "src/common/status.h"
#include "src/common/units.h"
#include "src/engine/chunk_layout.h"

namespace strata::engine {

enum class Tier : int { kDevice = 0, kHost = 1, kNvme = 2 };
inline constexpr int kNumTiers = 3;

// DeepSpeed's offload_param.device / offload_optimizer.device.
enum class OffloadTarget { kNone, kCpu, kNvme };
StatusOr<OffloadTarget> parse_offload_target(const std::string& s);  // "none" | "cpu" | "nvme"

// What occupies memory, per tier.
enum class Use : int {
  kParams16 = 0,  // bit16 parameters at rest (full chunks; the owned shard at stage 3)
  kParamWork,     // device buffers for chunks in use when params rest elsewhere
  kParamStaging,  // pinned host buffers for params: NVMe <-> device, or host optimizer -> device
  kGradBuckets,   // device bit16 gradient buckets, streamed off as they fill
  kGrad32,        // fp32 gradient of the owned shard
  kOptimizer,     // the optimizer's fp32 arrays of the owned shard (master + state: 12 bytes / element for Adam, 8 for
                  // Lion / Adagrad)
  kOptStaging,    // pinned host buffers of the NVMe optimizer pipeline
  kGradStaging,   // pinned host buffers gradient buckets land in before fp32 accumulation
  kScratch,       // device scratch: partial sums of the gradient norm of device-resident chunks
  kHostProgram,   // host memory the host program holds besides the engine (activations), Budgets::host_program
  kSpecBackup,    // step slots: backups of chunks updated during backward (exact redo), NVMe state read
                  // ahead of the step (strata.speculation_bytes)
};
inline constexpr int kNumUses = 11;

// Partial-sum block of the CUDA gradient norm (kernels/cuda/grad_kernels.cu): the device scratch
// holds one double per block of the largest shard plus the result.
inline constexpr size_t kNormBlockElems = size_t{1} << 16;
inline size_t norm_scratch_bytes(size_t shard_numel) {
  return ((shard_numel + kNormBlockElems - 1) / kNormBlockElems + 1) * 8;
}
// Pinned buffers that carry updated bit16 params from a host optimizer to device-resident params
// (double-buffered: one is copied while the next is written).
inline constexpr int kParamOutStaging = 2;

struct PlacementConfig {
  int stage = 0;  // ZeRO stage 0..3 (stage 3 keeps only the bit16 shard at rest)
  OffloadTarget offload_param = OffloadTarget::kNone;
  OffloadTarget offload_optimizer = OffloadTarget::kNone;
  double optimizer_ratio = 1.0;       // offload_optimizer.ratio: share of chunks whose optimizer is offloaded
  int optimizer_buffer_count = 4;     // offload_optimizer.buffer_count: chunk-sized pipeline buffers (nvme)
  int param_buffer_count = 10;        // offload_param.buffer_count: chunk-sized staging buffers (nvme)
  int live_chunks = 2;                // device working buffers when params are offloaded
  int grad_buckets = 2;               // device gradient buckets
  size_t optimizer_state_bytes = 12;  // fp32 bytes per element of the optimizer's arrays (Optimizer::bytes_per_element)
  std::string optimizer_type = "AdamW";  // named in the plan's table
  size_t nvme_copies = 1;  // disk per NVMe array: 1 rewritten in place, 2 with A/B slots (strata.nvme_rewrite)
  // The optimizer step during backward (strata.speculate): host-side chunks are updated as their
  // gradients become final, each backed up first in one of a bounded number of slots (the
  // optimizer's arrays + the bit16 output of the largest shard) so that a redo is exact.
  // speculation_bytes 0: as many slots as there are such chunks, within half the host budget left.
  bool speculate = false;
  bool speculate_device = false;  // device-resident chunks too, backed up in device memory
  size_t speculation_bytes = 0;
  // Where the fp32 gradients of chunks whose optimizer state is on NVMe live (strata.gradient_tier):
  // host arrays (4 B / element), or NVMe — each chunk's gradient assembled in one of a few pinned
  // buffers, written when it is final and read back beside the state for the step, so that host
  // memory holds buffers only. kAuto: host when the plan fits the host budget, else NVMe. NVMe
  // gradients need gradient_accumulation_steps = 1 (accumulation keeps fp32 sums across
  // micro-batches) and no DDP (stage 0 across ranks all-reduces whole fp32 gradients).
  enum class GradTier { kAuto, kHost, kNvme };
  GradTier gradient_tier = GradTier::kAuto;
  int accumulation_steps = 1;  // gradient_accumulation_steps
  bool replicated = false;     // DDP: ZeRO stage 0 across ranks
};
// Pinned fp32 buffers that NVMe-resident gradients are assembled in (the buckets' chunks being
// drained, and the chunks whose write is in flight).
inline int grad_assembly_buffers(int grad_buckets) { return grad_buckets + 2; }
// One slot of the step during backward: every optimizer array and the bit16 output of a shard,
// and its fp32 gradient when gradients rest on NVMe (read beside the state read ahead).
inline size_t speculation_slot_bytes(size_t max_shard, size_t optimizer_state_bytes, bool nvme_grads = false) {
  return max_shard * (optimizer_state_bytes + 2 + (nvme_grads ? 4 : 0));
}

struct Budgets {
  size_t device_bytes = 0;
  size_t host_bytes = 0;
  size_t nvme_bytes = 0;    // free space strata may use under nvme_path
  size_t host_program = 0;  // host bytes the host program needs besides the engine, planned on the host tier
};

struct ChunkPlacement {
  Tier params16;   // where the bit16 parameters rest
  Tier optimizer;  // where master / m / v live and the optimizer step runs
  Tier grad32;     // where the fp32 gradient shard lives (beside the optimizer's input)
};

struct Plan {
  std::vector<ChunkPlacement> chunks;
  std::array<std::array<size_t, kNumUses>, kNumTiers> bytes{};  // bytes[tier][use]
  Budgets budgets;
  std::string optimizer = "AdamW";      // the optimizer whose state the kOptimizer row counts
  size_t speculation_slots = 0;         // backups of the step during backward (kSpecBackup), host memory
  size_t device_speculation_slots = 0;  // the same for device-resident state, in device memory
  bool nvme_grads = false;              // some chunk's fp32 gradient rests on NVMe
  size_t tier_total(Tier t) const;
  // The plan as a table: one row per use, one column per tier, then totals and budgets.
  std::string table() const;
};

StatusOr<Plan> plan_placement(const ChunkLayout& layout, const PlacementConfig& config, const Budgets& budgets);

}  // namespace strata::engine
