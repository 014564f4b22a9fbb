// The GPT model's CUDA path (skipped without a GPU, except the refusal): from the same bf16
// params it gives the CPU path's loss and gradients within bf16 tolerance; it is deterministic,
// and activation checkpointing and evaluation change no bit; trained through the engine on the
// GPU, every placement (device budget below the model) gives the losses of the run with
// everything on the device, and the loss falls.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "kernels/cuda/cuda_runtime.h"
#include "kernels/reference/half.h"
#include "src/train/gpt.h"
#include "src/train/trainer.h"
#include "tests/offload/scratch_dir.h"

namespace strata::train {
namespace {

bool have_gpu() {
  auto n = kernels::cuda::device_count();
  return n.is_ok() && n.value() > 0;
}

const GptShape kShape{2, 4, 128, 256, 96};
constexpr int B = 3, T = 80;  // T > 64: the row kernels loop over several warps' widths

// bf16 params (GPT-2 init, 1-D params perturbed so their gradients matter) on the host.
std::map<std::string, std::vector<uint16_t>> make_params(const GptShape& shape = kShape) {
  std::map<std::string, std::vector<uint16_t>> out;
  for (const ParamInfo& p : gpt_params(shape)) {
    std::vector<float> v(p.numel());
    gpt_init(shape, p, 11, v.data());
    std::mt19937 g(static_cast<uint32_t>(p.name.size() * 977 + p.name.back()));
    std::normal_distribution<float> d(0.0f, 0.1f);
    if (p.shape.size() == 1)
      for (float& x : v) x += d(g);
    std::vector<uint16_t>& bits = out[p.name];
    for (float x : v) bits.push_back(reference::float_to_bf16(x));
  }
  return out;
}

// The CPU path's source: host bf16 values, fp32 gradients.
class HostSource final : public ParamSource {
 public:
  explicit HostSource(const std::map<std::string, std::vector<uint16_t>>& p) : values_(p) {}
  StatusOr<const void*> fetch(const std::string& n) override { return static_cast<const void*>(values_.at(n).data()); }
  Status release(const std::string&) override { return Status::ok(); }
  Status grad(const std::string& n, const float* g, size_t count) override {
    grads[n].assign(g, g + count);
    return Status::ok();
  }
  DType dtype() const override { return DType::kBF16; }
  std::map<std::string, std::vector<float>> grads;

 private:
  const std::map<std::string, std::vector<uint16_t>>& values_;
};

// The CUDA path's source: the same values in device memory; bf16 gradients copied back.
class DeviceSource final : public ParamSource {
 public:
  explicit DeviceSource(const std::map<std::string, std::vector<uint16_t>>& p) {
    for (const auto& [n, v] : p) {
      void* d = nullptr;
      EXPECT_EQ(cudaMalloc(&d, v.size() * 2), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(d, v.data(), v.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
      dev_[n] = d;
    }
  }
  ~DeviceSource() override {
    for (auto& [n, d] : dev_) cudaFree(d);
  }
  StatusOr<const void*> fetch(const std::string& n) override {
    return Status(StatusCode::kInternal, "host fetch of " + n);
  }
  StatusOr<const void*> fetch_device(const std::string& n, void*) override {
    ++outstanding;
    return static_cast<const void*>(dev_.at(n));
  }
  Status release(const std::string&) override {
    --outstanding;
    return Status::ok();
  }
  Status grad(const std::string& n, const float*, size_t) override {
    return Status(StatusCode::kInternal, "host grad of " + n);
  }
  Status grad_device(const std::string& n, const void* g, size_t count, void* stream) override {
    EXPECT_EQ(grads.count(n), 0u) << n << " handed twice";
    std::vector<uint16_t> bits(count);
    EXPECT_EQ(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(bits.data(), g, count * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    std::vector<float>& out = grads[n];
    for (uint16_t b : bits) out.push_back(reference::bf16_to_float(b));
    return Status::ok();
  }
  DType dtype() const override { return DType::kBF16; }
  std::map<std::string, std::vector<float>> grads;
  int outstanding = 0;

 private:
  std::map<std::string, void*> dev_;
};

void tokens(std::vector<int32_t>* in, std::vector<int32_t>* tgt, int n, uint32_t seed) {
  std::mt19937 g(seed);
  in->resize(n), tgt->resize(n);
  for (int i = 0; i < n; ++i) (*in)[i] = static_cast<int32_t>(g() % 256), (*tgt)[i] = static_cast<int32_t>(g() % 256);
}

TEST(GptCuda, WithoutAGpuTheCudaPathIsRefusedByName) {
  if (have_gpu()) GTEST_SKIP() << "a GPU is usable here";
  auto m = GptModel::create(kShape, B, T, false, Compute::kCuda);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kUnsupported);
  EXPECT_NE(m.status().message().find("GPU"), std::string::npos) << m.status().to_string();
}

struct Case {
  const char* name;
  GptShape shape;
  int b, t;
};

class Agreement : public ::testing::TestWithParam<Case> {};

TEST_P(Agreement, TheCudaPathAgreesWithTheCpuPath) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const Case& c = GetParam();
  const auto params = make_params(c.shape);
  std::vector<int32_t> in, tgt;
  tokens(&in, &tgt, c.b * c.t, 3);
  auto cpu = GptModel::create(c.shape, c.b, c.t, false, Compute::kCpu);
  auto gpu = GptModel::create(c.shape, c.b, c.t, false, Compute::kCuda);
  ASSERT_TRUE(cpu.is_ok() && gpu.is_ok()) << gpu.status().to_string();
  HostSource hs(params);
  DeviceSource ds(params);
  const float scale = 64.0f;
  auto lc = cpu.value()->train_micro(hs, in.data(), tgt.data(), scale);
  auto lg = gpu.value()->train_micro(ds, in.data(), tgt.data(), scale);
  ASSERT_TRUE(lc.is_ok() && lg.is_ok()) << lg.status().to_string();
  EXPECT_NEAR(lg.value(), lc.value(), 2e-3 * lc.value()) << "loss";
  EXPECT_EQ(ds.outstanding, 0) << "every fetch released";
  ASSERT_EQ(ds.grads.size(), hs.grads.size());
  for (const auto& [name, want] : hs.grads) {
    const std::vector<float>& got = ds.grads.at(name);
    ASSERT_EQ(got.size(), want.size()) << name;
    double err = 0, norm = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << name << " " << i;
      err += (static_cast<double>(got[i]) - want[i]) * (static_cast<double>(got[i]) - want[i]);
      norm += static_cast<double>(want[i]) * want[i];
    }
    ASSERT_GT(norm, 0.0) << name;
    // bf16 operands (8 bits of mantissa) and a bf16-rounded result: ~1e-2 relative.
    EXPECT_LT(std::sqrt(err / norm), 2.5e-2) << name;
  }
}

// Small and narrow; and GPT-2 medium's width (16 heads of 64) over 256 positions.
INSTANTIATE_TEST_SUITE_P(Shapes, Agreement,
                         ::testing::Values(Case{"small", kShape, B, T},
                                           Case{"wide", GptShape{2, 16, 1024, 256, 256}, 2, 256}),
                         [](const ::testing::TestParamInfo<Case>& i) { return std::string(i.param.name); });

TEST(GptCuda, DeterministicAndCheckpointingAndEvaluationChangeNoBit) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  const auto params = make_params();
  std::vector<int32_t> in, tgt;
  tokens(&in, &tgt, B * T, 4);
  auto plain = GptModel::create(kShape, B, T, false, Compute::kCuda);
  auto ckpt = GptModel::create(kShape, B, T, true, Compute::kCuda);
  ASSERT_TRUE(plain.is_ok() && ckpt.is_ok());
  DeviceSource a(params), b(params), c(params);
  auto la = plain.value()->train_micro(a, in.data(), tgt.data(), 1.0f);
  auto lb = ckpt.value()->train_micro(b, in.data(), tgt.data(), 1.0f);
  auto lc = plain.value()->train_micro(c, in.data(), tgt.data(), 1.0f);  // again, same model
  auto le = ckpt.value()->eval_loss(c, in.data(), tgt.data());
  ASSERT_TRUE(la.is_ok() && lb.is_ok() && lc.is_ok() && le.is_ok());
  EXPECT_EQ(la.value(), lb.value());
  EXPECT_EQ(la.value(), lc.value());
  EXPECT_EQ(la.value(), le.value());
  EXPECT_EQ(c.outstanding, 0);
  for (const auto& [name, g] : a.grads) {
    EXPECT_EQ(g, b.grads.at(name)) << name << ": checkpointing changed the gradient";
    EXPECT_EQ(g, c.grads.at(name)) << name << ": a second run changed the gradient";
  }
}

TEST(GptCuda, BadTokensAreRefused) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  auto m = GptModel::create(kShape, B, T, false, Compute::kCuda);
  ASSERT_TRUE(m.is_ok());
  const auto params = make_params();
  DeviceSource s(params);
  std::vector<int32_t> in, tgt;
  tokens(&in, &tgt, B * T, 5);
  in[17] = 256;
  auto l = m.value()->train_micro(s, in.data(), tgt.data(), 1.0f);
  ASSERT_FALSE(l.is_ok());
  EXPECT_NE(l.status().message().find("token 17"), std::string::npos) << l.status().to_string();
}

TEST(TrainerCuda, Fp16OnTheGpuIsRefusedBeforeAnyWork) {
  auto cfg = engine::parse_engine_config(R"({"fp16": {"enabled": true}, "strata": {"device": "cuda"}})");
  ASSERT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  TrainOptions o;
  o.shape = GptShape{1, 2, 64, 256, 32};
  o.batch = 1, o.seq = 16, o.steps = 1, o.data_path = "/nonexistent/corpus.txt";
  auto r = run_training(
      cfg.value(), o, [](const std::string&) {}, engine::EngineOptions{});
  ASSERT_FALSE(r.is_ok());
  EXPECT_NE(r.status().message().find("bf16"), std::string::npos) << r.status().to_string();
}

TEST(TrainerCuda, EveryPlacementTrainsTheSameLossesOnTheGpu) {
  if (!have_gpu()) GTEST_SKIP() << "no CUDA device";
  strata::testing::ScratchDir dir;
  const std::string data = dir.path() + "/corpus.txt";
  ASSERT_TRUE(write_default_corpus(data, 96 << 10).is_ok());
  TrainOptions o;
  o.shape = GptShape{3, 2, 64, 256, 32};
  o.batch = 4, o.seq = 32, o.steps = 10, o.warmup = 2, o.val_every = 0, o.val_batches = 2, o.data_path = data;
  const size_t bit16 = o.shape.num_params() * 2;
  auto run = [&](const std::string& zero, size_t device_bytes) -> StatusOr<TrainSummary> {
    const std::string json = "{\"bf16\": {\"enabled\": true}, \"gradient_clipping\": 1.0, \"zero_optimization\": {" +
                             zero +
                             "}, \"strata\": {\"device\": \"cuda\", \"device_bytes\": " + std::to_string(device_bytes) +
                             ", \"chunk_bytes\": 32768}}";
    STRATA_ASSIGN_OR_RETURN(auto cfg, engine::parse_engine_config(json));
    engine::EngineOptions e;
    e.log = [](const std::string&) {};
    return run_training(
        cfg, o, [](const std::string&) {}, e);
  };
  auto base = run("\"stage\": 0", 64 << 20);
  ASSERT_TRUE(base.is_ok()) << base.status().to_string();
  EXPECT_LT(base.value().last_loss, base.value().first_loss - 0.5) << "the loss falls";
  strata::testing::ScratchDir nv;
  const std::string path = "\"nvme_path\": \"" + nv.path() + "\"";
  const std::vector<std::pair<std::string, std::string>> placements = {
      {"params + optimizer on the host",
       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": {\"device\": \"cpu\"}"},
      {"optimizer on NVMe",
       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": {\"device\": "
       "\"nvme\", " +
           path + "}"},
      {"params + optimizer on NVMe", "\"stage\": 3, \"offload_param\": {\"device\": \"nvme\", " + path +
                                         "}, \"offload_optimizer\": {\"device\": \"nvme\", " + path + "}"}};
  for (const auto& [what, zero] : placements) {
    auto r = run(zero, bit16 / 2);  // two working chunks + two buckets fit; the model does not
    ASSERT_TRUE(r.is_ok()) << what << ": " << r.status().to_string();
    EXPECT_GT(r.value().stats.bytes_h2d, 0) << what << ": params moved to the device";
    EXPECT_EQ(r.value().losses, base.value().losses) << what;
  }
}

}  // namespace
}  // namespace strata::train
