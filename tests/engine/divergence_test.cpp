// Training always ends: steps skipped for non-finite gradients are bounded (strata.max_consecutive_
// skips) with an error naming the step, the loss scale and the first param whose gradient is not
// finite; fp32 masters that turn inf / NaN in an update are an error naming the chunk; an NVMe swap
// file changed underneath is DATA_LOSS naming the tensor, in a Release build too.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "kernels/reference/half.h"
#include "offload/nvme_store.h"
#include "src/engine/engine.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

struct P {
  const char* name;
  std::vector<int64_t> shape;
  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
};
const std::vector<P> kParams = {{"w1", {3000}}, {"w2", {50, 80}}, {"b", {7}}};

std::unique_ptr<Engine> make(const std::string& json, const std::vector<P>& params = kParams) {
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  if (!cfg.is_ok()) return nullptr;
  EngineOptions o;
  o.log = [](const std::string&) {};
  auto e = Engine::create(cfg.value(), o);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  if (!e.is_ok()) return nullptr;
  for (const P& p : params) EXPECT_TRUE(e.value()->register_param(p.name, p.shape, DType::kF32, nullptr).is_ok());
  EXPECT_TRUE(e.value()->prepare().is_ok());
  return std::move(e).value();
}

std::string config(const std::string& precision, const std::string& extra_strata, const std::string& zero = "",
                   const std::string& optimizer = "\"lr\": 0.01", size_t chunk_bytes = 4096,
                   size_t device_bytes = 1048576) {
  return "{" + precision + "\"optimizer\": {\"type\": \"AdamW\", \"params\": {" + optimizer +
         "}}, \"zero_optimization\": {" + zero +
         "}, \"strata\": {\"device\": \"host\", \"device_bytes\": " + std::to_string(device_bytes) +
         ", \"chunk_bytes\": " + std::to_string(chunk_bytes) + extra_strata + "}}";
}

uint16_t bits(DType d, float x) { return d == DType::kF16 ? reference::float_to_fp16(x) : reference::float_to_bf16(x); }

// One micro-batch: every param fetched, handed a small gradient (scaled by the loss scale) with
// `bad` (inf / NaN) at element `at` of param `bad_param` when given, released; then step.
StatusOr<StepResult> micro(Engine& e, const char* bad_param = nullptr, size_t at = 0, float bad = 0,
                           const std::vector<P>& params = kParams) {
  for (const P& p : params) {
    auto f = e.fetch(p.name);
    if (!f.is_ok()) return f.status();
    std::vector<uint16_t> g(p.numel(), bits(e.param_dtype(), 0.01f * static_cast<float>(e.loss_scale())));
    if (bad_param != nullptr && std::string(bad_param) == p.name) g[at] = bits(e.param_dtype(), bad);
    STRATA_RETURN_IF_ERROR(e.grad(p.name, g.data(), e.param_dtype(), g.size()));
    STRATA_RETURN_IF_ERROR(e.release(p.name));
  }
  return e.step();
}

TEST(Divergence, Bf16NonFiniteGradientsStopAfterMaxConsecutiveSkips) {
  auto e = make(config("", ", \"max_consecutive_skips\": 3"));
  ASSERT_TRUE(e);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  // Two skips, a good step (the count starts over), two skips: still going.
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(micro(*e, "w2", 17, nan).value().overflow);
  ASSERT_TRUE(micro(*e).value().applied);
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(micro(*e, "w2", 17, nan).value().overflow);
  // The third in a row ends it, naming the step, the scale and the first bad param and element.
  auto r = micro(*e, "w2", 17, nan);
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNonFinite) << r.status().to_string();
  const std::string m = r.status().message();
  EXPECT_NE(m.find("step 2:"), std::string::npos) << m;
  EXPECT_NE(m.find("3 steps in a row (strata.max_consecutive_skips = 3)"), std::string::npos) << m;
  EXPECT_NE(m.find("loss scale at 1"), std::string::npos) << m;
  EXPECT_NE(m.find("in 'w2' (element 17 of [50, 80])"), std::string::npos) << m;
  EXPECT_EQ(e->stats().skipped_steps, 5);
  EXPECT_EQ(e->optimizer_step(), 1);
  // The engine is still usable: the gradients were dropped, a good micro-batch steps.
  EXPECT_TRUE(micro(*e).value().applied);
}

TEST(Divergence, Fp16CountsOnlySkipsAtTheMinimumLossScale) {
  // Scale 2^3 halves on every overflow (hysteresis 1) down to min_loss_scale 2: the skips at 8
  // and 4 do not count, the ones at 2 do.
  auto e = make(
      config("\"fp16\": {\"enabled\": true, \"initial_scale_power\": 3, \"hysteresis\": 1, \"min_loss_scale\": 2}, ",
             ", \"max_consecutive_skips\": 2"));
  ASSERT_TRUE(e);
  const float inf = std::numeric_limits<float>::infinity();
  std::vector<double> scales;
  Status end;
  for (int i = 0; i < 10 && end.is_ok(); ++i) {
    scales.push_back(e->loss_scale());
    auto r = micro(*e, "b", 4, inf);
    if (!r.is_ok()) end = r.status();
  }
  EXPECT_EQ(scales, (std::vector<double>{8, 4, 2, 2})) << "two skips at 8 and 4, then two at the minimum";
  ASSERT_EQ(end.code(), StatusCode::kNonFinite) << end.to_string();
  EXPECT_NE(end.message().find("loss scale at 2 (its minimum, fp16.min_loss_scale)"), std::string::npos)
      << end.message();
  EXPECT_NE(end.message().find("in 'b' (element 4 of [7])"), std::string::npos) << end.message();
}

// AdamW with lr * weight_decay = 1e8 multiplies every master by -(1e8 - 1) per step: finite
// gradients, masters past fp32's range within a few steps — an error naming the chunk, on every
// optimizer tier (host Adam's kernels flag it; device-resident masters are summed).
TEST(Divergence, NonFiniteMastersAfterAStepNameTheChunk) {
  for (const char* zero : {"", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}"}) {
    SCOPED_TRACE(zero);
    auto e = make(config("", "", zero, "\"lr\": 10000, \"weight_decay\": 10000"));
    ASSERT_TRUE(e);
    Status end;
    int steps = 0;
    for (; steps < 10 && end.is_ok(); ++steps) {
      auto r = micro(*e);
      if (!r.is_ok()) end = r.status();
    }
    ASSERT_EQ(end.code(), StatusCode::kNonFinite) << end.to_string();
    EXPECT_LE(steps, 6);
    EXPECT_NE(end.message().find("the fp32 master weights of chunk 0 (params 'w1' .. 'w1')"), std::string::npos)
        << end.message();
  }
}

// A swap file overwritten between steps (another process, a bad disk): the next read of it is
// DATA_LOSS naming the tensor. Checksums are on by default in every build type. The update checks
// the state it reads (in a step slot read ahead, or without slots in the pipeline's buffer sets).
class SwapChanged : public ::testing::TestWithParam<const char*> {};

// 8 bytes at `at` of both slot files of chunk 0's second moment in `swap`: how many files changed
// (those too short to hold them are left alone).
int overwrite_second_moment(const std::string& swap, size_t at) {
  int changed = 0;
  for (const auto& f : std::filesystem::directory_iterator(swap)) {
    if (f.path().filename().string().rfind("c0.exp_avg_sq-", 0) != 0 || std::filesystem::file_size(f.path()) < at + 8)
      continue;
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(static_cast<std::streamoff>(at));
    io.write("garbage!", 8);
    ++changed;
  }
  return changed;
}

void expect_data_loss(const StatusOr<StepResult>& r) {
  ASSERT_FALSE(r.is_ok()) << "a changed swap file must not be trained on";
  EXPECT_EQ(r.status().code(), StatusCode::kDataLoss) << r.status().to_string();
  EXPECT_NE(r.status().message().find("tensor 'c0.exp_avg_sq': checksum mismatch"), std::string::npos)
      << r.status().message();
}

TEST_P(SwapChanged, IsDataLossNamingTheTensor) {
  strata::testing::ScratchDir dir;
  const std::string swap = dir.path() + "/swap";
  auto e = make(config("", GetParam(),
                       "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" + swap + "\"}"));
  ASSERT_TRUE(e);
  ASSERT_TRUE(micro(*e).value().applied);
  ASSERT_TRUE(e->synchronize().is_ok());
  ASSERT_GE(overwrite_second_moment(swap, 100), 1);
  expect_data_loss(micro(*e));
}

// The state read ahead for the step is checked as it lands, queued by the host program's calls
// (OptimizerRunner::check_landed), not in the step's update: a swap file changed before the read
// is caught there, and the step still fails with DATA_LOSS naming the tensor, nothing updated.
TEST(SwapChangedAhead, IsCaughtBeforeTheStepAndFailsIt) {
  strata::testing::ScratchDir dir;
  const std::string swap = dir.path() + "/swap";
  auto e = make(
      config("", "", "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\", \"nvme_path\": \"" + swap + "\"}"));
  ASSERT_TRUE(e);
  ASSERT_TRUE(micro(*e).value().applied);
  ASSERT_TRUE(e->synchronize().is_ok());  // nothing in flight, nothing read ahead kept
  int changed = 0;
  std::set<std::string> chunks;  // "c<i>": the chunks whose state is on NVMe
  for (const auto& f : std::filesystem::directory_iterator(swap)) {
    const std::string n = f.path().filename().string();
    if (n.find(".master-") != std::string::npos) chunks.insert(n.substr(0, n.find('.')));
    if (n.rfind("c0.exp_avg_sq-", 0) != 0) continue;
    std::fstream io(f.path(), std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(100);
    io.write("garbage!", 8);
    ++changed;
  }
  ASSERT_GE(changed, 1);
  ASSERT_GE(chunks.size(), 2u);
  const auto want = static_cast<int64_t>(chunks.size());
  // The next micro-batch's calls start the reads ahead (as slots free up) and check what landed,
  // one chunk per call, until every chunk's state was read and checked.
  const int64_t checked0 = e->stats().chunks_checked_ahead;
  for (int i = 0; i < 20000 && e->stats().chunks_checked_ahead - checked0 < want; ++i) {
    ASSERT_TRUE(e->fetch("b").is_ok());
    ASSERT_TRUE(e->release("b").is_ok());
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  EXPECT_EQ(e->stats().chunks_checked_ahead - checked0, want) << "every chunk's state checked before the step";
  expect_data_loss(micro(*e));
}

// The checks in the update (state read by the buffer sets, not ahead into step slots): each
// segment is hashed just before the kernel reads it, so a change in the last segment shows only
// after the others were updated — none of it may show. Params rest in host memory, where the
// update writes them in place: the master and the params read after the failed step are those
// before it, and the step tried again fails alike.
TEST(SwapChangedInTheUpdate, UpdatesNothingTheCallerSees) {
  strata::testing::ScratchDir dir;
  const std::string swap = dir.path() + "/swap";
  const std::vector<P> params = {{"big", {200000}}, {"b", {7}}};  // chunk 0's fp32 arrays: 4 segments
  auto e = make(config("", ", \"speculate\": false",
                       "\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": "
                       "{\"device\": \"nvme\", \"nvme_path\": \"" +
                           swap + "\"}",
                       "\"lr\": 0.01", size_t{1} << 20, size_t{16} << 20),
                params);
  ASSERT_TRUE(e);
  ASSERT_TRUE(micro(*e, nullptr, 0, 0, params).value().applied);
  auto snapshot = [&](std::vector<float>* master, std::vector<uint16_t>* bit16) {
    master->assign(200000, 0.0f);
    ASSERT_TRUE(e->read_master("big", master->data(), master->size()).is_ok());
    auto f = e->fetch("big");
    ASSERT_TRUE(f.is_ok()) << f.status().to_string();
    const auto* p = static_cast<const uint16_t*>(f.value());
    bit16->assign(p, p + 200000);
    ASSERT_TRUE(e->release("big").is_ok());
  };
  std::vector<float> master0, master1;
  std::vector<uint16_t> bit16_0, bit16_1;
  snapshot(&master0, &bit16_0);
  ASSERT_TRUE(e->synchronize().is_ok());  // the fetch read the state ahead: dropped, read again after the change
  ASSERT_GE(overwrite_second_moment(swap, 3 * offload::NvmeStore::kChecksumSegment + 1000), 1);
  expect_data_loss(micro(*e, nullptr, 0, 0, params));
  expect_data_loss(e->step());  // tried again: the state read is still not trained on
  snapshot(&master1, &bit16_1);
  EXPECT_EQ(master1, master0);
  EXPECT_EQ(bit16_1, bit16_0) << "params updated from the state that failed its check";
  EXPECT_EQ(e->stats().chunks_checked_ahead, 0);
}

// Optimizer arrays longer than one segment of the store's checksum (NvmeStore::kChecksumSegment):
// the update hashes each segment as it writes it (OptimizerRunner::update_summed) and the read
// checks hash the segments over the threads. The state trains bit for bit as in host memory, and
// a byte changed in the last segment is still DATA_LOSS naming the tensor.
class SegmentedChecksums : public ::testing::TestWithParam<const char*> {};

const std::vector<P> kBig = {{"big", {200000}}, {"b", {7}}};  // chunk 0's fp32 arrays: 4 segments

// A micro-batch whose gradients differ from element to element (so that the segments do too).
StatusOr<StepResult> varied_micro(Engine& e) {
  for (const P& p : kBig) {
    auto f = e.fetch(p.name);
    if (!f.is_ok()) return f.status();
    std::vector<uint16_t> g(p.numel());
    for (size_t i = 0; i < g.size(); ++i)
      g[i] = bits(e.param_dtype(), 0.001f * static_cast<float>(static_cast<int>(i % 193) - 96));
    STRATA_RETURN_IF_ERROR(e.grad(p.name, g.data(), e.param_dtype(), g.size()));
    STRATA_RETURN_IF_ERROR(e.release(p.name));
  }
  return e.step();
}

TEST_P(SegmentedChecksums, TrainAsInHostMemoryAndCatchALaterSegmentChanged) {
  strata::testing::ScratchDir dir;
  const std::string swap = dir.path() + "/swap";
  auto on = [&](const std::string& where) {
    return make(config("", GetParam(), "\"stage\": 2, \"offload_optimizer\": {" + where + "}", "\"lr\": 0.01",
                       size_t{1} << 20, size_t{16} << 20),
                kBig);
  };
  auto host = on("\"device\": \"cpu\"");
  auto nvme = on("\"device\": \"nvme\", \"nvme_path\": \"" + swap + "\"");
  ASSERT_TRUE(host && nvme);
  for (int step = 0; step < 3; ++step) {
    for (Engine* e : {host.get(), nvme.get()}) {
      auto r = varied_micro(*e);
      ASSERT_TRUE(r.is_ok() && r.value().applied) << r.status().to_string();
    }
  }
  std::vector<float> want(200000), got(200000);
  ASSERT_TRUE(host->read_master("big", want.data(), want.size()).is_ok());
  ASSERT_TRUE(nvme->read_master("big", got.data(), got.size()).is_ok());
  EXPECT_EQ(got, want);
  EXPECT_NE(got[0], got[100]) << "elements (and segments) trained apart";
  ASSERT_TRUE(nvme->synchronize().is_ok());
  const size_t at = 3 * offload::NvmeStore::kChecksumSegment + 1000;  // the last, partial segment
  ASSERT_GE(overwrite_second_moment(swap, at), 1);
  expect_data_loss(varied_micro(*nvme));
}

INSTANTIATE_TEST_SUITE_P(Divergence, SegmentedChecksums, ::testing::Values("", ", \"speculate\": false"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param[0] == '\0' ? "StepSlots" : "PipelineSets");
                         });

INSTANTIATE_TEST_SUITE_P(Divergence, SwapChanged, ::testing::Values("", ", \"speculate\": false"),
                         [](const ::testing::TestParamInfo<const char*>& i) {
                           return std::string(i.param[0] == '\0' ? "StepSlots" : "PipelineSets");
                         });

}  // namespace
}  // namespace strata::engine
