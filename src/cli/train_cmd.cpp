// `strata train`: the GPT reference trainer from the command line. A JSON config (the
// DeepSpeed-style keys of docs/config.md) plus flags for the common settings; flags win. Every
// error is one line and exit 1 (2 for usage), before any training work.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "offload/device.h"
#include "src/cli/train_args.h"
#include "src/common/fs.h"
#include "src/train/trainer.h"

namespace {

using json = nlohmann::json;
using strata::Status;
using strata::StatusOr;

int fail(const Status& s) {
  std::fprintf(stderr, "strata train: %s\n", s.to_string().c_str());
  return 1;
}

// SIGINT / SIGTERM: the first asks the training loop to stop at the end of the current step (it
// then returns, and the engine's destructor removes its swap files and lock); a second exits at
// once. Only async-signal-safe calls in the handler.
std::atomic<int> g_signal{0};

extern "C" void on_stop_signal(int sig) {
  if (g_signal.exchange(sig) != 0) _exit(128 + sig);
  static const char kMsg[] = "strata train: stopping at the end of this step (send the signal again to exit at once)\n";
  ssize_t ignored = ::write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
  (void)ignored;
}

void install_stop_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
}

}  // namespace

int train_command(const std::vector<std::string>& args) {
  using namespace strata;
  bool usage = false;
  auto parsed = cli::parse_train_args(args, &usage);
  if (!parsed.is_ok()) {
    std::fprintf(stderr, "strata train: %s\n", parsed.status().message().c_str());
    if (usage) std::fputs(cli::kTrainHelp, stderr);
    return usage ? 2 : 1;
  }
  const cli::TrainArgs& args_in = parsed.value();
  if (args_in.help) {
    std::fputs(cli::kTrainHelp, stdout);
    return 0;
  }
  std::string config_text;
  if (!args_in.config_file.empty()) {
    auto text = fs::read_file(args_in.config_file);
    if (!text.is_ok()) return fail(std::move(text).status().annotate("--config"));
    config_text = text.value();
    if (config_text.empty()) return fail(invalid_argument("--config " + args_in.config_file + ": the file is empty"));
  }
  auto ecfg = cli::train_config(args_in, config_text, "--config " + args_in.config_file);
  if (!ecfg.is_ok()) return fail(ecfg.status());
  auto opts = cli::train_options(args_in);
  if (!opts.is_ok()) return fail(opts.status());
  train::TrainOptions o = opts.value();
  if (!args_in.lr_given) o.lr = train::default_lr(o.shape, ecfg.value().optimizer.type);
  install_stop_handlers();
  o.stop_requested = [] { return g_signal.load(); };
  const std::string data = args_in.data;
  const bool data_given = args_in.data_given;
  // Under mpirun with several ranks: data-parallel training over MPI; rank 0 prints.
  std::unique_ptr<comm::Communicator> ranks;
  if (comm::launched_with_several_ranks()) {
    comm::CommOptions copts;
    if (ecfg.value().comm_timeout_s > 0)
      copts.timeout = std::chrono::milliseconds(static_cast<int64_t>(ecfg.value().comm_timeout_s * 1000.0 + 0.5));
    auto c = comm::create_mpi(copts);
    if (!c.is_ok()) return fail(c.status());
    ranks = std::move(c).value();
  }
  const bool lead = ranks == nullptr || ranks->rank() == 0;
  if (!data_given && lead && !fs::exists(data)) {
    if (Status s = train::write_default_corpus(data, size_t{2} << 20); !s.is_ok()) return fail(s);
    std::printf("strata train: wrote the default corpus to %s (2 MiB of generated text)\n", data.c_str());
  }
  if (ranks != nullptr) {
    if (Status s = ranks->barrier(); !s.is_ok()) return fail(s);  // the corpus is written
  }
  o.data_path = data;
  auto print = [](const std::string& l) {
    std::printf("%s\n", l.c_str());
    std::fflush(stdout);
  };
  engine::EngineOptions eopts;
  eopts.comm = ranks.get();
  // GPU ranks: each rank takes its local rank's GPU, and NCCL (its id sent over MPI) carries the
  // training's collectives; CPU ranks (--device host) stay on MPI.
  std::unique_ptr<comm::Communicator> gpus;
  const std::string want = ecfg.value().device;
  if (ranks != nullptr && want != "host" && offload::usable_cuda_devices() > 0) {
    const char* local_env = std::getenv("OMPI_COMM_WORLD_LOCAL_RANK");
    const int local = local_env != nullptr ? std::atoi(local_env) : ranks->rank();
    const int gpu = local % offload::usable_cuda_devices();
    if (Status s = offload::use_cuda_device(gpu); !s.is_ok()) return fail(s);
    comm::NcclId id{};
    if (ranks->rank() == 0) {
      auto made = comm::nccl_unique_id();
      if (!made.is_ok()) return fail(made.status());
      id = made.value();
    }
    if (Status s = ranks->broadcast_sync(id.data(), id.size() / 4, comm::Elem::kI32, 0); !s.is_ok()) return fail(s);
    comm::CommOptions copts;
    if (ecfg.value().comm_timeout_s > 0)
      copts.timeout = std::chrono::milliseconds(static_cast<int64_t>(ecfg.value().comm_timeout_s * 1000.0 + 0.5));
    auto c = comm::create_nccl(id, ranks->rank(), ranks->size(), gpu, copts);
    if (!c.is_ok()) return fail(c.status());
    gpus = std::move(c).value();
    eopts.comm = gpus.get();
  }
  auto r = train::run_training(ecfg.value(), o, print, eopts);
  if (!r.is_ok() && r.status().code() == StatusCode::kCancelled) {
    if (lead) std::fprintf(stderr, "strata train: %s\n", r.status().message().c_str());
    const int sig = g_signal.load();
    return sig > 0 ? 128 + sig : 1;
  }
  if (!r.is_ok()) return fail(r.status());
  if (!lead) return 0;
  const train::TrainSummary& s = r.value();
  std::printf(
      "done: %lld steps in %.1f s, loss %.4f -> %.4f, validation %.4f; %.0f tok/s; bytes H2D %.1f MB, D2H %.1f MB, "
      "NVMe read %.1f MB, write %.1f MB; fetch stall %.2f s; device peak %.1f MB\n",
      static_cast<long long>(s.steps), s.seconds, s.first_loss, s.last_loss, s.val_loss, s.tokens_per_s,
      s.stats.bytes_h2d / 1e6, s.stats.bytes_d2h / 1e6, s.stats.bytes_nvme_read / 1e6, s.stats.bytes_nvme_write / 1e6,
      s.stats.stall_fetch_s, s.stats.device_peak_bytes / 1e6);
  if (ranks != nullptr)
    std::printf(
        "data parallel: %d ranks; rank 0 all-reduced %.1f MB of fp32 gradients and all-gathered %.1f MB of bit16 "
        "params, %.2f s blocked in gradient all-reduces and step gathers, %.2f s in gathers for fetches\n",
        ranks->size(), s.stats.bytes_allreduce / 1e6, s.stats.bytes_allgather / 1e6, s.stats.allreduce_s,
        s.stats.allgather_s);
  return 0;
}
