// The placement planner: tiers per chunk, byte accounting, the plan table, refusals with advice.
#include "src/engine/placement.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace strata::engine {
namespace {

const char* kUseNames[kNumUses] = {"bit16 params",
                                   "param working buffers",
                                   "param staging (pinned)",
                                   "gradient buckets",
                                   "fp32 gradients",
                                   "optimizer state",
                                   "optimizer staging (pinned)",
                                   "gradient staging (pinned)",
                                   "device scratch",
                                   "host program (activations)",
                                   "step slots (backups, read-ahead)"};
const char* kTierNames[kNumTiers] = {"device", "host", "nvme"};
const char* kBudgetKeys[kNumTiers] = {"device_bytes", "host_bytes", "the free space under nvme_path"};

Tier tier_of(OffloadTarget t) {
  return t == OffloadTarget::kNone ? Tier::kDevice : t == OffloadTarget::kCpu ? Tier::kHost : Tier::kNvme;
}

size_t budget_of(const Budgets& b, int t) { return t == 0 ? b.device_bytes : t == 1 ? b.host_bytes : b.nvme_bytes; }

Status validate(const ChunkLayout& layout, const PlacementConfig& c) {
  if (c.stage < 0 || c.stage > 3)
    return invalid_argument("zero_optimization.stage = " + std::to_string(c.stage) + ": must be 0, 1, 2 or 3");
  if (c.offload_param != OffloadTarget::kNone && c.stage != 3)
    return invalid_argument(
        "offload_param needs zero_optimization.stage = 3 (the stage that keeps parameters off the device "
        "between uses); stage is " +
        std::to_string(c.stage));
  if (!(c.optimizer_ratio >= 0.0 && c.optimizer_ratio <= 1.0))
    return invalid_argument("offload_optimizer.ratio = " + std::to_string(c.optimizer_ratio) + ": must be in [0, 1]");
  if (c.offload_param != OffloadTarget::kNone &&
      (c.offload_optimizer == OffloadTarget::kNone || c.optimizer_ratio < 1.0))
    return invalid_argument(
        "offload_param needs offload_optimizer.device \"cpu\" or \"nvme\" with ratio 1: updated "
        "parameters are produced where the optimizer runs, and must land where they rest");
  if (c.optimizer_buffer_count < 1) return invalid_argument("offload_optimizer.buffer_count must be >= 1");
  if (c.param_buffer_count < 1) return invalid_argument("offload_param.buffer_count must be >= 1");
  if (c.live_chunks < 1) return invalid_argument("live chunks (stage3_max_live_parameters / chunk size) must be >= 1");
  if (c.grad_buckets < 1) return invalid_argument("gradient buckets must be >= 1");
  (void)layout;
  return Status::ok();
}

std::string advice(int tier, const PlacementConfig& c, const Plan& p) {
  const auto& b = p.bytes;
  if (tier == 0) {
    if (c.speculation_bytes > 0 && b[0][static_cast<int>(Use::kSpecBackup)] > 0)
      return "lower strata.speculation_bytes or set strata.speculate_device = false (the device backups of the step "
             "during backward hold " +
             format_bytes(b[0][static_cast<int>(Use::kSpecBackup)]) + "; 0 sizes them to fit)";
    if (c.offload_optimizer == OffloadTarget::kNone || c.optimizer_ratio < 1.0)
      return "set offload_optimizer.device = \"cpu\" (ratio 1) to move the optimizer state (" +
             format_bytes(b[0][static_cast<int>(Use::kOptimizer)]) + ") and fp32 gradients off the device";
    if (c.offload_param == OffloadTarget::kNone)
      return "set offload_param.device = \"cpu\" with zero_optimization.stage = 3 to move the bit16 params (" +
             format_bytes(b[0][static_cast<int>(Use::kParams16)]) + ") off the device";
    return "lower the chunk size, the live chunks or the gradient buckets, or raise device_bytes";
  }
  if (tier == 1) {
    if (c.speculation_bytes > 0 && b[1][static_cast<int>(Use::kSpecBackup)] > 0)
      return "lower strata.speculation_bytes (the backups of the step during backward hold " +
             format_bytes(b[1][static_cast<int>(Use::kSpecBackup)]) + "; 0 sizes them to fit)";
    if (b[1][static_cast<int>(Use::kHostProgram)] * 2 > p.tier_total(Tier::kHost))
      return "shrink the host program's own memory (" + format_bytes(b[1][static_cast<int>(Use::kHostProgram)]) +
             ", its activations): a smaller batch or sequence, or activation checkpointing";
    if (c.offload_optimizer == OffloadTarget::kCpu)
      return "set offload_optimizer.device = \"nvme\" to move the optimizer state (" +
             format_bytes(b[1][static_cast<int>(Use::kOptimizer)]) + ") to NVMe";
    if (c.offload_optimizer == OffloadTarget::kNvme && !p.nvme_grads && c.accumulation_steps == 1 && !c.replicated)
      return "set strata.gradient_tier = \"nvme\" to move the fp32 gradients (" +
             format_bytes(b[1][static_cast<int>(Use::kGrad32)]) + ") to NVMe";
    if (c.offload_param == OffloadTarget::kCpu)
      return "set offload_param.device = \"nvme\" to move the bit16 params (" +
             format_bytes(b[1][static_cast<int>(Use::kParams16)]) + ") to NVMe";
    return "lower buffer_count or the chunk size, or raise host_bytes";
  }
  return "free space under nvme_path or point nvme_path at a larger file system (the A/B slots of each swapped array "
         "need up "
         "to twice its size)";
}

// Backup slots for the step during backward, on each tier that runs an optimizer: in host memory
// one per chunk whose optimizer runs on the host (or reads its state from NVMe), in device memory
// one per chunk whose state is on the device — or what speculation_bytes holds (per tier); the
// automatic size never takes more than half of the tier's budget the rest of the plan leaves.
void plan_speculation(const PlacementConfig& c, size_t max_shard, const Budgets& budgets, Plan& p) {
  if (!c.speculate) return;
  for (const Tier t : {Tier::kHost, Tier::kDevice}) {
    if (t == Tier::kDevice && !c.speculate_device) continue;
    size_t chunks = 0;
    for (const ChunkPlacement& cp : p.chunks)
      chunks += t == Tier::kHost ? cp.optimizer != Tier::kDevice : cp.optimizer == Tier::kDevice;
    const size_t slot = speculation_slot_bytes(max_shard, c.optimizer_state_bytes, t == Tier::kHost && p.nvme_grads);
    if (chunks == 0 || slot == 0) continue;
    size_t slots = chunks;
    if (c.speculation_bytes > 0) {
      slots = std::min(slots, c.speculation_bytes / slot);
    } else {
      const size_t used = p.tier_total(t), budget = budget_of(budgets, static_cast<int>(t));
      const size_t left = budget > used ? budget - used : 0;
      slots = std::min(slots, left / 2 / slot);
    }
    (t == Tier::kHost ? p.speculation_slots : p.device_speculation_slots) = slots;
    p.bytes[static_cast<int>(t)][static_cast<int>(Use::kSpecBackup)] = slots * slot;
  }
}

}  // namespace

StatusOr<OffloadTarget> parse_offload_target(const std::string& s) {
  if (s == "none") return OffloadTarget::kNone;
  if (s == "cpu") return OffloadTarget::kCpu;
  if (s == "nvme") return OffloadTarget::kNvme;
  return invalid_argument("offload device '" + s + "': expected none, cpu or nvme");
}

size_t Plan::tier_total(Tier t) const {
  size_t s = 0;
  for (size_t v : bytes[static_cast<int>(t)]) s += v;
  return s;
}

std::string Plan::table() const {
  std::string out;
  char line[160];
  std::snprintf(line, sizeof(line), "%-32s %14s %14s %14s\n", "placement plan (bytes per rank)", "device", "host",
                "nvme");
  out += line;
  for (int u = 0; u < kNumUses; ++u) {
    if (bytes[0][u] + bytes[1][u] + bytes[2][u] == 0) continue;
    const std::string name =
        u == static_cast<int>(Use::kOptimizer) ? "optimizer state (" + optimizer + ")" : kUseNames[u];
    std::snprintf(line, sizeof(line), "%-32s %14s %14s %14s\n", name.c_str(),
                  bytes[0][u] ? format_bytes(bytes[0][u]).c_str() : "-",
                  bytes[1][u] ? format_bytes(bytes[1][u]).c_str() : "-",
                  bytes[2][u] ? format_bytes(bytes[2][u]).c_str() : "-");
    out += line;
  }
  std::snprintf(line, sizeof(line), "%-32s %14s %14s %14s\n", "total", format_bytes(tier_total(Tier::kDevice)).c_str(),
                format_bytes(tier_total(Tier::kHost)).c_str(), format_bytes(tier_total(Tier::kNvme)).c_str());
  out += line;
  std::snprintf(line, sizeof(line), "%-32s %14s %14s %14s\n", "budget", format_bytes(budgets.device_bytes).c_str(),
                format_bytes(budgets.host_bytes).c_str(), format_bytes(budgets.nvme_bytes).c_str());
  out += line;
  return out;
}

namespace {

// NVMe gradients: only where the optimizer's state is on NVMe, without accumulation and without DDP.
Status check_gradient_tier(const PlacementConfig& c) {
  if (c.gradient_tier != PlacementConfig::GradTier::kNvme) return Status::ok();
  if (c.offload_optimizer != OffloadTarget::kNvme)
    return invalid_argument(
        "strata.gradient_tier = \"nvme\" needs offload_optimizer.device = \"nvme\" (gradients rest on NVMe beside "
        "the optimizer state they update)");
  if (c.accumulation_steps != 1)
    return invalid_argument("strata.gradient_tier = \"nvme\" needs gradient_accumulation_steps = 1 (it is " +
                            std::to_string(c.accumulation_steps) +
                            "): accumulation sums fp32 gradients over micro-batches in host memory");
  if (c.replicated)
    return invalid_argument(
        "strata.gradient_tier = \"nvme\" needs ZeRO stage 1 or above across ranks (stage 0 all-reduces whole fp32 "
        "gradients in host memory)");
  return Status::ok();
}

// The plan without the budget check; nvme_grads: gradients of NVMe-resident state rest on NVMe.
Plan build_plan(const ChunkLayout& layout, const PlacementConfig& c, const Budgets& budgets, bool nvme_grads) {
  Plan p;
  p.nvme_grads = nvme_grads;
  p.budgets = budgets;
  p.optimizer = c.optimizer_type;
  const auto& chunks = layout.chunks();
  size_t max_chunk = 0, max_shard = 0;
  for (const ChunkInfo& ch : chunks) {
    max_chunk = std::max(max_chunk, ch.numel);
    max_shard = std::max(max_shard, ch.shard_numel);
  }
  const size_t n = chunks.size();
  const size_t offloaded = c.offload_optimizer == OffloadTarget::kNone
                               ? 0
                               : static_cast<size_t>(std::ceil(c.optimizer_ratio * static_cast<double>(n) - 1e-9));
  auto add = [&](Tier t, Use u, size_t b) { p.bytes[static_cast<int>(t)][static_cast<int>(u)] += b; };
  for (size_t i = 0; i < n; ++i) {
    const ChunkInfo& ch = chunks[i];
    ChunkPlacement cp;
    cp.params16 = tier_of(c.offload_param);
    cp.optimizer = i < offloaded ? tier_of(c.offload_optimizer) : Tier::kDevice;
    cp.grad32 = cp.optimizer == Tier::kNvme ? (nvme_grads ? Tier::kNvme : Tier::kHost) : cp.optimizer;
    const size_t rest = c.stage == 3 ? ch.shard_numel : ch.numel;
    add(cp.params16, Use::kParams16, rest * 2 * (cp.params16 == Tier::kNvme ? c.nvme_copies : 1));
    add(cp.optimizer, Use::kOptimizer,
        ch.shard_numel * c.optimizer_state_bytes * (cp.optimizer == Tier::kNvme ? c.nvme_copies : 1));
    add(cp.grad32, Use::kGrad32, ch.shard_numel * 4 * (cp.grad32 == Tier::kNvme ? c.nvme_copies : 1));
    p.chunks.push_back(cp);
  }
  if (n > 0) {
    const bool gathers = c.stage == 3 && layout.world() > 1;
    if (c.offload_param != OffloadTarget::kNone || gathers)
      add(Tier::kDevice, Use::kParamWork, static_cast<size_t>(c.live_chunks) * max_chunk * 2);
    bool host_grads = false, device_optimizer = false;  // host_grads: the gradients land on the host side
    for (const ChunkPlacement& cp : p.chunks) {
      host_grads |= cp.grad32 != Tier::kDevice;
      device_optimizer |= cp.optimizer == Tier::kDevice;
    }
    if (gathers && c.offload_param != OffloadTarget::kNone)
      add(Tier::kHost, Use::kParamStaging, max_chunk * 2);  // gathered chunk
    if (c.offload_param == OffloadTarget::kNvme)
      add(Tier::kHost, Use::kParamStaging, static_cast<size_t>(c.param_buffer_count) * max_chunk * 2);
    else if (c.offload_param == OffloadTarget::kNone && host_grads)
      add(Tier::kHost, Use::kParamStaging, static_cast<size_t>(kParamOutStaging) * max_chunk * 2);
    add(Tier::kDevice, Use::kGradBuckets, static_cast<size_t>(c.grad_buckets) * max_chunk * 2);
    if (host_grads) add(Tier::kHost, Use::kGradStaging, static_cast<size_t>(c.grad_buckets) * max_chunk * 2);
    if (nvme_grads)
      add(Tier::kHost, Use::kGradStaging, static_cast<size_t>(grad_assembly_buffers(c.grad_buckets)) * max_shard * 4);
    if (device_optimizer) add(Tier::kDevice, Use::kScratch, norm_scratch_bytes(max_shard));
    // ZeRO across ranks with device gradients: a bucket's span widened to fp32 for the cross-rank sum.
    if (device_optimizer && c.stage >= 1 && layout.world() > 1) add(Tier::kDevice, Use::kScratch, max_chunk * 4);
    if (c.offload_optimizer == OffloadTarget::kNvme && offloaded > 0)
      add(Tier::kHost, Use::kOptStaging,
          static_cast<size_t>(c.optimizer_buffer_count) * max_shard * (c.optimizer_state_bytes + (nvme_grads ? 4 : 0)));
  }
  add(Tier::kHost, Use::kHostProgram, budgets.host_program);
  plan_speculation(c, max_shard, budgets, p);
  return p;
}

bool fits(const Plan& p, int tier) { return p.tier_total(static_cast<Tier>(tier)) <= budget_of(p.budgets, tier); }

}  // namespace

StatusOr<Plan> plan_placement(const ChunkLayout& layout, const PlacementConfig& c, const Budgets& budgets) {
  STRATA_RETURN_IF_ERROR(validate(layout, c));
  STRATA_RETURN_IF_ERROR(check_gradient_tier(c));
  using GradTier = PlacementConfig::GradTier;
  Plan p = build_plan(layout, c, budgets, c.gradient_tier == GradTier::kNvme);
  // Automatic: gradients move to NVMe when that is what makes the host budget fit.
  PlacementConfig nvme = c;
  nvme.gradient_tier = GradTier::kNvme;
  if (c.gradient_tier == GradTier::kAuto && !fits(p, 1) && check_gradient_tier(nvme).is_ok())
    p = build_plan(layout, c, budgets, true);
  for (int t = 0; t < kNumTiers; ++t) {
    const size_t need = p.tier_total(static_cast<Tier>(t));
    const size_t have = budget_of(budgets, t);
    if (need <= have) continue;
    std::string parts;
    for (int u = 0; u < kNumUses; ++u) {
      if (p.bytes[t][u] == 0) continue;
      parts += (parts.empty() ? "" : ", ") + std::string(kUseNames[u]) + " " + format_bytes(p.bytes[t][u]);
    }
    return out_of_memory("the model does not fit: the " + std::string(kTierNames[t]) + " needs " + format_bytes(need) +
                         " (" + parts + ") but " + kBudgetKeys[t] + " is " + format_bytes(have) + ", " +
                         format_bytes(need - have) + " short; to fit, " + advice(t, c, p) + ".\n" + p.table());
  }
  return p;
}

}  // namespace strata::engine
