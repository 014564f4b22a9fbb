// `strata train`'s flags (train_args.h).
#include "src/cli/train_args.h"

#include <cstdint>

#include "src/common/json_text.h"
#include "src/common/units.h"

namespace strata::cli {

const char* const kTrainHelp =
    "usage: strata train [options]\n"
    "  --config FILE           engine config JSON (DeepSpeed-style keys; docs/config.md); flags override it\n"
    "  --model NAME            tiny | gpt2-124m | gpt2-350m | gpt-1.3b | gpt-7b (default tiny)\n"
    "  --layers N --heads N --channels N --max-seq N   a custom shape (override the preset)\n"
    "  --data FILE             byte-level text (default: the generated corpus strata_corpus.txt, written if missing)\n"
    "  --batch N --seq N       sequences per micro-batch, tokens per sequence (default 4 x 64; seq <= max-seq)\n"
    "  --grad-accum N          micro-batches per optimizer step (default 1)\n"
    "  --steps N --lr X --warmup N   optimizer steps (50), peak lr (min(3e-3, 0.6 / channels), cosine to 10%), warm-up "
    "steps (10)\n"
    "  --optimizer TYPE        Adam | AdamW | Lion | Adagrad (default AdamW; Lion's default peak lr is a tenth of the "
    "above)\n"
    "  --precision bf16|fp16   (default bf16)\n"
    "  --device auto|host|cuda --device-memory SIZE --host-memory SIZE   device and budgets (SIZE: 64M, 2G, ...)\n"
    "  --stage N               ZeRO stage 0..3\n"
    "  --offload-optimizer none|cpu|nvme --offload-param none|cpu|nvme --nvme-path DIR\n"
    "  --chunk-size SIZE       bit16 bytes per chunk\n"
    "  --checkpointing         activation checkpointing (recompute each block in backward)\n"
    "  --val-every N           validation loss every N steps (default 25; always at the end)\n"
    "  --save DIR --save-every N --resume DIR   checkpoints\n"
    "  --keep-last N           keep only the newest N checkpoints under --save (default: all)\n"
    "  --stop-after N          stop after N steps of this run (the schedule stays that of --steps; resume later)\n"
    "  --comm-timeout SECONDS  with several ranks: a collective that takes longer fails the run (default 300)\n"
    "  --trace FILE            Chrome-trace timeline of the run\n"
    "  --seed N                initialisation and data seed\n"
    "SIGINT / SIGTERM stop at the end of the current step, clean up and exit 130 / 143; a second one exits at once.\n";

namespace {

constexpr int64_t kBig = int64_t{1} << 40;  // steps and intervals

}  // namespace

StatusOr<TrainArgs> parse_train_args(const std::vector<std::string>& args, bool* usage) {
  *usage = false;
  TrainArgs t;
  train::TrainOptions& o = t.o;
  auto set = [&t](const char* ptr, nlohmann::json v) { t.sets.emplace_back(ptr, std::move(v)); };
  // A flag whose value goes into the JSON config as a string (a path, a device name).
  auto text = [&set](const char* ptr, const std::string& flag, const std::string& v) -> Status {
    if (!valid_utf8(v))
      return invalid_argument(flag + " " + printable(v) + ": not valid UTF-8 (config values are JSON strings)");
    set(ptr, v);
    return Status::ok();
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--help" || a == "-h") {
      t.help = true;
      return t;
    }
    if (a == "--checkpointing") {
      o.checkpointing = true;
      continue;
    }
    if (a.rfind("--", 0) != 0) {
      *usage = true;
      return invalid_argument("'" + printable(a) + "': not an option");
    }
    if (i + 1 >= args.size()) {
      *usage = true;
      return invalid_argument(printable(a) + " needs a value");
    }
    const std::string& v = args[++i];
    // Counts into int fields of the options; all through the same range-checked parser.
    auto count = [&](int64_t lo, int64_t hi) { return parse_count(v, a, lo, hi); };
    auto to_int = [&](int* out, int64_t lo, int64_t hi) -> Status {
      STRATA_ASSIGN_OR_RETURN(int64_t n, count(lo, hi));
      *out = static_cast<int>(n);
      return Status::ok();
    };
    auto to_i64 = [&](int64_t* out, int64_t lo, int64_t hi) -> Status {
      STRATA_ASSIGN_OR_RETURN(*out, count(lo, hi));
      return Status::ok();
    };
    auto size = [&](const char* ptr, uint64_t lo) -> Status {
      STRATA_ASSIGN_OR_RETURN(uint64_t n, parse_size(v, a, lo, uint64_t{1} << 56));
      set(ptr, n);
      return Status::ok();
    };
    Status s;
    if (a == "--config")
      t.config_file = v;
    else if (a == "--model")
      t.model = v;
    else if (a == "--layers")
      s = to_int(&t.layers, 1, 1 << 12);
    else if (a == "--heads")
      s = to_int(&t.heads, 1, 1 << 12);
    else if (a == "--channels")
      s = to_int(&t.channels, 1, 1 << 16);
    else if (a == "--max-seq")
      s = to_int(&t.max_seq, 1, 1 << 20);
    else if (a == "--data")
      t.data = v, t.data_given = true;
    else if (a == "--batch")
      s = to_int(&o.batch, 1, 1 << 20);
    else if (a == "--seq")
      s = to_int(&o.seq, 1, 1 << 20);
    else if (a == "--steps")
      s = to_i64(&o.steps, 1, kBig);
    else if (a == "--stop-after")
      s = to_i64(&o.stop_after, 1, kBig);
    else if (a == "--warmup")
      s = to_int(&o.warmup, 0, 1 << 30);
    else if (a == "--val-every")
      s = to_int(&o.val_every, 0, 1 << 30);
    else if (a == "--save-every")
      s = to_int(&o.save_every, 0, 1 << 30);
    else if (a == "--keep-last")
      s = to_int(&o.keep_last, 1, 1 << 20);
    else if (a == "--save")
      o.save_dir = v;
    else if (a == "--resume")
      o.resume_dir = v;
    else if (a == "--lr") {
      auto lr = parse_rate(v, a, 1e-30, 1e6);  // the config's optimizer.params.lr range
      if (lr.is_ok()) o.lr = lr.value(), t.lr_given = true;
      s = lr.status();
    } else if (a == "--grad-accum") {
      int n = 1;
      s = to_int(&n, 1, 1 << 20);
      set("/gradient_accumulation_steps", n);
    } else if (a == "--precision") {
      if (v != "bf16" && v != "fp16") s = invalid_argument("--precision " + printable(v) + ": expected bf16 or fp16");
      set(v == "fp16" ? "/fp16/enabled" : "/bf16/enabled", true);
    } else if (a == "--optimizer")
      s = text("/optimizer/type", a, v);
    else if (a == "--device")
      s = text("/strata/device", a, v);
    else if (a == "--device-memory")
      s = size("/strata/device_bytes", 0);
    else if (a == "--host-memory")
      s = size("/strata/host_bytes", 0);
    else if (a == "--chunk-size")
      s = size("/strata/chunk_bytes", 4096);
    else if (a == "--stage") {
      int st = 0;
      s = to_int(&st, 0, 3);
      set("/zero_optimization/stage", st);
    } else if (a == "--offload-optimizer")
      s = text("/zero_optimization/offload_optimizer/device", a, v);
    else if (a == "--offload-param")
      s = text("/zero_optimization/offload_param/device", a, v);
    else if (a == "--nvme-path") {
      s = text("/zero_optimization/offload_optimizer/nvme_path", a, v);
      if (s.is_ok()) s = text("/zero_optimization/offload_param/nvme_path", a, v);
    } else if (a == "--trace")
      s = text("/strata/trace", a, v);
    else if (a == "--comm-timeout") {
      auto secs = parse_rate(v, a, 1e-3, 7.0 * 24 * 3600);
      if (secs.is_ok()) set("/strata/comm_timeout", secs.value());
      s = secs.status();
    } else if (a == "--seed") {
      int64_t seed = 0;
      s = to_i64(&seed, 0, int64_t{1} << 56);
      set("/strata/seed", seed);
    } else {
      *usage = true;
      return invalid_argument("unknown option " + printable(a));
    }
    if (!s.is_ok()) return s;
  }
  return t;
}

StatusOr<engine::EngineConfig> train_config(const TrainArgs& a, const std::string& config_text,
                                            const std::string& config_name) {
  nlohmann::json cfg = nlohmann::json::object();
  if (!config_text.empty()) {
    STRATA_ASSIGN_OR_RETURN(cfg, parse_json(config_text, config_name));
    if (!cfg.is_object())
      return invalid_argument(config_name + ": expected a JSON object at the top, got " + printable(cfg.dump()));
  }
  try {
    for (const auto& [ptr, value] : a.sets) {
      // A flag's key may sit under a config value of another type ("strata": 3): say so.
      const nlohmann::json::json_pointer p(ptr);
      const nlohmann::json::json_pointer parent = p.parent_pointer();
      if (cfg.contains(parent) && !cfg[parent].is_object())
        return invalid_argument(config_name + ": " + parent.to_string().substr(1) +
                                " is not an object, so a flag cannot set " + ptr.substr(1));
      cfg[p] = value;
    }
  } catch (const nlohmann::json::exception& e) {
    return invalid_argument(config_name + ": the flags do not fit the config: " + printable(e.what(), 200));
  }
  // A "nvme" device without a path, or a path without nvme: drop what does not apply.
  if (cfg.contains("zero_optimization") && cfg["zero_optimization"].is_object()) {
    nlohmann::json& z = cfg["zero_optimization"];
    for (const char* part : {"offload_optimizer", "offload_param"}) {
      if (!z.contains(part) || !z[part].is_object()) continue;
      nlohmann::json& o = z[part];
      const bool nvme = o.contains("device") && o["device"].is_string() && o["device"] == "nvme";
      if (o.contains("nvme_path") && !nvme) o.erase("nvme_path");
      if (o.empty()) z.erase(part);
    }
    if (z.empty()) cfg.erase("zero_optimization");
  }
  if (cfg.contains("strata") && cfg["strata"].is_object()) {
    const nlohmann::json& st = cfg["strata"];
    if (st.contains("device") && st["device"] == "host" && !st.contains("device_bytes"))
      return invalid_argument("--device host needs --device-memory (the emulated device's budget)");
  }
  return engine::parse_engine_config(cfg.dump());
}

StatusOr<train::TrainOptions> train_options(const TrainArgs& a) {
  train::TrainOptions o = a.o;
  STRATA_ASSIGN_OR_RETURN(o.shape, train::gpt_preset(a.model));
  const bool custom = a.layers || a.heads || a.channels || a.max_seq;
  if (a.layers) o.shape.layers = a.layers;
  if (a.heads) o.shape.heads = a.heads;
  if (a.channels) o.shape.channels = a.channels;
  if (a.max_seq) o.shape.max_seq = a.max_seq;
  STRATA_RETURN_IF_ERROR(o.shape.validate());
  if (o.seq > o.shape.max_seq)
    return invalid_argument("--seq " + std::to_string(o.seq) + " exceeds the model's max_seq " +
                            std::to_string(o.shape.max_seq) + " (" + (custom ? "set" : "preset " + a.model) +
                            "): pass --max-seq " + std::to_string(o.seq) +
                            " to build the model with that context (its position embedding grows with it)");
  if (!a.lr_given) o.lr = train::default_lr(o.shape);
  o.data_path = a.data;
  return o;
}

}  // namespace strata::cli
