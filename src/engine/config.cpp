// Parsing the engine's JSON configuration (see config.h).
#include "src/engine/config.h"

#include <nlohmann/json.hpp>

#include "src/common/json_text.h"
#include "src/common/units.h"
#include "src/engine/cpu_threads.h"

#include <cmath>
#include <optional>
#include <set>
#include <vector>

namespace strata::engine {
namespace {

using nlohmann::json;

// One JSON object being read: every key read is marked, and finish() refuses the rest by name.
class Obj {
 public:
  Obj(const json& j, std::string path) : j_(j), path_(std::move(path)) {}

  Status check_object() const {
    if (!j_.is_object()) return invalid_argument(where() + "expected an object, got " + j_.dump());
    return Status::ok();
  }
  const json* take(const std::string& key) {
    known_.push_back(key);
    auto it = j_.find(key);
    if (it == j_.end()) return nullptr;
    used_.insert(key);
    return &*it;
  }
  std::string path(const std::string& key) const { return path_.empty() ? key : path_ + "." + key; }

  Status get_bool(const std::string& key, bool* out) {
    const json* v = take(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_boolean()) return invalid_argument(path(key) + ": expected true or false, got " + v->dump());
    *out = v->get<bool>();
    return Status::ok();
  }
  // Integers, also written as 5e7 or 5.0e7 (DeepSpeed configs often are), within [lo, hi].
  Status get_int(const std::string& key, long long* out, long long lo, long long hi) {
    const json* v = take(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_number()) return invalid_argument(path(key) + ": expected an integer, got " + v->dump());
    // Integers as written (exact beyond 2^53); 5e7 and 5.0e7 through the shared whole-number check.
    auto out_of_range = [&] {
      return invalid_argument(path(key) + " = " + v->dump() + ": expected an integer in " + std::to_string(lo) +
                              " .. " + std::to_string(hi));
    };
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(hi) || static_cast<long long>(u) < lo) return out_of_range();
      *out = static_cast<long long>(u);
      return Status::ok();
    }
    if (v->is_number_integer()) {
      const int64_t i = v->get<int64_t>();
      if (i < lo || i > hi) return out_of_range();
      *out = i;
      return Status::ok();
    }
    STRATA_ASSIGN_OR_RETURN(*out, whole_in_range(v->get<double>(), path(key), v->dump(), lo, hi));
    return Status::ok();
  }
  template <class T>
  Status get_count(const std::string& key, T* out, long long lo, long long hi) {
    long long v = static_cast<long long>(*out);
    STRATA_RETURN_IF_ERROR(get_int(key, &v, lo, hi));
    *out = static_cast<T>(v);
    return Status::ok();
  }
  Status get_double(const std::string& key, double* out, double lo, double hi) {
    const json* v = take(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_number()) return invalid_argument(path(key) + ": expected a number, got " + v->dump());
    const double d = v->get<double>();
    if (!(d >= lo && d <= hi))
      return invalid_argument(path(key) + " = " + v->dump() + ": expected a number in [" + json(lo).dump() + ", " +
                              json(hi).dump() + "]");
    *out = d;
    return Status::ok();
  }
  Status get_string(const std::string& key, std::string* out, const std::vector<std::string>& allowed = {}) {
    const json* v = take(key);
    if (v == nullptr) return Status::ok();
    if (!v->is_string()) return invalid_argument(path(key) + ": expected a string, got " + v->dump());
    const std::string s = v->get<std::string>();
    if (!allowed.empty()) {
      bool ok = false;
      std::string list;
      for (const auto& a : allowed) {
        ok |= a == s;
        list += (list.empty() ? "" : ", ") + a;
      }
      if (!ok) return invalid_argument(path(key) + " = \"" + s + "\": expected one of " + list);
    }
    *out = s;
    return Status::ok();
  }
  // The sub-object at key, if present (and an object).
  StatusOr<std::optional<Obj>> sub(const std::string& key) {
    const json* v = take(key);
    if (v == nullptr) return std::optional<Obj>();
    Obj o(*v, path(key));
    STRATA_RETURN_IF_ERROR(o.check_object());
    return std::optional<Obj>(std::move(o));
  }
  Status finish() const {
    for (const auto& [key, value] : j_.items()) {
      if (used_.count(key) != 0) continue;
      std::string list;
      for (const auto& k : known_) list += (list.empty() ? "" : ", ") + k;
      return invalid_argument(path(key) + ": unknown key (known here: " + list + ")");
    }
    return Status::ok();
  }

 private:
  std::string where() const { return path_.empty() ? "config: " : path_ + ": "; }
  const json& j_;
  std::string path_;
  std::set<std::string> used_;
  std::vector<std::string> known_;
};

Status parse_offload(Obj& o, bool optimizer, EngineConfig* c) {
  std::string device = "none";
  STRATA_RETURN_IF_ERROR(o.get_string("device", &device, {"none", "cpu", "nvme"}));
  STRATA_ASSIGN_OR_RETURN(OffloadTarget t, parse_offload_target(device));
  std::string* nvme_path = optimizer ? &c->optimizer_nvme_path : &c->param_nvme_path;
  STRATA_RETURN_IF_ERROR(o.get_string("nvme_path", nvme_path));
  STRATA_RETURN_IF_ERROR(o.get_bool("pin_memory", &c->pin_memory));
  int* buffers = optimizer ? &c->placement.optimizer_buffer_count : &c->placement.param_buffer_count;
  STRATA_RETURN_IF_ERROR(o.get_count("buffer_count", buffers, 1, 1024));
  if (optimizer) {
    STRATA_RETURN_IF_ERROR(o.get_double("ratio", &c->placement.optimizer_ratio, 0.0, 1.0));
    bool fast_init = false;  // DeepSpeed's; accepted for compatibility, no effect in strata
    STRATA_RETURN_IF_ERROR(o.get_bool("fast_init", &fast_init));
  } else {
    long long max_in_cpu = 0;  // DeepSpeed's; accepted for compatibility, no effect in strata
    STRATA_RETURN_IF_ERROR(o.get_int("max_in_cpu", &max_in_cpu, 0, (1LL << 62)));
  }
  (optimizer ? c->placement.offload_optimizer : c->placement.offload_param) = t;
  if (t == OffloadTarget::kNvme && nvme_path->empty())
    return invalid_argument(o.path("nvme_path") + ": required when " + o.path("device") + " is \"nvme\"");
  return o.finish();
}

// "optimizer": the type names a registered optimizer (case as DeepSpeed: any); "params" takes the
// keys that optimizer lists, over its defaults, and refuses the others by name.
Status parse_optimizer(Obj& opt, OptimizerConfig* o) {
  std::string type = o->type;
  STRATA_RETURN_IF_ERROR(opt.get_string("type", &type));
  auto reg = optim::find(type);
  if (!reg.is_ok()) return invalid_argument(opt.path("type") + ": " + reg.status().message());
  o->type = reg.value()->type;
  o->hyper = reg.value()->defaults;
  STRATA_ASSIGN_OR_RETURN(auto params, opt.sub("params"));
  if (params) {
    optim::Hyper& h = o->hyper;
    for (std::string_view key : reg.value()->keys) {
      if (key == "lr") STRATA_RETURN_IF_ERROR(params->get_double("lr", &h.lr, 0.0, 1e6));
      if (key == "eps") STRATA_RETURN_IF_ERROR(params->get_double("eps", &h.eps, 1e-30, 1.0));
      if (key == "weight_decay") STRATA_RETURN_IF_ERROR(params->get_double("weight_decay", &h.weight_decay, 0.0, 1e6));
      if (key == "bias_correction") STRATA_RETURN_IF_ERROR(params->get_bool("bias_correction", &h.bias_correction));
      if (key == "adam_w_mode") STRATA_RETURN_IF_ERROR(params->get_bool("adam_w_mode", &h.adam_w_mode));
      if (key != "betas") continue;
      if (const json* betas = params->take("betas")) {
        if (!betas->is_array() || betas->size() != 2 || !(*betas)[0].is_number() || !(*betas)[1].is_number())
          return invalid_argument(params->path("betas") + ": expected [beta1, beta2], got " + betas->dump());
        h.beta1 = (*betas)[0].get<double>();
        h.beta2 = (*betas)[1].get<double>();
        if (!(h.beta1 >= 0 && h.beta1 < 1 && h.beta2 >= 0 && h.beta2 < 1))
          return invalid_argument(params->path("betas") + " = " + betas->dump() + ": each must be in [0, 1)");
      }
    }
    if (Status s = params->finish(); !s.is_ok())
      return invalid_argument(s.message() + " — " + o->type + " has no such hyper-parameter");
  }
  return opt.finish();
}

Status parse_zero(Obj& z, EngineConfig* c) {
  STRATA_RETURN_IF_ERROR(z.get_count("stage", &c->placement.stage, 0, 3));
  STRATA_ASSIGN_OR_RETURN(auto oo, z.sub("offload_optimizer"));
  if (oo) STRATA_RETURN_IF_ERROR(parse_offload(*oo, true, c));
  STRATA_ASSIGN_OR_RETURN(auto op, z.sub("offload_param"));
  if (op) STRATA_RETURN_IF_ERROR(parse_offload(*op, false, c));
  constexpr long long kMax = 1LL << 50;
  STRATA_RETURN_IF_ERROR(z.get_count("stage3_prefetch_bucket_size", &c->prefetch_bucket_size, 0, kMax));
  STRATA_RETURN_IF_ERROR(z.get_count("stage3_max_live_parameters", &c->max_live_parameters, 0, kMax));
  STRATA_RETURN_IF_ERROR(z.get_count("stage3_max_reuse_distance", &c->max_reuse_distance, 0, kMax));
  STRATA_RETURN_IF_ERROR(z.get_count("reduce_bucket_size", &c->reduce_bucket_size, 1, kMax));
  bool ignored = true;  // DeepSpeed tuning switches strata always behaves as if on
  for (const char* k : {"contiguous_gradients", "overlap_comm", "reduce_scatter", "allgather_partitions"})
    STRATA_RETURN_IF_ERROR(z.get_bool(k, &ignored));
  if (c->placement.offload_param != OffloadTarget::kNone && c->placement.stage != 3)
    return invalid_argument("zero_optimization.offload_param needs zero_optimization.stage = 3, not " +
                            std::to_string(c->placement.stage));
  return z.finish();
}

Status parse_root(Obj& root, EngineConfig* c) {
  STRATA_RETURN_IF_ERROR(root.check_object());
  STRATA_RETURN_IF_ERROR(root.get_count("gradient_accumulation_steps", &c->gradient_accumulation_steps, 1, 1 << 20));
  STRATA_RETURN_IF_ERROR(root.get_double("gradient_clipping", &c->gradient_clipping, 0.0, 1e30));
  STRATA_RETURN_IF_ERROR(root.get_count("train_batch_size", &c->train_batch_size, 1, 1LL << 40));
  STRATA_RETURN_IF_ERROR(
      root.get_count("train_micro_batch_size_per_gpu", &c->train_micro_batch_size_per_gpu, 1, 1LL << 40));
  long long steps_per_print = 0;
  STRATA_RETURN_IF_ERROR(root.get_int("steps_per_print", &steps_per_print, 1, 1LL << 40));

  bool fp16 = false, bf16 = false;
  STRATA_ASSIGN_OR_RETURN(auto f16, root.sub("fp16"));
  if (f16) {
    STRATA_RETURN_IF_ERROR(f16->get_bool("enabled", &fp16));
    LossScaleConfig& l = c->loss_scale;
    STRATA_RETURN_IF_ERROR(f16->get_double("loss_scale", &l.loss_scale, 0.0, 1e30));
    STRATA_RETURN_IF_ERROR(f16->get_count("initial_scale_power", &l.initial_scale_power, 0, 64));
    STRATA_RETURN_IF_ERROR(f16->get_count("loss_scale_window", &l.loss_scale_window, 1, 1 << 30));
    STRATA_RETURN_IF_ERROR(f16->get_count("hysteresis", &l.hysteresis, 1, 1 << 20));
    STRATA_RETURN_IF_ERROR(f16->get_double("min_loss_scale", &l.min_loss_scale, 1e-30, 1e30));
    STRATA_RETURN_IF_ERROR(f16->finish());
  }
  STRATA_ASSIGN_OR_RETURN(auto b16, root.sub("bf16"));
  if (b16) {
    STRATA_RETURN_IF_ERROR(b16->get_bool("enabled", &bf16));
    STRATA_RETURN_IF_ERROR(b16->finish());
  }
  if (fp16 && bf16) return invalid_argument("fp16.enabled and bf16.enabled are both true: choose one");
  c->precision = fp16 ? Precision::kFP16 : Precision::kBF16;

  STRATA_ASSIGN_OR_RETURN(auto opt, root.sub("optimizer"));
  if (opt) {
    STRATA_RETURN_IF_ERROR(parse_optimizer(*opt, &c->optimizer));
  }

  STRATA_ASSIGN_OR_RETURN(auto zero, root.sub("zero_optimization"));
  if (zero) STRATA_RETURN_IF_ERROR(parse_zero(*zero, c));
  if (const json* aio = root.take("aio")) {
    auto a = offload::parse_aio_config(*aio);
    if (!a.is_ok()) return a.status();
    c->aio = a.value();
  }
  STRATA_ASSIGN_OR_RETURN(auto st, root.sub("strata"));
  if (st) {
    STRATA_RETURN_IF_ERROR(st->get_string("device", &c->device, {"auto", "host", "cuda"}));
    constexpr long long kMax = 1LL << 56;
    STRATA_RETURN_IF_ERROR(st->get_count("device_bytes", &c->device_bytes, 0, kMax));
    STRATA_RETURN_IF_ERROR(st->get_count("host_bytes", &c->host_bytes, 0, kMax));
    STRATA_RETURN_IF_ERROR(st->get_count("chunk_bytes", &c->chunk_bytes, 4096, kMax));
    STRATA_RETURN_IF_ERROR(st->get_count("seed", &c->seed, 0, kMax));
    STRATA_RETURN_IF_ERROR(st->get_count("live_chunks", &c->placement.live_chunks, 1, 1 << 20));
    STRATA_RETURN_IF_ERROR(st->get_count("grad_buckets", &c->placement.grad_buckets, 1, 1 << 20));
    STRATA_RETURN_IF_ERROR(st->get_bool("overlap", &c->overlap));
    STRATA_RETURN_IF_ERROR(st->get_string("trace", &c->trace_path, {}));
    STRATA_RETURN_IF_ERROR(st->get_bool("step_summary", &c->step_summary));
    STRATA_RETURN_IF_ERROR(st->get_count("max_consecutive_skips", &c->max_consecutive_skips, 1, 1 << 20));
    STRATA_RETURN_IF_ERROR(st->get_double("comm_timeout", &c->comm_timeout_s, 0.0, 7.0 * 24 * 3600));
    STRATA_RETURN_IF_ERROR(st->get_bool("nvme_checksum", &c->nvme_checksum));
    STRATA_RETURN_IF_ERROR(st->get_string("nvme_rewrite", &c->nvme_rewrite, {"in_place", "ab_slots"}));
    STRATA_RETURN_IF_ERROR(st->get_count("optimizer_threads", &c->optimizer_threads, 0, 4096));
    STRATA_RETURN_IF_ERROR(st->get_string("optimizer_cpus", &c->optimizer_cpus));
    STRATA_RETURN_IF_ERROR(st->get_string("background_priority", &c->background_priority, {"auto", "normal", "idle"}));
    STRATA_RETURN_IF_ERROR(st->get_bool("speculate", &c->speculate));
    STRATA_RETURN_IF_ERROR(st->get_bool("speculate_device", &c->speculate_device));
    STRATA_RETURN_IF_ERROR(st->get_count("speculation_bytes", &c->speculation_bytes, 0, kMax));
    STRATA_RETURN_IF_ERROR(st->get_string("gradient_tier", &c->gradient_tier, {"auto", "host", "nvme"}));
    if (!c->optimizer_cpus.empty()) {
      STRATA_RETURN_IF_ERROR(parse_cpu_list(c->optimizer_cpus, "strata.optimizer_cpus").status());
    }
    STRATA_RETURN_IF_ERROR(st->finish());
  }
  c->placement.nvme_copies = c->nvme_rewrite == "ab_slots" ? 2 : 1;
  c->placement.speculate = c->speculate && c->overlap;
  c->placement.speculate_device = c->placement.speculate && c->speculate_device;
  c->placement.speculation_bytes = c->speculation_bytes;
  using GradTier = PlacementConfig::GradTier;
  c->placement.gradient_tier = c->gradient_tier == "nvme"   ? GradTier::kNvme
                               : c->gradient_tier == "host" ? GradTier::kHost
                                                            : GradTier::kAuto;
  if (c->device == "host" && c->device_bytes == 0)
    return invalid_argument("strata.device_bytes: required (> 0) with strata.device = \"host\"");
  return root.finish();
}

}  // namespace

StatusOr<EngineConfig> parse_engine_config(std::string_view json_text) {
  STRATA_ASSIGN_OR_RETURN(json j, parse_json(json_text, "config"));
  EngineConfig c;
  Obj root(j, "");
  STRATA_RETURN_IF_ERROR(parse_root(root, &c));
  return c;
}

}  // namespace strata::engine
