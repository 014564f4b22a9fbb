// `strata train`: the GPT reference trainer from the command line. A JSON config (the
// DeepSpeed-style keys of docs/config.md) plus flags for the common settings; flags win. Every
// error is one line and exit 1 (2 for usage), before any training work.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "offload/device.h"
#include "src/common/fs.h"
#include "src/train/trainer.h"

namespace {

using json = nlohmann::json;
using strata::Status;
using strata::StatusOr;

const char* const kHelp =
    "usage: strata train [options]\n"
    "  --config FILE           engine config JSON (DeepSpeed-style keys; docs/config.md); flags override it\n"
    "  --model NAME            tiny | gpt2-124m | gpt2-350m | gpt-1.3b (default tiny)\n"
    "  --layers N --heads N --channels N --max-seq N   a custom shape (override the preset)\n"
    "  --data FILE             byte-level text (default: the generated corpus strata_corpus.txt, written if missing)\n"
    "  --batch N --seq N       sequences per micro-batch, tokens per sequence (default 4 x 64)\n"
    "  --grad-accum N          micro-batches per optimizer step (default 1)\n"
    "  --steps N --lr X --warmup N   optimizer steps (50), peak lr (min(3e-3, 0.6 / channels), cosine to 10%), warm-up steps (10)\n"
    "  --precision bf16|fp16   (default bf16)\n"
    "  --device auto|host|cuda --device-memory SIZE --host-memory SIZE   device and budgets (SIZE: 64M, 2G, ...)\n"
    "  --stage N               ZeRO stage 0..3\n"
    "  --offload-optimizer none|cpu|nvme --offload-param none|cpu|nvme --nvme-path DIR\n"
    "  --chunk-size SIZE       bit16 bytes per chunk\n"
    "  --checkpointing         activation checkpointing (recompute each block in backward)\n"
    "  --val-every N           validation loss every N steps (default 25; always at the end)\n"
    "  --save DIR --save-every N --resume DIR   checkpoints\n"
    "  --stop-after N          stop after N steps of this run (the schedule stays that of --steps; resume later)\n"
    "  --trace FILE            Chrome-trace timeline of the run\n"
    "  --seed N                initialisation and data seed\n";

StatusOr<long long> parse_size(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  double mul = 1;
  const std::string suf = end != nullptr ? std::string(end) : "";
  if (suf == "K" || suf == "k") mul = 1024.0;
  else if (suf == "M" || suf == "m") mul = 1024.0 * 1024;
  else if (suf == "G" || suf == "g") mul = 1024.0 * 1024 * 1024;
  else if (!suf.empty()) return strata::invalid_argument(flag + " " + v + ": expected a number with an optional K, M or G suffix");
  if (end == v.c_str() || !(x >= 0)) return strata::invalid_argument(flag + " " + v + ": expected a non-negative size");
  return static_cast<long long>(x * mul);
}

StatusOr<long long> parse_int(const std::string& flag, const std::string& v, long long lo) {
  char* end = nullptr;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (end == v.c_str() || *end != '\0' || x < lo)
    return strata::invalid_argument(flag + " " + v + ": expected an integer >= " + std::to_string(lo));
  return x;
}

int fail(const Status& s) {
  std::fprintf(stderr, "strata train: %s\n", s.to_string().c_str());
  return 1;
}

}  // namespace

int train_command(const std::vector<std::string>& args) {
  using namespace strata;
  json cfg = json::object();
  train::TrainOptions o;
  bool lr_given = false;
  std::string model = "tiny";
  int layers = 0, heads = 0, channels = 0, max_seq = 0;
  std::string data = "strata_corpus.txt";
  bool data_given = false;
  // Flags that set config keys, applied after --config is read.
  std::vector<std::pair<json::json_pointer, json>> sets;
  std::string config_file;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      std::fputs(kHelp, stdout);
      return 0;
    }
    if (a == "--checkpointing") {
      o.checkpointing = true;
      continue;
    }
    if (i + 1 >= args.size() || a.rfind("--", 0) != 0) {
      std::fprintf(stderr, "strata train: %s %s\n%s", a.c_str(), a.rfind("--", 0) == 0 ? "needs a value" : ": not an option",
                   kHelp);
      return 2;
    }
    const std::string v = args[++i];
    Status bad;
    auto integer = [&](long long lo, auto* out) {
      auto r = parse_int(a, v, lo);
      if (!r.is_ok()) bad = r.status();
      else *out = static_cast<std::remove_pointer_t<decltype(out)>>(r.value());
    };
    auto size = [&](const char* ptr) {
      auto r = parse_size(a, v);
      if (!r.is_ok()) bad = r.status();
      else sets.push_back({json::json_pointer(ptr), r.value()});
    };
    if (a == "--config") config_file = v;
    else if (a == "--model") model = v;
    else if (a == "--layers") integer(1, &layers);
    else if (a == "--heads") integer(1, &heads);
    else if (a == "--channels") integer(1, &channels);
    else if (a == "--max-seq") integer(1, &max_seq);
    else if (a == "--data") data = v, data_given = true;
    else if (a == "--batch") integer(1, &o.batch);
    else if (a == "--seq") integer(1, &o.seq);
    else if (a == "--steps") integer(1, &o.steps);
    else if (a == "--stop-after") integer(1, &o.stop_after);
    else if (a == "--warmup") integer(0, &o.warmup);
    else if (a == "--val-every") integer(0, &o.val_every);
    else if (a == "--save-every") integer(0, &o.save_every);
    else if (a == "--save") o.save_dir = v;
    else if (a == "--resume") o.resume_dir = v;
    else if (a == "--lr") {
      lr_given = true;
      char* end = nullptr;
      o.lr = std::strtod(v.c_str(), &end);
      if (end == v.c_str() || *end != '\0' || !(o.lr > 0)) bad = invalid_argument("--lr " + v + ": expected a number > 0");
    } else if (a == "--grad-accum") {
      int n = 1;
      integer(1, &n);
      sets.push_back({json::json_pointer("/gradient_accumulation_steps"), n});
    } else if (a == "--precision") {
      if (v != "bf16" && v != "fp16") bad = invalid_argument("--precision " + v + ": expected bf16 or fp16");
      sets.push_back({json::json_pointer(v == "fp16" ? "/fp16/enabled" : "/bf16/enabled"), true});
    } else if (a == "--device") sets.push_back({json::json_pointer("/strata/device"), v});
    else if (a == "--device-memory") size("/strata/device_bytes");
    else if (a == "--host-memory") size("/strata/host_bytes");
    else if (a == "--chunk-size") size("/strata/chunk_bytes");
    else if (a == "--stage") {
      int st = 0;
      integer(0, &st);
      sets.push_back({json::json_pointer("/zero_optimization/stage"), st});
    } else if (a == "--offload-optimizer") sets.push_back({json::json_pointer("/zero_optimization/offload_optimizer/device"), v});
    else if (a == "--offload-param") sets.push_back({json::json_pointer("/zero_optimization/offload_param/device"), v});
    else if (a == "--nvme-path") {
      sets.push_back({json::json_pointer("/zero_optimization/offload_optimizer/nvme_path"), v});
      sets.push_back({json::json_pointer("/zero_optimization/offload_param/nvme_path"), v});
    } else if (a == "--trace") sets.push_back({json::json_pointer("/strata/trace"), v});
    else if (a == "--seed") {
      long long seed = 0;
      integer(0, &seed);
      sets.push_back({json::json_pointer("/strata/seed"), seed});
    } else {
      std::fprintf(stderr, "strata train: unknown option %s\n%s", a.c_str(), kHelp);
      return 2;
    }
    if (!bad.is_ok()) return fail(bad);
  }
  if (!config_file.empty()) {
    auto text = fs::read_file(config_file);
    if (!text.is_ok()) return fail(std::move(text).status().annotate("--config"));
    cfg = json::parse(text.value(), nullptr, false, true);
    if (cfg.is_discarded() || !cfg.is_object()) return fail(invalid_argument("--config " + config_file + ": not a JSON object"));
  }
  for (const auto& [ptr, value] : sets) cfg[ptr] = value;
  // A "nvme" device without a path, or a path without nvme: drop what does not apply.
  for (const char* part : {"offload_optimizer", "offload_param"}) {
    json& z = cfg["zero_optimization"];
    if (z.contains(part) && z[part].contains("nvme_path") && z[part].value("device", "none") != "nvme") z[part].erase("nvme_path");
    if (z.contains(part) && z[part].empty()) z.erase(part);
  }
  if (cfg["zero_optimization"].empty()) cfg.erase("zero_optimization");
  if (cfg.contains("strata") && cfg["strata"].value("device", "auto") == "host" && !cfg["strata"].contains("device_bytes"))
    return fail(invalid_argument("--device host needs --device-memory (the emulated device's budget)"));
  auto ecfg = engine::parse_engine_config(cfg.dump());
  if (!ecfg.is_ok()) return fail(ecfg.status());

  auto shape = train::gpt_preset(model);
  if (!shape.is_ok()) return fail(shape.status());
  o.shape = shape.value();
  if (layers) o.shape.layers = layers;
  if (heads) o.shape.heads = heads;
  if (channels) o.shape.channels = channels;
  if (max_seq) o.shape.max_seq = max_seq;
  if (o.seq > o.shape.max_seq && !max_seq) o.shape.max_seq = o.seq;
  if (!lr_given) o.lr = train::default_lr(o.shape);
  // Under mpirun with several ranks: data-parallel training over MPI; rank 0 prints.
  std::unique_ptr<comm::Communicator> ranks;
  if (comm::launched_with_several_ranks()) {
    auto c = comm::create_mpi();
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
    auto c = comm::create_nccl(id, ranks->rank(), ranks->size(), gpu);
    if (!c.is_ok()) return fail(c.status());
    gpus = std::move(c).value();
    eopts.comm = gpus.get();
  }
  auto r = train::run_training(ecfg.value(), o, print, eopts);
  if (!r.is_ok()) return fail(r.status());
  if (!lead) return 0;
  const train::TrainSummary& s = r.value();
  std::printf("done: %lld steps in %.1f s, loss %.4f -> %.4f, validation %.4f; %.0f tok/s; bytes H2D %.1f MB, D2H %.1f MB, "
              "NVMe read %.1f MB, write %.1f MB; fetch stall %.2f s; device peak %.1f MB\n",
              static_cast<long long>(s.steps), s.seconds, s.first_loss, s.last_loss, s.val_loss, s.tokens_per_s,
              s.stats.bytes_h2d / 1e6, s.stats.bytes_d2h / 1e6, s.stats.bytes_nvme_read / 1e6, s.stats.bytes_nvme_write / 1e6,
              s.stats.stall_fetch_s, s.stats.device_peak_bytes / 1e6);
  if (ranks != nullptr)
    std::printf("data parallel: %d ranks; rank 0 all-reduced %.1f MB of fp32 gradients and all-gathered %.1f MB of bit16 "
                "params, %.2f s blocked in gradient all-reduces and step gathers, %.2f s in gathers for fetches\n",
                ranks->size(), s.stats.bytes_allreduce / 1e6, s.stats.bytes_allgather / 1e6, s.stats.allreduce_s,
                s.stats.allgather_s);
  return 0;
}
