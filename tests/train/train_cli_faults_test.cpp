// `strata train` and `strata checkpoint export` as a hostile user drives them: every number out of
// range is refused naming the flag, a config's syntax error names its line and column, a run too
// large for the machine is refused before it allocates, a run that diverges ends, SIGTERM / SIGINT
// stop at a step and leave no swap file or lock behind, an export never replaces what strata did
// not write, and `strata env` reports the machine.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "tests/common/run_command.h"
#include "tests/offload/scratch_dir.h"

namespace {

using strata::testing::run_command;
using strata::testing::ScratchDir;

class TrainCliFaults : public ::testing::Test {
 protected:
  void SetUp() override {
    std::ofstream f(data());
    for (int i = 0; i < 400; ++i) f << "The engine moves the params to the device before the step. ";
  }
  std::string data() const { return dir_.path() + "/corpus.txt"; }
  std::string base() const {
    return std::string(STRATA_CLI) + " train --data " + data() +
           " --device host --device-memory 8M --batch 2 --seq 32 --val-every 0 ";
  }
  std::string run(const std::string& args, int* rc) const { return run_command("timeout 120 " + base() + args, rc); }
  ScratchDir dir_;
};

TEST_F(TrainCliFaults, EveryNumberOutOfRangeIsRefusedNamingTheFlag) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--device-memory 1e30", "--device-memory 1e30: more than the largest size accepted here"},
      {"--host-memory 1e30", "--host-memory 1e30: more than the largest size accepted here"},
      {"--chunk-size 1e30", "--chunk-size 1e30: more than the largest size accepted here"},
      {"--device-memory -5M", "--device-memory -5M: a size cannot be negative"},
      {"--chunk-size 1K", "--chunk-size 1K: less than the smallest size accepted here, 4.0 KiB"},
      {"--chunk-size 64Q", "--chunk-size 64Q: expected a size in bytes"},
      {"--steps 99999999999999999999", "--steps 99999999999999999999: out of range: expected an integer in 1 .. "},
      {"--batch 0", "--batch 0: out of range"},
      {"--seq 1.5", "--seq 1.5: expected an integer"},
      {"--layers 100000", "--layers 100000: out of range"},
      {"--seed -1", "--seed -1: out of range"},
      {"--lr 1e30", "--lr 1e30: out of range: expected a number in"},
      {"--lr nan", "--lr nan: expected a number in"},
      {"--comm-timeout 0", "--comm-timeout 0: out of range"},
      {"--keep-last 0", "--keep-last 0: out of range"},
      {"--grad-accum 1e9", "--grad-accum 1e9: expected an integer"},
  };
  for (const auto& [args, needle] : cases) {
    int rc = 0;
    const std::string out = run(args, &rc);
    EXPECT_EQ(rc, 1) << args << "\n" << out;
    EXPECT_NE(out.find(needle), std::string::npos) << args << "\n" << out;
    EXPECT_EQ(out.find("placement plan"), std::string::npos) << "refused before any work: " << args;
  }
}

TEST_F(TrainCliFaults, AConfigsSyntaxErrorNamesLineAndColumn) {
  const std::string cfg = dir_.path() + "/bad.json";
  std::ofstream(cfg) << "{\n  \"zero_optimization\": {\n    \"stage\": 2,\n  }\n}\n";
  int rc = 0;
  std::string out = run("--config " + cfg, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--config " + cfg + ": line 4, column 3: syntax error"), std::string::npos) << out;
  std::ofstream(cfg) << R"({"strata": {"device_bytes": 1e999}})";
  out = run("--config " + cfg, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("number overflow"), std::string::npos) << out;
}

TEST_F(TrainCliFaults, ASequenceBeyondTheModelOrTheMachineIsRefusedBeforeAllocating) {
  int rc = 0;
  std::string out = run("--seq 100000", &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("--seq 100000 exceeds the model's max_seq 64 (preset tiny): pass --max-seq 100000"),
            std::string::npos)
      << out;
  // Allowed by the shape, far beyond the machine: refused in milliseconds, not by std::bad_alloc.
  const std::string big = dir_.path() + "/big.txt";  // each split must hold 100001 bytes
  {
    std::ofstream f(big);
    for (int i = 0; i < 20000; ++i) f << "The engine moves the params to the device before the step. ";
  }
  const auto t0 = std::chrono::steady_clock::now();
  out = run_command("timeout 120 " + std::string(STRATA_CLI) + " train --data " + big +
                        " --device host --device-memory 8M --val-every 0 --seq 100000 --max-seq 100000 --batch 64",
                    &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("OUT_OF_MEMORY: refused before allocating"), std::string::npos) << out;
  EXPECT_NE(out.find("lower --batch or --seq"), std::string::npos) << out;
  EXPECT_EQ(out.find("terminate"), std::string::npos) << out;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(30));
}

// fp16 with a learning rate inside the accepted range that still blows the weights up: the
// overflows drive the loss scale to its minimum and the run ends there, instead of skipping forever.
TEST_F(TrainCliFaults, ARunThatDivergesEnds) {
  int rc = 0;
  const std::string out = run("--precision fp16 --lr 1e6 --steps 100000", &rc);
  EXPECT_EQ(rc, 1) << out.substr(out.size() > 3000 ? out.size() - 3000 : 0);
  EXPECT_NE(out.find("NON_FINITE"), std::string::npos) << out.substr(out.size() > 3000 ? out.size() - 3000 : 0);
  EXPECT_NE(out.find("Training diverged"), std::string::npos);
}

// Runs `strata train` in the background, waits for its first step line, sends `sig` (twice when
// `twice`), and returns its exit status and everything it printed.
int run_and_signal(const std::string& cmd, int sig, bool twice, std::string* out) {
  const std::string log = cmd.substr(0, 0) + std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                          "/strata_sig_" + std::to_string(::getpid()) + ".log";
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string full = "exec " + cmd + " > " + log + " 2>&1";
    ::execl("/bin/sh", "sh", "-c", full.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  for (int i = 0; i < 1200; ++i) {  // up to 2 minutes for the first step
    std::ifstream in(log);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (text.find("\nstep ") != std::string::npos) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ::kill(pid, sig);
  if (twice) ::kill(pid, sig);
  int st = 0;
  ::waitpid(pid, &st, 0);
  std::ifstream in(log);
  *out = std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::filesystem::remove(log);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

TEST_F(TrainCliFaults, SigtermAndSigintStopAtAStepAndLeaveNoSwapFilesOrLock) {
  for (int sig : {SIGTERM, SIGINT}) {
    const std::string swap = dir_.path() + "/swap" + std::to_string(sig);
    std::string out;
    const int rc =
        run_and_signal(base() + "--steps 100000 --stage 3 --offload-param nvme --offload-optimizer nvme --nvme-path " +
                           swap + " --chunk-size 64K",
                       sig, false, &out);
    EXPECT_EQ(rc, 128 + sig) << out.substr(out.size() > 2000 ? out.size() - 2000 : 0);
    EXPECT_NE(out.find(std::string("stopped by ") + (sig == SIGTERM ? "SIGTERM" : "SIGINT") + " after step"),
              std::string::npos)
        << out.substr(out.size() > 2000 ? out.size() - 2000 : 0);
    ASSERT_TRUE(std::filesystem::is_directory(swap));
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(swap)) left.push_back(e.path().filename());
    EXPECT_TRUE(left.empty()) << "swap files or the lock left behind: " << (left.empty() ? "" : left[0]);
  }
  // A second signal exits at once, with the same status.
  std::string out;
  const int rc = run_and_signal(base() + "--steps 100000", SIGTERM, true, &out);
  EXPECT_EQ(rc, 128 + SIGTERM) << out.substr(out.size() > 2000 ? out.size() - 2000 : 0);
}

TEST_F(TrainCliFaults, ExportNeverReplacesWhatStrataDidNotWrite) {
  int rc = 0;
  const std::string ckpt = dir_.path() + "/ckpt";
  std::string out = run("--steps 2 --save " + ckpt, &rc);
  ASSERT_EQ(rc, 0) << out;
  const std::string cli = std::string(STRATA_CLI) + " checkpoint export " + ckpt + " ";
  // A directory holding the user's files: refused, every file intact.
  const std::string mine = dir_.path() + "/mine";
  std::filesystem::create_directories(mine + "/sub");
  std::ofstream(mine + "/notes.txt") << "keep me";
  std::ofstream(mine + "/sub/data.bin") << "and me";
  out = run_command(cli + mine, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("ALREADY_EXISTS: export to '" + mine +
                     "': the directory holds files strata did not write (notes.txt, sub)"),
            std::string::npos)
      << out;
  std::ifstream a(mine + "/notes.txt"), b(mine + "/sub/data.bin");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(a)), std::istreambuf_iterator<char>()), "keep me");
  EXPECT_EQ(std::string((std::istreambuf_iterator<char>(b)), std::istreambuf_iterator<char>()), "and me");
  // A regular file: refused, intact.
  const std::string file = dir_.path() + "/file.bin";
  std::ofstream(file) << "a file";
  out = run_command(cli + file, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_NE(out.find("a file is there"), std::string::npos) << out;
  EXPECT_EQ(std::filesystem::file_size(file), 6u);
  // A fresh path, then the same path again: an earlier export of strata's is replaced.
  const std::string exp = dir_.path() + "/export";
  out = run_command(cli + exp, &rc);
  EXPECT_EQ(rc, 0) << out;
  out = run_command(cli + exp + " --dtype bf16", &rc);
  EXPECT_EQ(rc, 0) << out;
  EXPECT_TRUE(std::filesystem::exists(exp + "/.strata-export"));
  EXPECT_FALSE(std::filesystem::exists(exp + ".strata-tmp"));
  // ... but not once the user put a file of their own into it.
  std::ofstream(exp + "/README") << "mine";
  out = run_command(cli + exp, &rc);
  EXPECT_EQ(rc, 1) << out;
  EXPECT_TRUE(std::filesystem::exists(exp + "/README"));
}

TEST_F(TrainCliFaults, EnvReportsTheMachineAndProbesTheNvmePathWithoutLeavingFiles) {
  const std::string nv = dir_.path() + "/nvme";
  std::filesystem::create_directory(nv);
  int rc = 0;
  const std::string out = run_command(std::string(STRATA_CLI) + " env --nvme-path " + nv + " --probe-size 32M", &rc);
  EXPECT_EQ(rc, 0) << out;
  for (const char* line : {"strata:", "NCCL:", "MPI:", "CPU kernels:", "host memory:", "pinned limit (ulimit -l):",
                           "AIO requests:", "  file system:", "  O_DIRECT:", "  free space:", "  probe:"})
    EXPECT_NE(out.find(line), std::string::npos) << line << "\n" << out;
  EXPECT_NE(out.find("write "), std::string::npos) << out;
  EXPECT_TRUE(std::filesystem::is_empty(nv)) << "the probe removes what it wrote";
  const std::string missing = run_command(std::string(STRATA_CLI) + " env --nvme-path " + dir_.path() + "/nope", &rc);
  EXPECT_EQ(rc, 0) << missing;
  EXPECT_NE(missing.find("advice: --nvme-path " + dir_.path() + "/nope does not exist"), std::string::npos) << missing;
}

}  // namespace
