// Data-parallel training across CPU ranks (DDP at stage 0, ZeRO shards at stages 1-3), under
// mpirun with 1, 2 and 4 ranks: N ranks, each handing the gradient of its share of the global
// batch, end with the master weights of one rank that accumulates all N shares as N micro-batches
// (the same fp32 sums, in another order) — with every offload of every stage; the all-reduced and
// gathered bytes are counted, and DDP chunks complete before the step start their all-reduce
// during backward; rank 0's initial values reach every rank; ranks that registered different
// params are refused.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <ostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.h"
#include "kernels/reference/half.h"
#include "src/engine/engine.h"
#include "src/engine/placement.h"
#include "tests/engine/mpi_world.h"

namespace strata::engine {
namespace {

using mpi_test::world;

const std::vector<std::pair<std::string, std::vector<int64_t>>> kParams = {
    {"w1", {3000}}, {"w2", {50, 80}}, {"b", {7}}};
constexpr int kSteps = 5;

std::unique_ptr<Engine> make(const std::string& zero, int gas, comm::Communicator* c,
                             const std::string& type = "AdamW") {
  const std::string json = "{\"optimizer\": {\"type\": \"" + type +
                           "\", \"params\": {\"lr\": 0.01, \"weight_decay\": 0.01}}, "
                           "\"gradient_clipping\": 1.0, \"gradient_accumulation_steps\": " +
                           std::to_string(gas) + ", \"zero_optimization\": {" + zero +
                           "}, \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 4096}}";
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  EngineOptions o;
  o.log = [](const std::string&) {};
  o.comm = c;
  auto e = Engine::create(cfg.value(), o);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return std::move(e).value();
}

// Share `share`'s gradient of each param at the current params: 0.5 p - target(share), in bf16.
void micro(Engine& e, int share) {
  for (const auto& [name, shape] : kParams) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    auto p = e.fetch(name);
    ASSERT_TRUE(p.is_ok()) << p.status().to_string();
    const auto* bits = static_cast<const uint16_t*>(p.value());
    std::vector<uint16_t> g(n);
    for (size_t i = 0; i < n; ++i) {
      const float target = std::sin(0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(share) + name.size());
      g[i] = reference::float_to_bf16(0.5f * reference::bf16_to_float(bits[i]) - target);
    }
    ASSERT_TRUE(e.grad(name, g.data(), DType::kBF16, n).is_ok());
    ASSERT_TRUE(e.release(name).is_ok());
  }
}

std::vector<float> masters(Engine& e) {
  std::vector<float> all;
  for (const auto& [name, shape] : kParams) {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    std::vector<float> v(n);
    EXPECT_TRUE(e.read_master(name, v.data(), n).is_ok());
    all.insert(all.end(), v.begin(), v.end());
  }
  return all;
}

void register_all(Engine& e) {
  for (const auto& [name, shape] : kParams) ASSERT_TRUE(e.register_param(name, shape, DType::kF32, nullptr).is_ok());
}

// kSteps steps: `ranked` on this rank's share, `single` on all N shares as N micro-batches; then
// their masters agree (fp32 sums in another order: a few ulps). *got: `ranked`'s masters.
void train_both(comm::Communicator& c, Engine& ranked, Engine& single, std::vector<float>* got) {
  const int n = c.size();
  register_all(ranked);
  register_all(single);
  for (int step = 0; step < kSteps; ++step) {
    micro(ranked, c.rank());
    auto r = ranked.step();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    ASSERT_TRUE(r.value().applied);
    for (int share = 0; share < n; ++share) {
      micro(single, share);
      ASSERT_TRUE(single.step().is_ok());
    }
  }
  *got = masters(ranked);
  const std::vector<float> want = masters(single);
  ASSERT_EQ(got->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR((*got)[i], want[i], 1e-6 + 1e-5 * std::fabs(want[i])) << i;
}

class Ddp : public ::testing::TestWithParam<const char*> {};

TEST_P(Ddp, NRanksEqualOneRankAccumulatingTheirShares) {
  comm::Communicator& c = world();
  const int n = c.size();
  auto ddp = make(GetParam(), 1, &c);
  auto single = make(GetParam(), n, nullptr);
  std::vector<float> got;
  train_both(c, *ddp, *single, &got);
  if (::testing::Test::HasFatalFailure()) return;
  // The same weights on every rank, bit for bit.
  std::vector<float> lo(got), hi(got);
  for (float& x : lo) x = -x;
  ASSERT_TRUE(c.all_reduce_sync(lo.data(), lo.data(), lo.size(), comm::Elem::kF32, comm::ReduceOp::kMax).is_ok());
  ASSERT_TRUE(c.all_reduce_sync(hi.data(), hi.data(), hi.size(), comm::Elem::kF32, comm::ReduceOp::kMax).is_ok());
  for (size_t i = 0; i < got.size(); ++i) ASSERT_EQ(-lo[i], hi[i]) << i;
  // Byte accounting: every chunk's fp32 gradient once per step (none with one rank).
  size_t chunk_elems = 0;
  for (const auto& [name, shape] : kParams) {
    size_t k = 1;
    for (int64_t d : shape) k *= static_cast<size_t>(d);
    chunk_elems += k;
  }
  const size_t reduced = ddp->stats().bytes_allreduce;
  if (n == 1) {
    EXPECT_EQ(reduced, 0u);
  } else {
    EXPECT_GT(ddp->stats().allreduce_early, 0) << "chunks complete during backward start their all-reduce there";
    EXPECT_GE(reduced, kSteps * chunk_elems * 4);
    EXPECT_LE(reduced, kSteps * (chunk_elems + 3 * 2048) * 4) << "at most a chunk's padding more per param";
  }
}

INSTANTIATE_TEST_SUITE_P(OptimizerOnDeviceAndHost, Ddp,
                         ::testing::Values("\"stage\": 0",
                                           "\"stage\": 0, \"offload_optimizer\": {\"device\": \"cpu\"}"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.index == 0 ? "optimizer_on_device" : "optimizer_on_host");
                         });

// ZeRO stages 1-3 across ranks: each rank keeps the fp32 gradient and optimizer state of its
// shard of every chunk (stage 3: the bit16 params too, gathered on every load); the same
// comparison as above, with and without offload, plus the plan's per-rank bytes of what is
// sharded: one rank's divided by N (up to each chunk's padding to a multiple of N).
struct ZeroCase {
  int stage;
  const char* optimizer;  // offload_optimizer.device: none, cpu, nvme
  const char* param;      // offload_param.device: none, cpu, nvme
};

void PrintTo(const ZeroCase& z, std::ostream* os) {
  *os << "stage " << z.stage << ", optimizer " << z.optimizer << ", params " << z.param;
}

class Zero : public ::testing::TestWithParam<ZeroCase> {};

std::string scratch_dir() { return mpi_test::scratch_dir("strata_zero_test_"); }

std::string zero_json(const ZeroCase& z, const std::string& path) {
  auto target = [&](const char* device) {
    return std::string("{\"device\": \"") + device + "\"" +
           (std::string(device) == "nvme" ? ", \"nvme_path\": \"" + path + "\"" : std::string()) + "}";
  };
  return "\"stage\": " + std::to_string(z.stage) + ", \"offload_optimizer\": " + target(z.optimizer) +
         ", \"offload_param\": " + target(z.param);
}

TEST_P(Zero, NRanksOfShardsEqualOneRankAccumulatingTheirShares) {
  comm::Communicator& c = world();
  const int n = c.size();
  const ZeroCase z = GetParam();
  const std::string dir = scratch_dir();
  std::filesystem::create_directories(dir);                    // strata makes only the last level of nvme_path
  auto sharded = make(zero_json(z, dir + "/sharded"), 1, &c);  // + "/rank<r>" with several ranks
  auto single = make(zero_json(z, dir + "/single" + std::to_string(c.rank())), n, nullptr);
  std::vector<float> got;
  train_both(c, *sharded, *single, &got);
  if (::testing::Test::HasFatalFailure()) return;
  // Every rank fetches the same (all-gathered) bit16 params.
  size_t elems = 0;
  for (const auto& [name, shape] : kParams) {
    auto a = sharded->fetch(name), b = single->fetch(name);
    ASSERT_TRUE(a.is_ok() && b.is_ok());
    size_t numel = 1;
    for (int64_t d : shape) numel *= static_cast<size_t>(d);
    elems += numel;
    EXPECT_EQ(std::memcmp(a.value(), b.value(), numel * 2), 0) << name;
    ASSERT_TRUE(sharded->release(name).is_ok() && single->release(name).is_ok());
  }
  // Per-rank bytes of the sharded arrays, tier by tier.
  const Plan* mine = sharded->plan();
  const Plan* one = single->plan();
  ASSERT_TRUE(mine != nullptr && one != nullptr);
  std::vector<Use> split = {Use::kGrad32, Use::kOptimizer};
  if (z.stage == 3) split.push_back(Use::kParams16);
  const size_t chunks = mine->chunks.size();
  for (int t = 0; t < kNumTiers; ++t) {
    for (Use u : split) {
      const size_t m = mine->bytes[t][static_cast<int>(u)], o = one->bytes[t][static_cast<int>(u)];
      EXPECT_GE(m * n, o) << "tier " << t << " use " << static_cast<int>(u);
      EXPECT_LE(m * n, o + chunks * n * 2 * 12)
          << "tier " << t << " use " << static_cast<int>(u) << ": 1/N plus padding";
    }
  }
  // Collective traffic: stage 3 gathers a chunk whenever a fetch loads it (here once per
  // micro-batch: 3 chunks, 2 working buffers, each param fetched once), stage 1 / 2 once per step,
  // and the final fetches above; one rank, nothing.
  const EngineStats st = sharded->stats();
  const size_t fetched_gathers = st.bytes_allgather;
  if (n == 1) {
    EXPECT_EQ(st.bytes_allgather + st.bytes_allreduce, 0u);
  } else {
    EXPECT_GE(st.bytes_allreduce, kSteps * elems * 4);  // gradients, once per step
    EXPECT_GE(fetched_gathers, (kSteps + 1) * elems * 2 - (z.stage == 3 ? 0 : elems * 2));
    EXPECT_LE(fetched_gathers, (kSteps + 1) * (elems + chunks * (64 + n)) * 2) << "at most a chunk's padding more";
  }
  // The consolidated export from N ranks: rank 0 writes every param's gathered master.
  if (c.rank() == 0) std::filesystem::create_directories(dir);
  ASSERT_TRUE(c.barrier().is_ok());
  const Status ex = sharded->export_weights(dir + "/export", DType::kF32);
  ASSERT_TRUE(ex.is_ok()) << ex.to_string();
  if (c.rank() == 0) {
    std::ifstream idx(dir + "/export/index.json");
    const nlohmann::json index = nlohmann::json::parse(idx);
    std::ifstream bin(dir + "/export/weights.bin", std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(bin)), std::istreambuf_iterator<char>());
    size_t at = 0;
    for (const auto& [name, shape] : kParams) {
      const nlohmann::json* entry = nullptr;
      for (const auto& p : index["params"])
        if (p["name"] == name) entry = &p;
      ASSERT_NE(entry, nullptr) << name;
      const size_t off = (*entry)["offset"].get<size_t>(), len = (*entry)["bytes"].get<size_t>();
      ASSERT_LE(off + len, bytes.size());
      std::vector<float> v(len / 4);
      std::memcpy(v.data(), bytes.data() + off, len);
      for (size_t i = 0; i < v.size(); ++i) ASSERT_EQ(v[i], got[at + i]) << name << "[" << i << "]";
      at += v.size();
    }
    EXPECT_EQ(at, got.size());
  }
  sharded.reset();
  single.reset();
  ASSERT_TRUE(c.barrier().is_ok());
  if (c.rank() == 0) std::filesystem::remove_all(dir);
  ASSERT_TRUE(c.barrier().is_ok());  // no rank starts the next test's files before the removal
}

INSTANTIATE_TEST_SUITE_P(
    Stages, Zero,
    ::testing::Values(ZeroCase{1, "none", "none"}, ZeroCase{1, "cpu", "none"}, ZeroCase{2, "none", "none"},
                      ZeroCase{2, "cpu", "none"}, ZeroCase{2, "nvme", "none"}, ZeroCase{3, "none", "none"},
                      ZeroCase{3, "cpu", "none"}, ZeroCase{3, "cpu", "cpu"}, ZeroCase{3, "nvme", "nvme"}),
    [](const ::testing::TestParamInfo<ZeroCase>& i) {
      return "stage" + std::to_string(i.param.stage) + "_optimizer_" + i.param.optimizer + "_params_" + i.param.param;
    });

TEST(DdpSetup, RankZerosInitialValuesReachEveryRank) {
  comm::Communicator& c = world();
  auto e = make("\"stage\": 0", 1, &c);
  std::vector<float> mine(3000, static_cast<float>(c.rank()) + 0.25f);
  ASSERT_TRUE(e->register_param("w1", {3000}, DType::kF32, mine.data()).is_ok());
  ASSERT_TRUE(e->prepare().is_ok());
  std::vector<float> got(3000);
  ASSERT_TRUE(e->read_master("w1", got.data(), got.size()).is_ok());
  for (float x : got) ASSERT_EQ(x, 0.25f);
}

TEST(DdpSetup, RanksWithDifferentParamsAreRefusedOnEveryRank) {
  comm::Communicator& c = world();
  if (c.size() < 2) GTEST_SKIP() << "needs 2 ranks";
  auto e = make("\"stage\": 0", 1, &c);
  register_all(*e);
  if (c.rank() == 1) {
    ASSERT_TRUE(e->register_param("extra", {5}, DType::kF32, nullptr).is_ok());
  }
  Status s = e->prepare();
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find("different params"), std::string::npos) << s.message();
}

// Lion and Adagrad across ranks at ZeRO stages 2 and 3 (optimizer on the host and on NVMe):
// N ranks equal one rank accumulating their shares, as for Adam above.
struct OtherCase {
  const char* type;
  ZeroCase zero;
};

void PrintTo(const OtherCase& o, std::ostream* os) {
  *os << o.type << ", ";
  PrintTo(o.zero, os);
}

class OtherOptimizers : public ::testing::TestWithParam<OtherCase> {};

TEST_P(OtherOptimizers, NRanksEqualOneRankAccumulatingTheirShares) {
  comm::Communicator& c = world();
  const OtherCase o = GetParam();
  const std::string dir = scratch_dir();
  std::filesystem::create_directories(dir);
  auto sharded = make(zero_json(o.zero, dir + "/sharded_" + o.type), 1, &c, o.type);
  auto single =
      make(zero_json(o.zero, dir + "/single_" + o.type + std::to_string(c.rank())), c.size(), nullptr, o.type);
  std::vector<float> got;
  train_both(c, *sharded, *single, &got);
  sharded.reset();
  single.reset();
  ASSERT_TRUE(c.barrier().is_ok());
  if (c.rank() == 0) std::filesystem::remove_all(dir);
  ASSERT_TRUE(c.barrier().is_ok());  // no rank starts the next test's files before the removal
}

INSTANTIATE_TEST_SUITE_P(LionAdagrad, OtherOptimizers,
                         ::testing::Values(OtherCase{"Lion", {2, "cpu", "none"}}, OtherCase{"Lion", {3, "nvme", "cpu"}},
                                           OtherCase{"Adagrad", {2, "nvme", "none"}},
                                           OtherCase{"Adagrad", {3, "cpu", "nvme"}}),
                         [](const ::testing::TestParamInfo<OtherCase>& i) {
                           return std::string(i.param.type) + "_stage" + std::to_string(i.param.zero.stage) + "_opt_" +
                                  i.param.zero.optimizer + "_param_" + i.param.zero.param;
                         });

}  // namespace
}  // namespace strata::engine
