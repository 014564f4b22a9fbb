// fp32 gradients on NVMe (strata.gradient_tier = "nvme") when the host program hands gradients
// over in an order that interleaves more chunks than there are assembly buffers (partial sums
// written out and read back), leaves a param without a gradient and a chunk without any: the same
// fp32 masters, bit16 params and norms as host gradients, bit for bit.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/reference/half.h"
#include "src/engine/engine.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

constexpr int kParams = 16;  // two per chunk of chunk_bytes 8192: eight chunks
constexpr size_t kNumel = 2048;
constexpr int kSteps = 4;

struct Trained {
  std::vector<float> master;
  std::vector<uint16_t> bit16;
  std::vector<double> norms;
  EngineStats stats;
};

std::string name(int i) { return "p" + std::to_string(i); }

Trained train(const std::string& tier, const std::string& dir, bool speculate) {
  const std::string json =
      "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01, \"weight_decay\": 0.01}}, "
      "\"gradient_clipping\": 4.0, \"bf16\": {\"enabled\": true}, \"zero_optimization\": {\"stage\": 2, "
      "\"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
      dir +
      "\"}}, \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 8192, \"grad_buckets\": "
      "1, \"speculate\": " +
      std::string(speculate ? "true" : "false") + ", \"gradient_tier\": \"" + tier + "\"}}";
  Trained t;
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  if (!cfg.is_ok()) return t;
  EngineOptions o;
  o.log = [](const std::string&) {};
  auto made = Engine::create(cfg.value(), o);
  EXPECT_TRUE(made.is_ok()) << made.status().to_string();
  if (!made.is_ok()) return t;
  Engine& e = *made.value();
  for (int i = 0; i < kParams; ++i)
    EXPECT_TRUE(e.register_param(name(i), {static_cast<int64_t>(kNumel)}, DType::kF32, nullptr).is_ok());
  // Even params first, then odd ones: every chunk is half-summed before any is complete. p13 gets
  // no gradient (its chunk completes at the step), nor do p14 and p15 (a chunk with none).
  std::vector<int> order;
  for (int i = 0; i < kParams; i += 2) order.push_back(i);
  for (int i = 1; i < kParams; i += 2) order.push_back(i);
  for (int step = 0; step < kSteps; ++step) {
    for (int i : order) {
      if (i >= 13) continue;
      auto p = e.fetch(name(i));
      EXPECT_TRUE(p.is_ok()) << p.status().to_string();
      if (!p.is_ok()) return t;
      const auto* bits = static_cast<const uint16_t*>(p.value());
      std::vector<uint16_t> g(kNumel);
      for (size_t k = 0; k < kNumel; ++k)
        g[k] = reference::float_to_bf16(0.5f * reference::bf16_to_float(bits[k]) -
                                        std::sin(0.37f * static_cast<float>(k) + static_cast<float>(i + step)));
      EXPECT_TRUE(e.grad(name(i), g.data(), DType::kBF16, kNumel).is_ok());
      EXPECT_TRUE(e.release(name(i)).is_ok());
    }
    auto r = e.step();
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    if (r.is_ok()) t.norms.push_back(r.value().grad_norm);
  }
  for (int i = 0; i < kParams; ++i) {
    std::vector<float> v(kNumel);
    EXPECT_TRUE(e.read_master(name(i), v.data(), kNumel).is_ok());
    t.master.insert(t.master.end(), v.begin(), v.end());
    auto p = e.fetch(name(i));
    EXPECT_TRUE(p.is_ok());
    if (!p.is_ok()) continue;
    const auto* bits = static_cast<const uint16_t*>(p.value());
    t.bit16.insert(t.bit16.end(), bits, bits + kNumel);
    EXPECT_TRUE(e.release(name(i)).is_ok());
  }
  t.stats = e.stats();
  return t;
}

// Without step slots (strata.speculate false) every gradient goes through the disk.
TEST(NvmeGradients, InterleavedAndMissingGradientsTrainAsHostGradients) {
  strata::testing::ScratchDir d0, d1;
  const Trained host = train("host", d0.path(), false);
  const Trained nvme = train("nvme", d1.path(), false);
  ASSERT_EQ(host.master.size(), static_cast<size_t>(kParams) * kNumel);
  ASSERT_EQ(nvme.master.size(), host.master.size());
  for (size_t i = 0; i < host.master.size(); ++i) ASSERT_EQ(nvme.master[i], host.master[i]) << "master " << i;
  EXPECT_EQ(nvme.bit16, host.bit16);
  EXPECT_EQ(nvme.norms, host.norms);
  int clipped = 0;
  for (double n : host.norms) clipped += n > 4.0;
  EXPECT_GT(clipped, 0) << "clipping took part";
  EXPECT_GT(host.stats.early_flushes, 0u) << "the order interleaved the chunks";
  // Per step every chunk's gradient was written and read once, and partial sums went out and came
  // back: more than one write and one read of the gradients per step.
  const size_t grads = static_cast<size_t>(kParams) * kNumel * 4;
  EXPECT_GT(nvme.stats.bytes_nvme_write - host.stats.bytes_nvme_write, kSteps * grads);
  EXPECT_GT(nvme.stats.bytes_nvme_read - host.stats.bytes_nvme_read, kSteps * grads);
}

// With step slots the chunks whose state is read ahead take their gradient there (no NVMe copy):
// the same masters, less gradient traffic than one write and one read a step.
TEST(NvmeGradients, GradientsJoinTheStateReadAhead) {
  strata::testing::ScratchDir d0, d1;
  const Trained host = train("host", d0.path(), true);
  const Trained nvme = train("nvme", d1.path(), true);
  ASSERT_EQ(nvme.master.size(), host.master.size());
  for (size_t i = 0; i < host.master.size(); ++i) ASSERT_EQ(nvme.master[i], host.master[i]) << "master " << i;
  EXPECT_EQ(nvme.bit16, host.bit16);
  EXPECT_GT(nvme.stats.chunks_read_ahead, 0);
  const size_t grads = static_cast<size_t>(kParams) * kNumel * 4;
  EXPECT_LT(nvme.stats.bytes_nvme_read - host.stats.bytes_nvme_read, kSteps * grads);
}

}  // namespace
}  // namespace strata::engine
