// Engine behaviour beyond training equivalence: strata's own seeded initialisation, the device
// choice, gradient accumulation in fp32 across micro-batches, and gradient buckets flushed early
// when more chunks are open than buckets exist — each against a closed form or a second engine run
// that takes a different path to the same result.
#include "src/engine/engine.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cmath>

#include "kernels/reference/half.h"
#include "offload/device.h"
#include "src/common/fs.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

std::unique_ptr<Engine> make(const std::string& extra_strata, const std::string& extra_root = "") {
  const std::string json = "{" + extra_root + "\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}, " +
                           "\"strata\": {\"device\": \"host\", \"device_bytes\": 4194304, \"chunk_bytes\": 8192" +
                           extra_strata + "}}";
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  EngineOptions o;
  o.log = [](const std::string&) {};
  auto e = Engine::create(cfg.value(), o);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return std::move(e).value();
}

std::vector<float> master(Engine& e, const std::string& n, size_t count) {
  std::vector<float> v(count);
  EXPECT_TRUE(e.read_master(n, v.data(), count).is_ok());
  return v;
}

TEST(Engine, SeededInitialisationIsNormalDeterministicAndPerName) {
  auto a = make(", \"seed\": 7"), b = make(", \"seed\": 7"), c = make(", \"seed\": 8");
  constexpr size_t n = 20000;
  for (Engine* e : {a.get(), b.get(), c.get()}) {
    ASSERT_TRUE(e->register_param("x", {100, 200}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->register_param("y", {100, 200}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->prepare().is_ok());
  }
  const auto ax = master(*a, "x", n), bx = master(*b, "x", n), cx = master(*c, "x", n), ay = master(*a, "y", n);
  EXPECT_EQ(ax, bx) << "same seed, same values";
  EXPECT_NE(ax, cx) << "another seed";
  EXPECT_NE(ax, ay) << "another name";
  double sum = 0, sq = 0;
  for (float v : ax) {
    sum += v;
    sq += static_cast<double>(v) * v;
  }
  const double mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
  EXPECT_LT(std::abs(mean), 4 * 0.02 / std::sqrt(static_cast<double>(n)));
  EXPECT_NEAR(sd, 0.02, 5e-4);
  // The fetched bit16 values are the master rounded to nearest even.
  auto p = a->fetch("x");
  ASSERT_TRUE(p.is_ok());
  const auto* w = static_cast<const uint16_t*>(p.value());
  for (size_t i = 0; i < n; ++i) ASSERT_EQ(w[i], reference::float_to_bf16(ax[i])) << i;
  EXPECT_TRUE(a->release("x").is_ok());
}

TEST(Engine, AskingForCudaWithoutAGpuSaysSo) {
  if (offload::open_device(offload::DeviceChoice::kCuda, 0).is_ok()) GTEST_SKIP() << "a GPU is usable here";
  auto cfg = parse_engine_config(R"({"strata": {"device": "cuda"}})");
  ASSERT_TRUE(cfg.is_ok());
  auto e = Engine::create(cfg.value());
  ASSERT_FALSE(e.is_ok());
  EXPECT_NE(e.status().message().find("CUDA"), std::string::npos) << e.status().message();
}

// The swap folder's last level is created (like DeepSpeed's); a missing parent is refused as
// NOT_FOUND naming it (an unmounted NVMe must not fill the root disk), a file in the way named.
TEST(Engine, NvmePathsLastLevelIsCreatedAMissingParentOrAFileInTheWayIsNamed) {
  strata::testing::ScratchDir dir;
  const std::string deep = dir.path() + "/a/b/swap";
  auto d =
      make("", "\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                   deep + "\"}}, ");
  ASSERT_TRUE(d->register_param("w", {3000}, DType::kF32, nullptr).is_ok());
  Status missing = d->prepare();
  ASSERT_EQ(missing.code(), StatusCode::kNotFound) << missing.to_string();
  EXPECT_NE(missing.message().find("its parent '" + dir.path() + "/a/b' does not exist"), std::string::npos)
      << missing.message();
  EXPECT_FALSE(fs::exists(dir.path() + "/a")) << "nothing was created";

  const std::string nested = dir.path() + "/swap";
  auto e =
      make("", "\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                   nested + "\"}}, ");
  const std::vector<float> init(3000, 0.5f);
  ASSERT_TRUE(e->register_param("w", {3000}, DType::kF32, init.data()).is_ok());
  Status s = e->prepare();
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  struct stat st {};
  ASSERT_EQ(::stat(nested.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(master(*e, "w", 3000), init) << "the state went through the new directory";

  // A regular file where a directory of the path should be: refused, naming the path.
  ASSERT_TRUE(fs::write_file(dir.path() + "/file", "x").is_ok());
  auto f =
      make("", "\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" +
                   dir.path() + "/file/swap\"}}, ");
  ASSERT_TRUE(f->register_param("w", {3000}, DType::kF32, init.data()).is_ok());
  Status bad = f->prepare();
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.message().find(dir.path() + "/file/swap"), std::string::npos) << bad.to_string();
}

// Hands `grads` (bf16) for the listed params in that order, each fetched first.
void micro(Engine& e, const std::vector<std::pair<std::string, std::vector<uint16_t>>>& grads) {
  for (const auto& [n, g] : grads) ASSERT_TRUE(e.fetch(n).is_ok());
  for (const auto& [n, g] : grads) {
    Status s = e.grad(n, g.data(), DType::kBF16, g.size());
    ASSERT_TRUE(s.is_ok()) << s.to_string();
  }
  for (const auto& [n, g] : grads) ASSERT_TRUE(e.release(n).is_ok());
  ASSERT_TRUE(e.step().is_ok());
}

std::vector<uint16_t> ramp(size_t n, float a, float b) {
  std::vector<uint16_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = reference::float_to_bf16(a + b * static_cast<float>(i % 17));
  return v;
}

TEST(Engine, AccumulationSumsMicroBatchGradientsInFp32) {
  // Two micro-batches g1, g2 with gradient_accumulation_steps = 2 are averaged: the same update as
  // one micro-batch of (g1 + g2) / 2, which is exact in bf16 here (multiples of 1/128, few bits).
  auto one = make("");
  auto two = make("", "\"gradient_accumulation_steps\": 2, ");
  for (Engine* e : {one.get(), two.get()}) {
    ASSERT_TRUE(e->register_param("w", {3000}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->prepare().is_ok());
  }
  const auto g1 = ramp(3000, -0.25f, 1.0f / 64), g2 = ramp(3000, 0.125f, -1.0f / 64);
  std::vector<uint16_t> mean(3000);
  for (size_t i = 0; i < mean.size(); ++i)
    mean[i] = reference::float_to_bf16((reference::bf16_to_float(g1[i]) + reference::bf16_to_float(g2[i])) / 2);
  micro(*one, {{"w", mean}});
  micro(*two, {{"w", g1}});
  micro(*two, {{"w", g2}});
  EXPECT_EQ(one->stats().optimizer_steps, 1);
  EXPECT_EQ(two->stats().optimizer_steps, 1);
  EXPECT_EQ(master(*one, "w", 3000), master(*two, "w", 3000));
}

class EngineBuckets : public ::testing::TestWithParam<const char*> {};

TEST_P(EngineBuckets, FlushedEarlyGiveTheSameResult) {
  // Chunk 0 holds a1, a2; chunk 1 holds b. With one bucket, b's gradient arrives while chunk 0's
  // bucket is half full: that bucket is flushed early and a second one opened for a2.
  auto many = make(", \"grad_buckets\": 4", GetParam());
  auto one = make(", \"grad_buckets\": 1", GetParam());
  for (Engine* e : {many.get(), one.get()}) {
    ASSERT_TRUE(e->register_param("a1", {1500}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->register_param("a2", {1500}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->register_param("b", {4000}, DType::kF32, nullptr).is_ok());
    ASSERT_TRUE(e->prepare().is_ok());
  }
  const auto ga1 = ramp(1500, 0.5f, -0.01f), ga2 = ramp(1500, -0.3f, 0.02f), gb = ramp(4000, 0.1f, 0.001f);
  for (int s = 0; s < 3; ++s) {
    micro(*many, {{"a1", ga1}, {"b", gb}, {"a2", ga2}});
    micro(*one, {{"a1", ga1}, {"b", gb}, {"a2", ga2}});
  }
  for (const auto& [n, count] : std::vector<std::pair<std::string, size_t>>{{"a1", 1500}, {"a2", 1500}, {"b", 4000}})
    EXPECT_EQ(master(*many, n, count), master(*one, n, count)) << n;
  EXPECT_EQ(many->stats().early_flushes, 0);
  EXPECT_EQ(one->stats().early_flushes, 3) << "once per micro-batch";
}

INSTANTIATE_TEST_SUITE_P(OptimizerOnDeviceAndOnCpu, EngineBuckets,
                         ::testing::Values("",
                                           "\"zero_optimization\": {\"offload_optimizer\": {\"device\": \"cpu\"}}, "));

}  // namespace
}  // namespace strata::engine
