// The placement planner: byte accounting per tier checked against closed forms computed here from
// the layout, for every placement (everything on the device; optimizer on cpu / nvme, whole or by
// ratio; params on cpu / nvme); refusals that name the tier, the need, the budget and the way out.
#include "src/engine/placement.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace strata::engine {
namespace {

constexpr size_t kChunk = size_t{1} << 16;
constexpr size_t kHuge = size_t{1} << 50;

ChunkLayout layout(int world = 1) {
  std::vector<ParamSpec> ps;
  for (int i = 0; i < 12; ++i) ps.push_back({"p" + std::to_string(i), {250, 100 + i}});  // ~25k elements each
  return ChunkLayout::build(ps, kChunk, world, 0).value();
}

size_t B(const Plan& p, Tier t, Use u) { return p.bytes[static_cast<int>(t)][static_cast<int>(u)]; }

struct Sums {
  size_t total = 0, owned = 0, max_chunk = 0, max_shard = 0, n = 0;
};
Sums sums(const ChunkLayout& l) {
  Sums s;
  for (const ChunkInfo& c : l.chunks()) {
    s.total += c.numel;
    s.owned += c.shard_numel;
    s.max_chunk = std::max(s.max_chunk, c.numel);
    s.max_shard = std::max(s.max_shard, c.shard_numel);
    ++s.n;
  }
  return s;
}

Budgets unlimited() { return {kHuge, kHuge, kHuge}; }

TEST(Placement, EverythingOnTheDevice) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  ASSERT_GT(s.n, 3u);
  auto p = plan_placement(l, PlacementConfig{}, unlimited());
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kParams16), s.total * 2);
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kOptimizer), s.owned * 12);
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kGrad32), s.owned * 4);
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kGradBuckets), 2 * s.max_chunk * 2);
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kParamWork), 0u);
  EXPECT_EQ(B(p.value(), Tier::kDevice, Use::kScratch),
            ((s.max_chunk + kNormBlockElems - 1) / kNormBlockElems + 1) * 8);
  EXPECT_EQ(p.value().tier_total(Tier::kHost), 0u);
  EXPECT_EQ(p.value().tier_total(Tier::kNvme), 0u);
}

TEST(Placement, OptimizerOnCpuAndOnNvme) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  PlacementConfig c;
  c.offload_optimizer = OffloadTarget::kCpu;
  auto cpu = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kOptimizer), s.owned * 12);
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kGrad32), s.owned * 4);
  EXPECT_EQ(B(cpu, Tier::kDevice, Use::kOptimizer), 0u);
  EXPECT_EQ(cpu.tier_total(Tier::kDevice), s.total * 2 + 2 * s.max_chunk * 2)
      << "no device scratch without a device optimizer";
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kGradStaging), 2 * s.max_chunk * 2) << "one landing buffer per gradient bucket";
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kParamStaging), kParamOutStaging * s.max_chunk * 2)
      << "updated bit16 params travel from the host optimizer to the device";
  EXPECT_EQ(cpu.tier_total(Tier::kHost), s.owned * 16 + 2 * s.max_chunk * 2 + kParamOutStaging * s.max_chunk * 2);

  c.offload_optimizer = OffloadTarget::kNvme;
  c.optimizer_buffer_count = 3;
  auto nvme = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(B(nvme, Tier::kNvme, Use::kOptimizer), s.owned * 12) << "rewritten in place: one copy";
  c.nvme_copies = 2;  // strata.nvme_rewrite = "ab_slots"
  EXPECT_EQ(B(plan_placement(l, c, unlimited()).value(), Tier::kNvme, Use::kOptimizer), s.owned * 12 * 2);
  c.nvme_copies = 1;
  EXPECT_EQ(B(nvme, Tier::kHost, Use::kGrad32), s.owned * 4);
  EXPECT_EQ(B(nvme, Tier::kHost, Use::kOptStaging), 3 * s.max_shard * 12);
  for (const ChunkPlacement& cp : nvme.chunks) {
    EXPECT_EQ(cp.optimizer, Tier::kNvme);
    EXPECT_EQ(cp.grad32, Tier::kHost);
  }
}

TEST(Placement, RatioSplitsChunksBetweenHostAndDevice) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  PlacementConfig c;
  c.offload_optimizer = OffloadTarget::kCpu;
  c.optimizer_ratio = 0.5;
  auto p = plan_placement(l, c, unlimited()).value();
  size_t host = 0, dev = 0, host_chunks = 0;
  for (size_t i = 0; i < l.chunks().size(); ++i) {
    const bool on_host = p.chunks[i].optimizer == Tier::kHost;
    host_chunks += on_host;
    (on_host ? host : dev) += l.chunks()[i].shard_numel * 12;
  }
  EXPECT_EQ(host_chunks, (s.n + 1) / 2);
  EXPECT_EQ(B(p, Tier::kHost, Use::kOptimizer), host);
  EXPECT_EQ(B(p, Tier::kDevice, Use::kOptimizer), dev);
  EXPECT_EQ(host + dev, s.owned * 12);
}

TEST(Placement, ParamsOnCpuAndOnNvme) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  PlacementConfig c;
  c.stage = 3;
  c.offload_optimizer = OffloadTarget::kCpu;
  c.offload_param = OffloadTarget::kCpu;
  c.live_chunks = 3;
  auto cpu = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kParams16), s.owned * 2);  // world 1: the shard is the chunk
  EXPECT_EQ(B(cpu, Tier::kDevice, Use::kParams16), 0u);
  EXPECT_EQ(B(cpu, Tier::kDevice, Use::kParamWork), 3 * s.max_chunk * 2);
  EXPECT_EQ(cpu.tier_total(Tier::kDevice), 3 * s.max_chunk * 2 + 2 * s.max_chunk * 2)
      << "only working buffers stay on the device";
  EXPECT_EQ(B(cpu, Tier::kHost, Use::kParamStaging), 0u) << "the host optimizer writes the resting params directly";

  c.offload_param = OffloadTarget::kNvme;
  c.param_buffer_count = 4;
  auto nvme = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(B(nvme, Tier::kNvme, Use::kParams16), s.owned * 2);
  EXPECT_EQ(B(nvme, Tier::kHost, Use::kParamStaging), 4 * s.max_chunk * 2);
}

TEST(Placement, ShardingDividesThePerRankState) {
  const Sums one = sums(layout(1));
  const ChunkLayout l4 = layout(4);
  const Sums four = sums(l4);
  PlacementConfig c;
  c.stage = 3;
  c.offload_optimizer = OffloadTarget::kCpu;
  auto p = plan_placement(l4, c, unlimited()).value();
  EXPECT_EQ(B(p, Tier::kHost, Use::kOptimizer), four.owned * 12);
  EXPECT_EQ(four.owned * 4, four.total);
  EXPECT_LE(four.total, one.total + 4 * four.n) << "padding to 4 ranks adds at most 3 elements per chunk";
  EXPECT_EQ(B(p, Tier::kDevice, Use::kParams16), four.owned * 2);
  EXPECT_EQ(B(p, Tier::kDevice, Use::kParamWork), 2 * four.max_chunk * 2) << "stage 3 gathers full chunks";
}

TEST(Placement, RefusalNamesTierNeedBudgetAndWayOut) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  const size_t need = s.total * 2 + s.owned * 16 + 2 * s.max_chunk * 2 + norm_scratch_bytes(s.max_shard);
  auto p = plan_placement(l, PlacementConfig{}, Budgets{need - 1000, kHuge, kHuge});
  ASSERT_FALSE(p.is_ok());
  EXPECT_EQ(p.status().code(), StatusCode::kOutOfMemory);
  const std::string m = p.status().message();
  EXPECT_NE(m.find("the device needs " + format_bytes(need)), std::string::npos) << m;
  EXPECT_NE(m.find("but device_bytes is " + format_bytes(need - 1000) + ", " + format_bytes(1000) + " short"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("offload_optimizer.device = \"cpu\""), std::string::npos) << m;
  EXPECT_NE(m.find("placement plan (bytes per rank)"), std::string::npos) << "the plan table comes with it";
  EXPECT_TRUE(plan_placement(l, PlacementConfig{}, Budgets{need, kHuge, kHuge}).is_ok()) << "exactly enough fits";

  PlacementConfig c;
  c.offload_optimizer = OffloadTarget::kCpu;
  auto host = plan_placement(l, c, Budgets{kHuge, 1000, kHuge});
  ASSERT_FALSE(host.is_ok());
  EXPECT_NE(host.status().message().find("the host needs"), std::string::npos);
  EXPECT_NE(host.status().message().find("offload_optimizer.device = \"nvme\""), std::string::npos)
      << host.status().message();

  c.offload_optimizer = OffloadTarget::kNvme;
  auto nv = plan_placement(l, c, Budgets{kHuge, kHuge, 1 << 20});
  ASSERT_FALSE(nv.is_ok());
  EXPECT_NE(nv.status().message().find("the free space under nvme_path is 1.0 MiB"), std::string::npos)
      << nv.status().message();
}

TEST(Placement, BadSettingsAreNamed) {
  const ChunkLayout l = layout();
  auto expect = [&](PlacementConfig c, const char* needle) {
    auto p = plan_placement(l, c, unlimited());
    ASSERT_FALSE(p.is_ok()) << needle;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find(needle), std::string::npos) << p.status().message();
  };
  PlacementConfig c;
  c.offload_param = OffloadTarget::kCpu;
  expect(c, "offload_param needs zero_optimization.stage = 3");
  c.stage = 3;
  expect(c, "offload_param needs offload_optimizer.device \"cpu\" or \"nvme\" with ratio 1");
  c.offload_optimizer = OffloadTarget::kCpu;
  c.optimizer_ratio = 0.5;
  expect(c, "offload_param needs offload_optimizer.device");
  c = PlacementConfig{};
  c.stage = 4;
  expect(c, "zero_optimization.stage = 4");
  c = PlacementConfig{};
  c.optimizer_ratio = 1.5;
  expect(c, "offload_optimizer.ratio = 1.5");
  c.optimizer_ratio = std::nan("");
  expect(c, "offload_optimizer.ratio");
  c = PlacementConfig{};
  c.optimizer_buffer_count = 0;
  expect(c, "offload_optimizer.buffer_count must be >= 1");
  EXPECT_EQ(parse_offload_target("nvme").value(), OffloadTarget::kNvme);
  EXPECT_NE(parse_offload_target("disk").status().message().find("expected none, cpu or nvme"), std::string::npos);
}

TEST(Placement, TableShowsEveryUsedRow) {
  PlacementConfig c;
  c.stage = 3;
  c.offload_optimizer = OffloadTarget::kNvme;
  c.offload_param = OffloadTarget::kCpu;
  const std::string t = plan_placement(layout(), c, unlimited()).value().table();
  for (const char* row :
       {"bit16 params", "param working buffers", "gradient buckets", "fp32 gradients", "optimizer state (AdamW)",
        "optimizer staging (pinned)", "gradient staging (pinned)", "total", "budget"})
    EXPECT_NE(t.find(row), std::string::npos) << row << "\n" << t;
  EXPECT_EQ(t.find("param staging (pinned)"), std::string::npos) << "unused rows are left out";
}

}  // namespace
}  // namespace strata::engine

namespace strata::engine {
namespace {

// The backup slots of the step during backward (strata.speculate): one per offloaded chunk when the
// host has room, half of what the host has left when it has not, what speculation_bytes holds when
// given (a plan it does not fit is refused naming the key), none without offload or when off.
TEST(Placement, SpeculationSlots) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  const size_t slot = speculation_slot_bytes(s.max_shard, 12);
  EXPECT_EQ(slot, s.max_shard * 14) << "Adam's three arrays and the bit16 output";
  PlacementConfig c;
  c.speculate = true;
  EXPECT_EQ(plan_placement(l, c, unlimited()).value().speculation_slots, 0u) << "state on the device";
  c.offload_optimizer = OffloadTarget::kCpu;
  const Plan all = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(all.speculation_slots, s.n);
  EXPECT_EQ(B(all, Tier::kHost, Use::kSpecBackup), s.n * slot);
  EXPECT_NE(all.table().find("step slots"), std::string::npos) << all.table();

  c.speculate = false;
  const Plan off = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(off.speculation_slots, 0u);
  EXPECT_EQ(all.tier_total(Tier::kHost) - off.tier_total(Tier::kHost), s.n * slot);

  c.speculate = true;  // a host budget with room for 3 slots beyond the rest: half of it is taken
  Budgets tight = unlimited();
  tight.host_bytes = off.tier_total(Tier::kHost) + 3 * slot;
  EXPECT_EQ(plan_placement(l, c, tight).value().speculation_slots, 1u);

  c.speculation_bytes = 2 * slot + slot / 2;  // explicit: two slots
  EXPECT_EQ(plan_placement(l, c, unlimited()).value().speculation_slots, 2u);
  c.speculation_bytes = 5 * slot;  // explicit and too large for the budget: refused by name
  auto refused = plan_placement(l, c, tight);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("strata.speculation_bytes"), std::string::npos)
      << refused.status().message();
}

// strata.speculate_device: device-resident state gets slots in device memory (one per chunk, or
// half of what the device budget has left); none by default, none for offloaded state.
TEST(Placement, DeviceSpeculationSlots) {
  const ChunkLayout l = layout();
  const Sums s = sums(l);
  const size_t slot = speculation_slot_bytes(s.max_shard, 12);
  PlacementConfig c;
  c.speculate = true;
  const Plan by_default = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(by_default.device_speculation_slots, 0u);
  c.speculate_device = true;
  const Plan all = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(all.device_speculation_slots, s.n);
  EXPECT_EQ(all.speculation_slots, 0u) << "no host-side state";
  EXPECT_EQ(B(all, Tier::kDevice, Use::kSpecBackup), s.n * slot);
  EXPECT_EQ(all.tier_total(Tier::kDevice) - by_default.tier_total(Tier::kDevice), s.n * slot);
  Budgets tight = unlimited();  // room for 5 slots beyond the rest: half of it is taken
  tight.device_bytes = by_default.tier_total(Tier::kDevice) + 5 * slot;
  EXPECT_EQ(plan_placement(l, c, tight).value().device_speculation_slots, 2u);
  c.speculation_bytes = 6 * slot;  // explicit and too large for the device: refused by name
  auto refused = plan_placement(l, c, tight);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("strata.speculation_bytes"), std::string::npos)
      << refused.status().message();
  c.speculation_bytes = 0;
  c.offload_optimizer = OffloadTarget::kCpu;
  const Plan host = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(host.device_speculation_slots, 0u) << "the state is on the host";
  EXPECT_EQ(host.speculation_slots, s.n);
}

// `params` params of 32 Ki elements: two per chunk, every chunk the same size.
ChunkLayout uniform(int params) {
  std::vector<ParamSpec> ps;
  for (int i = 0; i < params; ++i) ps.push_back({"p" + std::to_string(i), {256, 128}});
  return ChunkLayout::build(ps, kChunk, 1, 0).value();
}

// strata.gradient_tier = "nvme": the fp32 gradients of NVMe-resident state rest on NVMe. Without
// accumulation the host's bytes drop by 4 B per element of the optimizer's shard, less the pinned
// buffers the gradients are assembled in and the pipeline's gradient buffers; refused by name
// where it cannot work; "auto" takes it only when the host budget needs it.
TEST(Placement, GradientsOnNvme) {
  const ChunkLayout l = uniform(48);
  const Sums s = sums(l);
  PlacementConfig c;
  c.offload_optimizer = OffloadTarget::kNvme;
  c.gradient_tier = PlacementConfig::GradTier::kHost;
  const Plan host = plan_placement(l, c, unlimited()).value();
  c.gradient_tier = PlacementConfig::GradTier::kNvme;
  const Plan nvme = plan_placement(l, c, unlimited()).value();
  EXPECT_FALSE(host.nvme_grads);
  EXPECT_TRUE(nvme.nvme_grads);
  EXPECT_EQ(B(host, Tier::kHost, Use::kGrad32), s.owned * 4);
  EXPECT_EQ(B(nvme, Tier::kHost, Use::kGrad32), 0u);
  EXPECT_EQ(B(nvme, Tier::kNvme, Use::kGrad32), s.owned * 4);
  for (const ChunkPlacement& cp : nvme.chunks) EXPECT_EQ(cp.grad32, Tier::kNvme);
  const size_t buffers = static_cast<size_t>(grad_assembly_buffers(c.grad_buckets) + c.optimizer_buffer_count);
  EXPECT_EQ(host.tier_total(Tier::kHost) - nvme.tier_total(Tier::kHost), s.owned * 4 - buffers * s.max_shard * 4);
  EXPECT_EQ(nvme.tier_total(Tier::kNvme) - host.tier_total(Tier::kNvme), s.owned * 4);

  // Slots read the gradient beside the state: 4 B more per element each.
  c.speculate = true;
  c.speculation_bytes = 2 * speculation_slot_bytes(s.max_shard, 12, true);
  const Plan slots = plan_placement(l, c, unlimited()).value();
  EXPECT_EQ(slots.speculation_slots, 2u);
  EXPECT_EQ(B(slots, Tier::kHost, Use::kSpecBackup), 2 * s.max_shard * 18);

  // "auto": host gradients while they fit, NVMe gradients when the host budget needs them.
  c.speculate = false;
  c.speculation_bytes = 0;
  c.gradient_tier = PlacementConfig::GradTier::kAuto;
  EXPECT_FALSE(plan_placement(l, c, unlimited()).value().nvme_grads);
  Budgets tight = unlimited();
  tight.host_bytes = nvme.tier_total(Tier::kHost);
  const Plan fitted = plan_placement(l, c, tight).value();
  EXPECT_TRUE(fitted.nvme_grads);
  EXPECT_EQ(fitted.tier_total(Tier::kHost), nvme.tier_total(Tier::kHost));
  c.gradient_tier = PlacementConfig::GradTier::kHost;
  auto refused = plan_placement(l, c, tight);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_NE(refused.status().message().find("strata.gradient_tier = \"nvme\""), std::string::npos)
      << refused.status().message();

  // Where NVMe gradients cannot work: named.
  c.gradient_tier = PlacementConfig::GradTier::kNvme;
  c.accumulation_steps = 2;
  auto accum = plan_placement(l, c, unlimited());
  ASSERT_FALSE(accum.is_ok());
  EXPECT_NE(accum.status().message().find("gradient_accumulation_steps = 1 (it is 2)"), std::string::npos)
      << accum.status().message();
  c.accumulation_steps = 1;
  c.replicated = true;
  EXPECT_NE(plan_placement(l, c, unlimited()).status().message().find("stage 1 or above"), std::string::npos);
  c.replicated = false;
  c.offload_optimizer = OffloadTarget::kCpu;
  EXPECT_NE(plan_placement(l, c, unlimited()).status().message().find("offload_optimizer.device = \"nvme\""),
            std::string::npos);
  // Automatic never picks what cannot work: accumulation keeps host gradients (and is refused when they do not fit).
  c.offload_optimizer = OffloadTarget::kNvme;
  c.gradient_tier = PlacementConfig::GradTier::kAuto;
  c.accumulation_steps = 2;
  EXPECT_FALSE(plan_placement(l, c, tight).is_ok());
}

// Params and optimizer on NVMe with NVMe gradients: the host holds buffers only — two models, one
// four times the other, plan the same host bytes (with host gradients the larger needs 4 B more
// per extra element).
TEST(Placement, EverythingOnNvmeHostBytesDoNotGrowWithTheModel) {
  const ChunkLayout small = uniform(12), large = uniform(48);
  PlacementConfig c;
  c.stage = 3;
  c.offload_param = OffloadTarget::kNvme;
  c.offload_optimizer = OffloadTarget::kNvme;
  c.speculate = true;
  c.speculation_bytes = 3 * speculation_slot_bytes(sums(small).max_shard, 12, true);
  c.gradient_tier = PlacementConfig::GradTier::kNvme;
  const Plan ps = plan_placement(small, c, unlimited()).value(), pl = plan_placement(large, c, unlimited()).value();
  EXPECT_EQ(sums(large).owned, 4 * sums(small).owned);
  EXPECT_EQ(ps.tier_total(Tier::kHost), pl.tier_total(Tier::kHost)) << ps.table() << pl.table();
  EXPECT_GT(pl.tier_total(Tier::kNvme), 3 * ps.tier_total(Tier::kNvme));
  c.gradient_tier = PlacementConfig::GradTier::kHost;
  const Plan hs = plan_placement(small, c, unlimited()).value(), hl = plan_placement(large, c, unlimited()).value();
  EXPECT_EQ(hl.tier_total(Tier::kHost) - hs.tier_total(Tier::kHost), (sums(large).owned - sums(small).owned) * 4);
}

}  // namespace
}  // namespace strata::engine
