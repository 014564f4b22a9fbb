// The optimizer step during backward across ranks (under mpirun with 1 and 2 CPU ranks): DDP and
// ZeRO 2 / 3 with the optimizer state on the host or NVMe train to bit-identical fp32 masters and
// bit16 params with strata.speculate on and off, over clipping never / sometimes / every step, a
// non-finite gradient on one rank, and accumulation 1 and 2. Where clipping triggers, chunks were
// redone. With the fp32 gradients on NVMe (strata.gradient_tier), also the same as with host ones.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "kernels/reference/half.h"
#include "src/engine/engine.h"
#include "tests/engine/mpi_world.h"

namespace strata::engine {
namespace {

using mpi_test::world;

const std::vector<std::pair<std::string, size_t>> kParams = {{"w1", 3000}, {"w2", 4000}, {"b", 7}};
constexpr int kSteps = 5;

enum class Clip { kNever, kSometimes, kAlways, kNonFinite };

struct Case {
  const char* name;
  const char* zero;  // NVMEDIR: the run's directory
  Clip clip;
  int gas;
  bool nvme = false;           // the optimizer state is on NVMe
  const char* grads = "auto";  // strata.gradient_tier
};

void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

struct Trained {
  std::vector<float> master;
  std::vector<uint16_t> bit16;
  std::vector<StepResult> steps;
  EngineStats stats;
};

Trained train(const Case& k, double clip, bool speculate, const std::string& dir, comm::Communicator& c,
              const std::string& grads = "") {
  std::string zero = k.zero;
  for (size_t at; (at = zero.find("NVMEDIR")) != std::string::npos;) zero.replace(at, 7, dir);
  const std::string json =
      "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.05, \"weight_decay\": 0.01}}, "
      "\"gradient_clipping\": " +
      std::to_string(clip) + ", \"gradient_accumulation_steps\": " + std::to_string(k.gas) +
      ", \"zero_optimization\": {" + zero +
      "}, \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 4096" +
      (speculate ? ", \"speculate_device\": true" : ", \"speculate\": false") + ", \"gradient_tier\": \"" +
      (grads.empty() ? k.grads : grads) + "\"}}";
  Trained t;
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  if (!cfg.is_ok()) return t;
  EngineOptions o;
  o.log = [](const std::string&) {};
  o.comm = &c;
  auto made = Engine::create(cfg.value(), o);
  EXPECT_TRUE(made.is_ok()) << made.status().to_string();
  if (!made.is_ok()) return t;
  Engine& e = *made.value();
  for (const auto& [name, n] : kParams)
    EXPECT_TRUE(e.register_param(name, {static_cast<int64_t>(n)}, DType::kF32, nullptr).is_ok());
  for (int step = 0; step < kSteps; ++step) {
    for (int m = 0; m < k.gas; ++m) {
      // Backward hands the params over in reverse order, as a model's backward would.
      for (auto it = kParams.rbegin(); it != kParams.rend(); ++it) {
        const auto& [name, n] = *it;
        auto p = e.fetch(name);
        EXPECT_TRUE(p.is_ok()) << p.status().to_string();
        if (!p.is_ok()) return t;
        const auto* bits = static_cast<const uint16_t*>(p.value());
        std::vector<uint16_t> g(n);
        for (size_t i = 0; i < n; ++i) {
          const float target = std::sin(0.37f * static_cast<float>(i) + 1.3f * static_cast<float>(c.rank()) +
                                        0.7f * static_cast<float>(m) + static_cast<float>(name.size()));
          g[i] = reference::float_to_bf16(0.5f * reference::bf16_to_float(bits[i]) - target);
        }
        if (k.clip == Clip::kNonFinite && step == 2 && m == k.gas - 1 && c.rank() == 0 && name == "w1") g[5] = 0x7F80;
        EXPECT_TRUE(e.grad(name, g.data(), DType::kBF16, n).is_ok());
        EXPECT_TRUE(e.release(name).is_ok());
      }
      auto r = e.step();
      EXPECT_TRUE(r.is_ok()) << r.status().to_string();
      if (r.is_ok() && r.value().boundary) t.steps.push_back(r.value());
    }
  }
  for (const auto& [name, n] : kParams) {
    std::vector<float> v(n);
    EXPECT_TRUE(e.read_master(name, v.data(), n).is_ok());
    t.master.insert(t.master.end(), v.begin(), v.end());
    auto p = e.fetch(name);
    EXPECT_TRUE(p.is_ok());
    if (!p.is_ok()) continue;
    const auto* bits = static_cast<const uint16_t*>(p.value());
    t.bit16.insert(t.bit16.end(), bits, bits + n);
    EXPECT_TRUE(e.release(name).is_ok());
  }
  t.stats = e.stats();
  return t;
}

class RankSpeculation : public ::testing::TestWithParam<Case> {};

TEST_P(RankSpeculation, BitIdenticalToTheSynchronousStep) {
  comm::Communicator& c = world();
  const Case k = GetParam();
  const std::string dir = mpi_test::scratch_dir("strata_spec_test_");
  std::filesystem::create_directories(dir);
  double clip = k.clip == Clip::kAlways ? 1e-3 : 0.0;
  if (k.clip == Clip::kSometimes) {  // the median norm of an unclipped run
    const Trained probe = train(k, 0.0, false, dir + "/probe", c);
    std::vector<double> norms;
    for (const StepResult& r : probe.steps)
      if (std::isfinite(r.grad_norm)) norms.push_back(r.grad_norm);
    ASSERT_GE(norms.size(), 3u);
    std::sort(norms.begin(), norms.end());
    clip = norms[norms.size() / 2];
  }
  const Trained sync = train(k, clip, false, dir + "/sync", c);
  const Trained spec = train(k, clip, true, dir + "/spec", c);
  ASSERT_EQ(sync.master.size(), spec.master.size());
  for (size_t i = 0; i < sync.master.size(); ++i) ASSERT_EQ(spec.master[i], sync.master[i]) << "master " << i;
  ASSERT_EQ(sync.bit16, spec.bit16);
  int clipped = 0, skipped = 0, speculated = 0, redone = 0;
  for (const StepResult& r : sync.steps) {
    clipped += r.applied && r.clip_coef < 1.0;
    skipped += r.overflow;
  }
  for (const StepResult& r : spec.steps) {
    speculated += r.chunks_speculated;
    redone += r.chunks_redone;
  }
  EXPECT_EQ(sync.stats.chunks_speculated, 0);
  if (std::string(k.grads) == "nvme") {  // the same as with host gradients; without slots every gradient via the disk
    const Trained host = train(k, clip, false, dir + "/host", c, "host");
    for (size_t i = 0; i < sync.master.size(); ++i) ASSERT_EQ(host.master[i], sync.master[i]) << "master " << i;
    EXPECT_GT(sync.stats.bytes_nvme_write, host.stats.bytes_nvme_write);
    EXPECT_GT(sync.stats.bytes_nvme_read, host.stats.bytes_nvme_read);
  }
  if (k.nvme) {  // NVMe state: read ahead, updated at the step with its constants
    EXPECT_GT(spec.stats.chunks_read_ahead, 0);
    EXPECT_EQ(speculated, 0);
    return;
  }
  EXPECT_GT(speculated, 0) << "chunks were updated during backward";
  if (k.clip == Clip::kNever) {
    EXPECT_EQ(redone, 0);
  }
  if (k.clip == Clip::kSometimes) {
    EXPECT_GT(clipped, 0);
    EXPECT_GT(redone, 0);
    EXPECT_LT(redone, speculated);
  }
  if (k.clip == Clip::kAlways) {
    EXPECT_EQ(redone, speculated);
  }
  if (k.clip == Clip::kNonFinite) {
    EXPECT_EQ(skipped, 1);
    EXPECT_GT(redone, 0);
  }
  ASSERT_TRUE(c.barrier().is_ok());
  if (c.rank() == 0) std::filesystem::remove_all(dir);
  ASSERT_TRUE(c.barrier().is_ok());
}

// Device-resident state: updated during backward by the device kernel, backups in device memory.
constexpr const char* kDdpDevice = "\"stage\": 0";
constexpr const char* kZ2Device = "\"stage\": 2";
constexpr const char* kZ3Device = "\"stage\": 3";
constexpr const char* kDdpHost = "\"stage\": 0, \"offload_optimizer\": {\"device\": \"cpu\"}";
constexpr const char* kZ2Host = "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}";
constexpr const char* kZ2Nvme =
    "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}";
constexpr const char* kZ3Host =
    "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"cpu\"}";
constexpr const char* kZ3Nvme =
    "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}, \"offload_param\": "
    "{\"device\": \"nvme\", \"nvme_path\": \"NVMEDIR\"}";

INSTANTIATE_TEST_SUITE_P(
    Placements, RankSpeculation,
    ::testing::Values(Case{"ddp_device_clip_sometimes", kDdpDevice, Clip::kSometimes, 1},
                      Case{"zero2_device_nonfinite_gas2", kZ2Device, Clip::kNonFinite, 2},
                      Case{"zero3_device_clip_always", kZ3Device, Clip::kAlways, 1},
                      Case{"ddp_host_clip_sometimes", kDdpHost, Clip::kSometimes, 1},
                      Case{"ddp_host_nonfinite_gas2", kDdpHost, Clip::kNonFinite, 2},
                      Case{"zero2_host_clip_never_gas2", kZ2Host, Clip::kNever, 2},
                      Case{"zero2_host_clip_sometimes", kZ2Host, Clip::kSometimes, 1},
                      Case{"zero2_nvme_clip_never", kZ2Nvme, Clip::kNever, 1, true},
                      Case{"zero2_nvme_clip_sometimes_gas2", kZ2Nvme, Clip::kSometimes, 2, true},
                      Case{"zero2_nvme_nonfinite", kZ2Nvme, Clip::kNonFinite, 1, true},
                      Case{"zero3_host_clip_always", kZ3Host, Clip::kAlways, 1},
                      Case{"zero3_host_clip_sometimes_gas2", kZ3Host, Clip::kSometimes, 2},
                      Case{"zero3_nvme_clip_sometimes", kZ3Nvme, Clip::kSometimes, 1, true},
                      Case{"zero3_nvme_nonfinite_gas2", kZ3Nvme, Clip::kNonFinite, 2, true},
                      Case{"zero2_nvme_grads_nvme_clip_sometimes", kZ2Nvme, Clip::kSometimes, 1, true, "nvme"},
                      Case{"zero3_nvme_grads_nvme_nonfinite", kZ3Nvme, Clip::kNonFinite, 1, true, "nvme"},
                      Case{"zero3_nvme_grads_nvme_clip_always", kZ3Nvme, Clip::kAlways, 1, true, "nvme"}),
    [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

}  // namespace
}  // namespace strata::engine
