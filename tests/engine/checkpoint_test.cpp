// Checkpoints: N steps, save, load into a fresh engine (and a fresh process), M steps must equal
// N + M steps straight, bit for bit, for every placement and with fp16 loss-scaler state; a save
// killed at every save point and at random instants (fork + exec + SIGKILL) always leaves a
// loadable checkpoint, the previous or the new one, with exactly its weights; corrupted,
// truncated and mismatched checkpoints are refused with errors that name the problem and leave
// the engine unchanged; the weights export reads back without strata's code.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <tuple>

#include "kernels/reference/half.h"
#include "src/engine/checkpoint_format.h"
#include "tests/common/run_command.h"
#include "tests/engine/engine_harness.h"
#include "tests/offload/scratch_dir.h"

namespace strata::engine {
namespace {

using harness::config_json;
using harness::EngineRun;
using harness::kAccum;
using harness::kSteps;
using harness::RunOptions;
using harness::train_engine;
using testing::Mlp;
using testing::MlpShape;
using Masters = std::map<std::string, std::vector<float>>;

constexpr int kSplit = 3 * kAccum;  // save after 3 of the 6 optimizer steps
const std::string kFp16 = "\"fp16\": {\"enabled\": true, \"initial_scale_power\": 12, \"hysteresis\": 1}";

std::string zero_for(const std::string& placement, const std::string& dir) {
  const std::string path = ", \"nvme_path\": \"" + dir + "\"";
  if (placement == "device") return "\"stage\": 0";
  if (placement == "optimizer cpu") return "\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}";
  if (placement == "optimizer nvme") return "\"stage\": 2, \"offload_optimizer\": {\"device\": \"nvme\"" + path + "}";
  if (placement == "params nvme")
    return "\"stage\": 3, \"offload_optimizer\": {\"device\": \"nvme\"" + path +
           "}, \"offload_param\": {\"device\": \"nvme\"" + path + "}";
  return "\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"}, \"offload_param\": {\"device\": \"cpu\"}";
}
size_t budget_for(const std::string& placement) {
  return placement == "device" ? size_t{4} << 20 : placement.rfind("params", 0) == 0 ? 32 << 10 : 112 << 10;
}

std::unique_ptr<Engine> new_engine(const std::string& json, const Mlp& mlp, const RunOptions& o = {}) {
  auto cfg = parse_engine_config(json);
  EXPECT_TRUE(cfg.is_ok()) << cfg.status().to_string();
  if (!cfg.is_ok()) return nullptr;
  auto e = harness::make_engine(cfg.value(), mlp, o);
  EXPECT_TRUE(e.is_ok()) << e.status().to_string();
  return e.is_ok() ? std::move(e).value() : nullptr;
}

EngineRun train_range(Engine& e, const std::string& json, const Mlp& mlp, int begin, int end, int poison = -1) {
  RunOptions o;
  o.engine = &e;
  o.micro_begin = begin;
  o.micro_end = end;
  o.poison_micro = poison;
  return train_engine(json, mlp, o);
}

class Resume : public ::testing::TestWithParam<const char*> {};

TEST_P(Resume, SaveLoadContinueEqualsStraightTraining) {
  const Mlp mlp{MlpShape{}};
  const std::string placement = GetParam();
  strata::testing::ScratchDir d1, d2, d3, ckpt;
  const bool fp16 = placement == "optimizer cpu";  // and an overflow before the save
  const int poison = fp16 ? 1 : -1;
  auto json = [&](const std::string& dir) {
    return config_json(zero_for(placement, dir), budget_for(placement), fp16 ? kFp16 : "");
  };
  RunOptions straight_o;
  straight_o.poison_micro = poison;
  const EngineRun straight = train_engine(json(d1.path()), mlp, straight_o);
  // The steps saved and resumed ran during backward (strata.speculate, the default).
  if (placement == "optimizer cpu" || placement == "params cpu") {
    EXPECT_GT(straight.stats.chunks_speculated, 0) << placement;
  }
  if (placement == "optimizer nvme" || placement == "params nvme") {
    EXPECT_GT(straight.stats.chunks_read_ahead, 0) << placement;
  }

  double scale_at_save = 0;
  {
    auto first = new_engine(json(d2.path()), mlp);
    ASSERT_TRUE(first);
    (void)train_range(*first, json(d2.path()), mlp, 0, kSplit, poison);
    scale_at_save = first->loss_scale();
    Status s = first->save(ckpt.path());
    ASSERT_TRUE(s.is_ok()) << s.to_string();
  }
  if (fp16) {
    EXPECT_EQ(scale_at_save, 2048.0) << "the overflow halved the scale before the save";
  }
  auto second = new_engine(json(d3.path()), mlp);
  ASSERT_TRUE(second);
  Status l = second->load(ckpt.path());
  ASSERT_TRUE(l.is_ok()) << l.to_string();
  EXPECT_EQ(second->loss_scale(), scale_at_save);
  const EngineRun resumed = train_range(*second, json(d3.path()), mlp, kSplit, kSteps * kAccum);
  ASSERT_EQ(resumed.master.size(), straight.master.size());
  for (const auto& [n, v] : straight.master) EXPECT_EQ(resumed.master.at(n), v) << placement << ": " << n;
}

INSTANTIATE_TEST_SUITE_P(Placements, Resume,
                         ::testing::Values("device", "optimizer cpu", "optimizer nvme", "params cpu", "params nvme"));

// Lion and Adagrad resume bit-exactly too: their one state array round-trips through the
// checkpoint (format 2 names it) from every tier.
class OptimizerResume : public ::testing::TestWithParam<std::tuple<const char*, const char*>> {};

TEST_P(OptimizerResume, SaveLoadContinueEqualsStraightTraining) {
  const Mlp mlp{MlpShape{}};
  const auto [type, placement] = GetParam();
  strata::testing::ScratchDir d1, d2, d3, ckpt;
  auto json = [&](const std::string& dir) {
    return config_json(zero_for(placement, dir), budget_for(placement), "", "", harness::optimizer_json(type));
  };
  const EngineRun straight = train_engine(json(d1.path()), mlp);
  {
    auto first = new_engine(json(d2.path()), mlp);
    ASSERT_TRUE(first);
    (void)train_range(*first, json(d2.path()), mlp, 0, kSplit);
    ASSERT_TRUE(first->save(ckpt.path()).is_ok());
  }
  const auto m = ckpt::read_manifest(ckpt.path() + "/step3");
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  EXPECT_EQ(m.value().optimizer_type, type);
  EXPECT_EQ(m.value().optimizer_arrays.size(), 2u);
  auto second = new_engine(json(d3.path()), mlp);
  ASSERT_TRUE(second);
  Status l = second->load(ckpt.path());
  ASSERT_TRUE(l.is_ok()) << l.to_string();
  const EngineRun resumed = train_range(*second, json(d3.path()), mlp, kSplit, kSteps * kAccum);
  for (const auto& [n, v] : straight.master)
    EXPECT_EQ(resumed.master.at(n), v) << type << " " << placement << ": " << n;
}

INSTANTIATE_TEST_SUITE_P(LionAdagrad, OptimizerResume,
                         ::testing::Combine(::testing::Values("Lion", "Adagrad"),
                                            ::testing::Values("device", "optimizer cpu", "optimizer nvme", "params cpu",
                                                              "params nvme")),
                         [](const auto& p) {
                           std::string s = std::string(std::get<0>(p.param)) + "_" + std::get<1>(p.param);
                           for (char& ch : s)
                             if (ch == ' ') ch = '_';
                           return s;
                         });

// A checkpoint loads into another chunk size and placement: params are matched by name.
TEST(Checkpoint, LoadsIntoAnotherChunkSizeAndPlacement) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir nv, ckpt;
  const std::string from = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
  std::string to = config_json(zero_for("params nvme", nv.path()), budget_for("params nvme"));
  to.replace(to.find("\"chunk_bytes\": 8192"), 19, "\"chunk_bytes\": 4096");
  auto a = new_engine(from, mlp);
  ASSERT_TRUE(a);
  (void)train_range(*a, from, mlp, 0, kSplit);
  ASSERT_TRUE(a->save(ckpt.path()).is_ok());
  const Masters saved = harness::read_masters(*a, mlp);
  auto b = new_engine(to, mlp);
  ASSERT_TRUE(b);
  Status s = b->load(ckpt.path());
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(harness::read_masters(*b, mlp), saved);
}

// The helper binary, built beside this test.
std::string helper() { return STRATA_CHECKPOINT_HELPER; }

std::string write_config(const std::string& dir, const std::string& json) {
  const std::string p = dir + "/config.json";
  std::ofstream(p) << json;
  return p;
}

TEST(Checkpoint, ResumesBitExactInAFreshProcess) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir d1, d2, d3, ckpt, files;
  auto json = [&](const std::string& dir) {
    return config_json(zero_for("optimizer nvme", dir), budget_for("optimizer nvme"));
  };
  const EngineRun straight = train_engine(json(d1.path()), mlp);
  {
    auto e = new_engine(json(d2.path()), mlp);
    ASSERT_TRUE(e);
    (void)train_range(*e, json(d2.path()), mlp, 0, kSplit);
    ASSERT_TRUE(e->save(ckpt.path()).is_ok());
  }
  const std::string out = files.path() + "/masters.bin";
  const std::string cmd = helper() + " resume " + write_config(files.path(), json(d3.path())) + " " + ckpt.path() +
                          " " + std::to_string(kSplit) + " " + std::to_string(kSteps * kAccum) + " " + out + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  char line[4096];
  std::string said;
  while (std::fgets(line, sizeof(line), p) != nullptr) said += line;
  ASSERT_EQ(::pclose(p), 0) << said;
  std::ifstream in(out, std::ios::binary);
  for (const auto& l : mlp.layers())
    for (const std::string& n : {l.w, l.b}) {
      std::vector<float> v(straight.master.at(n).size());
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * 4));
      ASSERT_TRUE(in.good()) << n;
      EXPECT_EQ(v, straight.master.at(n)) << n;
    }
}

// Runs the crash helper; kills it at save point `block_at` (>= 0) or `delay_us` after it starts
// its second save. Returns the points it reported.
std::vector<std::string> run_and_kill(const std::string& config, const std::string& root, int block_at, int delay_us) {
  int pipefd[2];
  EXPECT_EQ(::pipe(pipefd), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(pipefd[1], 1);
    ::close(pipefd[0]);
    ::close(pipefd[1]);
    const std::string h = helper(), b = std::to_string(block_at);
    ::execl(h.c_str(), h.c_str(), "crash", config.c_str(), root.c_str(), b.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(pipefd[1]);
  FILE* f = ::fdopen(pipefd[0], "r");
  std::vector<std::string> lines;
  char line[1024];
  bool killed = false;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    std::string s(line);
    if (!s.empty() && s.back() == '\n') s.pop_back();
    lines.push_back(s);
    if (block_at < 0 && s == "saving") {
      ::usleep(static_cast<useconds_t>(delay_us));
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
    if (block_at >= 0 && s.rfind("point " + std::to_string(block_at) + " ", 0) == 0) {
      ::kill(pid, SIGKILL);
      killed = true;
      break;
    }
  }
  std::fclose(f);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(killed || (WIFEXITED(status) && WEXITSTATUS(status) == 0)) << "helper failed";
  return lines;
}

TEST(CheckpointCrash, AKilledSaveLeavesTheLastCompleteCheckpoint) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir files, ref_dir;
  const std::string json = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
  const std::string config = write_config(files.path(), json);
  // Reference weights after 2 and after 4 optimizer steps.
  RunOptions o2, o4;
  o2.micro_end = 2 * kAccum;
  o4.micro_end = 4 * kAccum;
  const Masters after2 = train_engine(json, mlp, o2).master, after4 = train_engine(json, mlp, o4).master;
  ASSERT_NE(after2, after4);

  // Every save point, then random instants.
  std::vector<std::pair<int, int>> kills;  // (block_at, delay_us)
  int chunks = 0;
  {
    strata::testing::ScratchDir probe;
    auto e = new_engine(json, mlp);
    ASSERT_TRUE(e);
    ASSERT_TRUE(e->save(probe.path()).is_ok());
    auto m = ckpt::read_manifest(probe.path() + "/step0");
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    chunks = static_cast<int>(m.value().chunks.size());
  }
  const int points = chunks + 3;  // chunk files, manifest written, published, latest updated
  for (int p = 0; p < points; ++p) kills.push_back({p, 0});
  std::mt19937 rng(7);
  for (int i = 0; i < 5; ++i) kills.push_back({-1, static_cast<int>(rng() % 20000)});
  int saw_old = 0, saw_new = 0;
  for (const auto& [block_at, delay] : kills) {
    strata::testing::ScratchDir root;
    const auto lines = run_and_kill(config, root.path(), block_at, delay);
    ASSERT_FALSE(lines.empty());
    ASSERT_EQ(lines.front(), "saved first") << "the helper failed: " << lines.front();
    auto e = new_engine(json, mlp);
    ASSERT_TRUE(e);
    Status s = e->load(root.path());
    ASSERT_TRUE(s.is_ok()) << "killed at " << (block_at >= 0 ? lines.back() : std::to_string(delay) + " us") << ": "
                           << s.to_string();
    const Masters got = harness::read_masters(*e, mlp);
    const bool old_one = got == after2, new_one = got == after4;
    EXPECT_TRUE(old_one || new_one) << "killed at point " << block_at << " / " << delay
                                    << " us: the loaded weights are neither";
    saw_old += old_one;
    saw_new += new_one;
    if (block_at >= 0) {
      const std::vector<std::string> last = {"manifest written", "published", "latest updated"};
      const std::string want = block_at < chunks ? "chunk " + std::to_string(block_at) + " written"
                                                 : last[static_cast<size_t>(block_at - chunks)];
      EXPECT_EQ(lines.back().substr(lines.back().find(' ', 6) + 1), want);
      // Until latest names the new checkpoint, the old one is loaded.
      EXPECT_EQ(old_one, block_at < points - 1) << "killed after " << lines.back();
    }
  }
  EXPECT_GT(saw_old, 0);
  EXPECT_GT(saw_new, 0) << "a kill after 'latest updated' finds the new checkpoint";
}

class Refused : public ::testing::Test {
 protected:
  void SetUp() override {
    json_ = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
    auto e = new_engine(json_, mlp_);
    ASSERT_TRUE(e);
    (void)train_range(*e, json_, mlp_, 0, 2 * kAccum);
    ASSERT_TRUE(e->save(root_.path()).is_ok());
    dir_ = root_.path() + "/step2";
    target_ = new_engine(json_, mlp_);
    ASSERT_TRUE(target_);
    before_ = harness::read_masters(*target_, mlp_);
  }
  // The load fails with `code`, its message holds `needle`, and the engine kept its weights.
  void expect_refused(StatusCode code, const std::string& needle) {
    Status s = target_->load(root_.path());
    EXPECT_EQ(s.code(), code) << s.to_string();
    EXPECT_NE(s.to_string().find(needle), std::string::npos) << s.to_string();
    EXPECT_EQ(harness::read_masters(*target_, mlp_), before_) << "a refused load changed the engine";
  }
  const Mlp mlp_{MlpShape{}};
  strata::testing::ScratchDir root_;
  std::string json_, dir_;
  std::unique_ptr<Engine> target_;
  Masters before_;
};

TEST_F(Refused, AFlippedByte) {
  const std::string f = dir_ + "/chunk3.bin";
  std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
  io.seekg(100);
  char c = 0;
  io.read(&c, 1);
  c = static_cast<char>(c ^ 0x10);
  io.seekp(100);
  io.write(&c, 1);
  io.close();
  expect_refused(StatusCode::kDataLoss, "chunk3.bin: checksum mismatch in master");
}

TEST_F(Refused, ATruncatedChunkFile) {
  const std::string f = dir_ + "/chunk1.bin";
  std::filesystem::resize_file(f, std::filesystem::file_size(f) - 100);
  expect_refused(StatusCode::kDataLoss, "100 bytes short: truncated");
}

TEST_F(Refused, ATruncatedManifest) {
  const std::string f = dir_ + "/manifest.json";
  std::filesystem::resize_file(f, std::filesystem::file_size(f) / 2);
  expect_refused(StatusCode::kDataLoss, "manifest.json: not a JSON object");
}

TEST_F(Refused, AMissingChunkFile) {
  std::filesystem::remove(dir_ + "/chunk0.bin");
  expect_refused(StatusCode::kNotFound, "chunk0.bin");
}

TEST_F(Refused, ANewerFormatVersion) {
  std::string text;
  {
    std::ifstream in(dir_ + "/manifest.json");
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  const size_t at = text.find("\"version\": 2");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 12, "\"version\": 3");
  std::ofstream(dir_ + "/manifest.json") << text;
  expect_refused(StatusCode::kUnsupported, "format version 3");
}

TEST_F(Refused, NoCheckpointThere) {
  std::filesystem::remove(root_.path() + "/latest");
  expect_refused(StatusCode::kNotFound, "neither manifest.json nor a 'latest' file");
}

TEST_F(Refused, AModelWithOtherShapes) {
  MlpShape other;
  other.hidden = 48;
  const Mlp small{other};
  auto e = new_engine(json_, small);
  ASSERT_TRUE(e);
  Status s = e->load(root_.path());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.to_string().find("param 'layer0.weight' has shape [64, 32] in the checkpoint, [48, 32] registered"),
            std::string::npos)
      << s.to_string();
}

TEST_F(Refused, AnotherPrecision) {
  auto e = new_engine(config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"), kFp16), mlp_);
  ASSERT_TRUE(e);
  Status s = e->load(root_.path());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.to_string().find("trained in bf16, this engine trains in fp16"), std::string::npos) << s.to_string();
}

// An AdamW checkpoint into a Lion engine (and back): the state arrays differ, both are named.
TEST_F(Refused, AnotherOptimizersState) {
  auto lion = new_engine(
      config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"), "", "", harness::optimizer_json("Lion")),
      mlp_);
  ASSERT_TRUE(lion);
  const Masters lion_before = harness::read_masters(*lion, mlp_);
  Status s = lion->load(root_.path());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.to_string().find("the checkpoint holds the state of optimizer AdamW (master, exp_avg, exp_avg_sq), the "
                               "configured optimizer is Lion (master, exp_avg)"),
            std::string::npos)
      << s.to_string();
  EXPECT_EQ(harness::read_masters(*lion, mlp_), lion_before) << "a refused load changed the engine";
  // Lion and Adagrad both keep two arrays, but not the same ones.
  strata::testing::ScratchDir lroot;
  ASSERT_TRUE(lion->save(lroot.path()).is_ok());
  auto ada = new_engine(config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"), "", "",
                                    harness::optimizer_json("Adagrad")),
                        mlp_);
  ASSERT_TRUE(ada);
  s = ada->load(lroot.path());
  EXPECT_NE(s.to_string().find("optimizer Lion (master, exp_avg), the configured optimizer is Adagrad (master, sum)"),
            std::string::npos)
      << s.to_string();
}

TEST(CheckpointSave, RefusesMidCycleFetchedAndBadTags) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir root;
  const std::string json = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
  auto e = new_engine(json, mlp);
  ASSERT_TRUE(e);
  (void)train_range(*e, json, mlp, 0, 1);  // half a cycle
  Status s = e->save(root.path());
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(s.to_string().find("middle of an accumulation cycle (1 of 2"), std::string::npos) << s.to_string();
  (void)train_range(*e, json, mlp, 1, 2);
  ASSERT_TRUE(e->fetch("layer0.weight").is_ok());
  s = e->save(root.path());
  EXPECT_NE(s.to_string().find("while 'layer0.weight' is fetched"), std::string::npos) << s.to_string();
  ASSERT_TRUE(e->release("layer0.weight").is_ok());
  for (const char* tag : {"a/b", "latest", "x.tmp"})
    EXPECT_EQ(e->save(root.path(), tag).code(), StatusCode::kInvalidArgument) << tag;
  EXPECT_FALSE(std::filesystem::exists(root.path() + "/latest")) << "nothing was saved";
  // Saving the same tag twice replaces it.
  ASSERT_TRUE(e->save(root.path(), "mine").is_ok());
  (void)train_range(*e, json, mlp, 2, 4);
  ASSERT_TRUE(e->save(root.path(), "mine").is_ok());
  auto f = new_engine(json, mlp);
  ASSERT_TRUE(f->load(root.path(), "mine").is_ok());
  EXPECT_EQ(harness::read_masters(*f, mlp), harness::read_masters(*e, mlp));
  EXPECT_FALSE(std::filesystem::exists(root.path() + "/mine.tmp"));
}

// index.json + weights.bin read with a JSON parser and raw reads only.
Masters read_export(const std::string& dir, const std::string& want_dtype) {
  Masters out;
  std::ifstream idx(dir + "/index.json");
  const nlohmann::json j = nlohmann::json::parse(idx);
  EXPECT_EQ(j.at("format"), "strata-weights");
  EXPECT_EQ(j.at("dtype"), want_dtype);
  std::ifstream bin(dir + "/weights.bin", std::ios::binary);
  for (const auto& p : j.at("params")) {
    size_t n = 1;
    for (const auto& d : p.at("shape")) n *= d.get<size_t>();
    const size_t bytes = p.at("bytes").get<size_t>();
    EXPECT_EQ(bytes, n * (want_dtype == "fp32" ? 4 : 2));
    EXPECT_EQ(p.at("offset").get<size_t>() % 64, 0u);
    std::vector<uint8_t> raw(bytes);
    bin.seekg(static_cast<std::streamoff>(p.at("offset").get<size_t>()));
    bin.read(reinterpret_cast<char*>(raw.data()), static_cast<std::streamsize>(bytes));
    std::vector<float> v(n);
    for (size_t i = 0; i < n; ++i) {
      if (want_dtype == "fp32") {
        std::memcpy(&v[i], raw.data() + i * 4, 4);
      } else {
        uint32_t u = static_cast<uint32_t>(raw[i * 2] | (raw[i * 2 + 1] << 8)) << 16;
        std::memcpy(&v[i], &u, 4);
      }
    }
    out[p.at("name").get<std::string>()] = std::move(v);
  }
  return out;
}

// Never delete what strata did not write: a tag directory of the user's is refused, not replaced;
// a temporary directory a crashed save left is removed at the next save, one of the user's that
// happens to end in .tmp is not; a `latest` that is not strata's is refused, not overwritten; an
// export onto a directory of the user's files is refused with every file intact.
TEST(CheckpointSave, NeverDeletesWhatStrataDidNotWrite) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir root;
  const std::string json = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
  auto e = new_engine(json, mlp);
  ASSERT_TRUE(e);
  (void)train_range(*e, json, mlp, 0, 2);
  const std::string r = root.path();
  std::filesystem::create_directories(r + "/mine");
  std::ofstream(r + "/mine/notes.txt") << "keep";
  Status s = e->save(r, "mine");
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.to_string();
  EXPECT_NE(s.message().find("'" + r + "/mine' exists and is not a strata checkpoint"), std::string::npos)
      << s.message();
  EXPECT_TRUE(std::filesystem::exists(r + "/mine/notes.txt"));
  // A crashed save's leftovers (chunk files, no manifest yet) and a user's directory named *.tmp.
  std::filesystem::create_directories(r + "/step9.tmp");
  std::ofstream(r + "/step9.tmp/chunk0.bin") << "partial";
  std::filesystem::create_directories(r + "/photos.tmp");
  std::ofstream(r + "/photos.tmp/cat.jpg") << "meow";
  ASSERT_TRUE(e->save(r).is_ok());
  EXPECT_FALSE(std::filesystem::exists(r + "/step9.tmp")) << "a crashed save's temporary directory stays";
  EXPECT_TRUE(std::filesystem::exists(r + "/photos.tmp/cat.jpg"));
  // A `latest` that is not strata's.
  std::ofstream(r + "/latest", std::ios::trunc) << "my shopping list\nmilk\n";
  s = e->save(r, "other");
  EXPECT_EQ(s.code(), StatusCode::kFailedPrecondition) << s.to_string();
  EXPECT_NE(s.message().find("is not a strata 'latest' file"), std::string::npos) << s.message();
  EXPECT_FALSE(std::filesystem::exists(r + "/other"));
  // Export onto the user's directory: refused, the files intact; onto a fresh one: written.
  Status x = e->export_weights(r + "/mine", DType::kF32);
  EXPECT_EQ(x.code(), StatusCode::kAlreadyExists) << x.to_string();
  EXPECT_TRUE(std::filesystem::exists(r + "/mine/notes.txt"));
  EXPECT_FALSE(std::filesystem::exists(r + "/mine/index.json"));
  ASSERT_TRUE(e->export_weights(r + "/exported", DType::kF32).is_ok());
  ASSERT_TRUE(e->export_weights(r + "/exported", DType::kBF16).is_ok()) << "an earlier export is replaced";
  (void)read_export(r + "/exported", "bf16");
}

TEST(Export, WeightsReadBackWithoutStrata) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir root, nv;
  const std::string json = config_json(zero_for("optimizer nvme", nv.path()), budget_for("optimizer nvme"));
  auto e = new_engine(json, mlp);
  ASSERT_TRUE(e);
  (void)train_range(*e, json, mlp, 0, 2 * kAccum);
  const Masters m = harness::read_masters(*e, mlp);
  ASSERT_TRUE(e->export_weights(root.path() + "/fp32", DType::kF32).is_ok());
  ASSERT_TRUE(e->export_weights(root.path() + "/bf16", DType::kBF16).is_ok());
  EXPECT_EQ(read_export(root.path() + "/fp32", "fp32"), m);
  const Masters b = read_export(root.path() + "/bf16", "bf16");
  for (const auto& [n, v] : m)
    for (size_t i = 0; i < v.size(); ++i)
      ASSERT_EQ(b.at(n)[i], reference::bf16_to_float(reference::float_to_bf16(v[i]))) << n << "[" << i << "]";
  // The same export from the checkpoint, without an engine.
  ASSERT_TRUE(e->save(root.path() + "/ckpt").is_ok());
  Status s = ckpt::export_checkpoint(root.path() + "/ckpt/step2", root.path() + "/from_ckpt", ckpt::ExportOptions{});
  ASSERT_TRUE(s.is_ok()) << s.to_string();
  EXPECT_EQ(read_export(root.path() + "/from_ckpt", "fp32"), m);
}

// The `strata checkpoint` command: verify passes a good checkpoint and fails a corrupt one with the
// reason; export writes the same weights as the engine.
TEST(CheckpointCli, VerifiesAndExports) {
  const Mlp mlp{MlpShape{}};
  strata::testing::ScratchDir root;
  const std::string json = config_json(zero_for("optimizer cpu", ""), budget_for("optimizer cpu"));
  auto e = new_engine(json, mlp);
  ASSERT_TRUE(e);
  (void)train_range(*e, json, mlp, 0, 2 * kAccum);
  ASSERT_TRUE(e->save(root.path()).is_ok());
  auto run = [](const std::string& args, int* rc) {
    return strata::testing::run_command(std::string(STRATA_CLI) + " " + args, rc);
  };
  int rc = 0;
  std::string out = run("checkpoint verify " + root.path(), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("OK,"), std::string::npos) << out;
  out = run("checkpoint info " + root.path(), &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("step 2 (4 micro-batches)"), std::string::npos) << out;
  out = run("checkpoint export " + root.path() + " " + root.path() + "/w --dtype fp32", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_EQ(read_export(root.path() + "/w", "fp32"), harness::read_masters(*e, mlp));
  // safetensors: the header (JSON after an 8-byte length) gives each tensor's range; bf16 values
  // are the masters rounded to nearest even.
  out = run("checkpoint export " + root.path() + " " + root.path() + "/st --dtype bf16 --format safetensors", &rc);
  EXPECT_EQ(rc, 0) << out;
  {
    std::ifstream f(root.path() + "/st/model.safetensors", std::ios::binary);
    uint64_t hlen = 0;
    f.read(reinterpret_cast<char*>(&hlen), 8);
    std::string header(hlen, ' ');
    f.read(header.data(), static_cast<std::streamsize>(hlen));
    const nlohmann::json h = nlohmann::json::parse(header);
    const Masters masters = harness::read_masters(*e, mlp);
    ASSERT_EQ(h.size(), masters.size() + 1) << "every param and __metadata__";
    for (const auto& [name, values] : masters) {
      const auto& t = h.at(name);
      EXPECT_EQ(t.at("dtype"), "BF16");
      const uint64_t b = t.at("data_offsets")[0], e2 = t.at("data_offsets")[1];
      ASSERT_EQ(e2 - b, values.size() * 2) << name;
      std::vector<uint16_t> got(values.size());
      f.seekg(static_cast<std::streamoff>(8 + hlen + b));
      f.read(reinterpret_cast<char*>(got.data()), static_cast<std::streamsize>(got.size() * 2));
      for (size_t i = 0; i < values.size(); ++i)
        ASSERT_EQ(got[i], reference::float_to_bf16(values[i])) << name << " " << i;
    }
  }
  out = run("checkpoint export " + root.path() + " " + root.path() + "/x --format onnx", &rc);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("export format 'onnx': expected strata or safetensors"), std::string::npos) << out;
  std::filesystem::resize_file(root.path() + "/step2/chunk2.bin", 10);
  out = run("checkpoint verify " + root.path(), &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("chunk2.bin is 10 bytes"), std::string::npos) << out;
  out = run("checkpoint frobnicate " + root.path(), &rc);
  EXPECT_EQ(rc, 2) << out;
}

}  // namespace
}  // namespace strata::engine
