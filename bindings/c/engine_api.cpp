// C API: the training engine (wraps strata::engine::Engine). Engine handles are never freed: a
// destroyed handle keeps a tombstone so that any later call with it is refused with a clear error
// instead of touching freed memory (a few dozen bytes per engine ever created).
#include <cmath>
#include <cstddef>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <utility>
#include <vector>

#include "api_guard.h"
#include "src/engine/engine.h"
#include "strata.h"

namespace strata::capi {
// comm_api.cpp: the communicator behind a comm handle (checked), counted as used by one more
// engine until comm_release; nullptr for a NULL handle.
StatusOr<comm::Communicator*> comm_acquire(strata_comm_t* c);
void comm_release(strata_comm_t* c);
}  // namespace strata::capi

struct strata_engine {
  std::unique_ptr<strata::engine::Engine> impl;  // null once destroyed
  strata_comm_t* comm = nullptr;                 // the comm it was created with (released at destroy)
};

namespace strata::capi {
namespace {

std::mutex& registry_mu() {
  static std::mutex mu;
  return mu;
}
std::unordered_set<const strata_engine*>& registry() {
  static auto* set = new std::unordered_set<const strata_engine*>();  // lives until exit, with its handles
  return *set;
}

// The live engine behind a handle, or the reason there is none.
StatusOr<engine::Engine*> live(const strata_engine* e) {
  if (e == nullptr) return null_arg("engine");
  {
    std::lock_guard<std::mutex> l(registry_mu());
    if (registry().count(e) == 0) return invalid_argument("engine is not a handle returned by strata_engine_create");
  }
  if (!e->impl) return failed_precondition("the engine was destroyed: the handle is used after strata_engine_destroy");
  return e->impl.get();
}

Status name_arg(const char* name) { return name == nullptr ? null_arg("name") : Status::ok(); }

}  // namespace
}  // namespace strata::capi

using strata::Status;
using strata::capi::guard;
using strata::capi::live;
using strata::capi::null_arg;

extern "C" {

STRATA_API strata_status_t strata_engine_create(const strata_engine_options_t* options, strata_engine_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    if (options == nullptr) return null_arg("options");
    STRATA_RETURN_IF_ERROR(strata::capi::check_struct("options", options->struct_size, sizeof(*options),
                                                      options->reserved, sizeof(options->reserved),
                                                      "STRATA_ENGINE_OPTIONS_INIT"));
    if (options->config_json == nullptr) return null_arg("options.config_json");
    STRATA_ASSIGN_OR_RETURN(strata::engine::EngineConfig cfg,
                            strata::engine::parse_engine_config(options->config_json));
    strata::engine::EngineOptions o;
    STRATA_ASSIGN_OR_RETURN(o.comm, strata::capi::comm_acquire(options->comm));
    struct Release {  // the engine does not come to be: the comm is not used after all
      strata_comm_t* c;
      ~Release() { strata::capi::comm_release(c); }
    } release{options->comm};
    if (options->log != nullptr) {
      strata_log_fn fn = options->log;
      void* user = options->log_user;
      o.log = [fn, user](const std::string& line) { fn(user, line.c_str()); };
    }
    STRATA_ASSIGN_OR_RETURN(auto impl, strata::engine::Engine::create(cfg, std::move(o)));
    auto* handle = new strata_engine{std::move(impl), options->comm};
    release.c = nullptr;  // the engine holds it until destroyed
    std::lock_guard<std::mutex> l(strata::capi::registry_mu());
    strata::capi::registry().insert(handle);
    *out = handle;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_destroy(strata_engine_t* engine) {
  return guard(__func__, [&]() -> Status {
    if (engine == nullptr) return Status::ok();
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    Status s = e->synchronize();
    engine->impl.reset();
    strata::capi::comm_release(std::exchange(engine->comm, nullptr));
    return s;
  });
}

STRATA_API strata_status_t strata_engine_register_param(strata_engine_t* engine, const char* name, const int64_t* shape,
                                                        int ndim, strata_dtype_t init_dtype, const void* init) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    if (ndim < 0 || ndim > 8)
      return strata::invalid_argument("register of '" + std::string(name) + "': ndim = " + std::to_string(ndim) +
                                      ", must be 0..8");
    if (ndim > 0 && shape == nullptr) return null_arg("shape");
    STRATA_ASSIGN_OR_RETURN(strata::DType dt, strata::capi::to_dtype(init_dtype, "init_dtype"));
    return e->register_param(name, std::vector<int64_t>(shape, shape + ndim), dt, init);
  });
}

STRATA_API strata_status_t strata_engine_prepare(strata_engine_t* engine) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    return e->prepare();
  });
}

STRATA_API strata_status_t strata_engine_get_plan(strata_engine_t* engine, char* buf, size_t capacity, size_t* length) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (length == nullptr) return null_arg("length");
    if (!e->prepared())
      return strata::failed_precondition("plan before prepare: the plan is made when the layout is built");
    const std::string t = e->plan_table();
    *length = t.size();
    if (buf == nullptr) return null_arg("buf");
    if (capacity < t.size() + 1)
      return strata::invalid_argument("buf holds " + std::to_string(capacity) + " bytes, the plan needs " +
                                      std::to_string(t.size() + 1));
    std::memcpy(buf, t.c_str(), t.size() + 1);
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_fetch(strata_engine_t* engine, const char* name, void* stream,
                                               void** device_ptr) {
  return guard(__func__, [&]() -> Status {
    if (device_ptr == nullptr) return null_arg("device_ptr");
    *device_ptr = nullptr;
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    STRATA_ASSIGN_OR_RETURN(*device_ptr, e->fetch(name, stream));
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_release(strata_engine_t* engine, const char* name) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    return e->release(name);
  });
}

STRATA_API strata_status_t strata_engine_grad(strata_engine_t* engine, const char* name, const void* grad,
                                              strata_dtype_t dtype, size_t numel, void* stream) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    STRATA_ASSIGN_OR_RETURN(strata::DType dt, strata::capi::to_dtype(dtype, "dtype"));
    return e->grad(name, grad, dt, numel, stream);
  });
}

STRATA_API strata_status_t strata_engine_step(strata_engine_t* engine, const strata_engine_step_args_t* args,
                                              strata_engine_step_result_t* result) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    double lr = -1.0;
    if (args != nullptr) {
      STRATA_RETURN_IF_ERROR(strata::capi::check_struct("args", args->struct_size, sizeof(*args), args->reserved,
                                                        sizeof(args->reserved), "STRATA_ENGINE_STEP_ARGS_INIT"));
      if (std::isnan(args->lr)) return strata::invalid_argument("args.lr is NaN");
      lr = args->lr;
    }
    if (result != nullptr)
      STRATA_RETURN_IF_ERROR(strata::capi::check_struct("result", result->struct_size, sizeof(*result),
                                                        result->reserved, sizeof(result->reserved),
                                                        "STRATA_ENGINE_STEP_RESULT_INIT"));
    STRATA_ASSIGN_OR_RETURN(strata::engine::StepResult r, e->step(lr));
    if (result != nullptr) {
      result->boundary = r.boundary;
      result->applied = r.applied;
      result->overflow = r.overflow;
      result->grad_norm = r.grad_norm;
      result->clip_coef = r.clip_coef;
      result->loss_scale = r.loss_scale;
      result->optimizer_step = r.optimizer_step;
      result->chunks_speculated = r.chunks_speculated;
      result->chunks_redone = r.chunks_redone;
    }
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_begin_eval(strata_engine_t* engine) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    return e->begin_eval();
  });
}

STRATA_API strata_status_t strata_engine_end_eval(strata_engine_t* engine) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    return e->end_eval();
  });
}

STRATA_API strata_status_t strata_engine_set_lr(strata_engine_t* engine, double lr) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    return e->set_lr(lr);
  });
}

STRATA_API strata_status_t strata_engine_synchronize(strata_engine_t* engine) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    return e->synchronize();
  });
}

STRATA_API strata_status_t strata_engine_read_param(strata_engine_t* engine, const char* name, float* dst,
                                                    size_t numel) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    return e->read_master(name, dst, numel);
  });
}

STRATA_API strata_status_t strata_engine_get_loss_scale(strata_engine_t* engine, double* scale) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (scale == nullptr) return null_arg("scale");
    *scale = e->loss_scale();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_get_stats(strata_engine_t* engine, strata_engine_stats_t* stats) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (stats == nullptr) return null_arg("stats");
    // The first release's layout ended after order_changes with 4 reserved words.
    constexpr size_t kV0Size = offsetof(strata_engine_stats_t, bytes_allreduce) + 4 * sizeof(uint64_t);
    const bool v0 = stats->struct_size == kV0Size;
    if (v0) {
      STRATA_RETURN_IF_ERROR(strata::capi::check_struct("stats", stats->struct_size, kV0Size, &stats->bytes_allreduce,
                                                        4 * sizeof(uint64_t), "STRATA_ENGINE_STATS_INIT"));
    } else {
      STRATA_RETURN_IF_ERROR(strata::capi::check_struct("stats", stats->struct_size, sizeof(*stats), stats->reserved,
                                                        sizeof(stats->reserved), "STRATA_ENGINE_STATS_INIT"));
    }
    const strata::engine::EngineStats s = e->stats();
    stats->device_bytes = s.tier_bytes[0];
    stats->host_bytes = s.tier_bytes[1];
    stats->nvme_bytes = s.tier_bytes[2];
    stats->device_peak_bytes = s.device_peak_bytes;
    stats->bytes_h2d = s.bytes_h2d;
    stats->bytes_d2h = s.bytes_d2h;
    stats->bytes_nvme_read = s.bytes_nvme_read;
    stats->bytes_nvme_write = s.bytes_nvme_write;
    stats->stall_fetch_seconds = s.stall_fetch_s;
    stats->stall_grad_seconds = s.stall_grad_s;
    stats->step_seconds = s.step_s;
    stats->step_update_seconds = s.step_update_s;
    stats->step_nvme_seconds = s.step_nvme_s;
    stats->micro_steps = s.micro_steps;
    stats->optimizer_steps = s.optimizer_steps;
    stats->skipped_steps = s.skipped_steps;
    stats->loss_scale = s.loss_scale;
    stats->last_grad_norm = s.last_grad_norm;
    stats->prefetches = s.prefetches;
    stats->prefetch_hits = s.prefetch_hits;
    stats->demand_loads = s.demand_loads;
    stats->order_changes = s.order_changes;
    if (v0) return Status::ok();
    stats->bytes_allreduce = s.bytes_allreduce;
    stats->bytes_allgather = s.bytes_allgather;
    stats->allreduce_seconds = s.allreduce_s;
    stats->allgather_seconds = s.allgather_s;
    stats->allreduce_early = s.allreduce_early;
    stats->bucket_flushes = s.bucket_flushes;
    stats->early_flushes = s.early_flushes;
    stats->bytes_checkpoint = s.bytes_checkpoint;
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_save(strata_engine_t* engine, const char* dir, const char* tag) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (dir == nullptr) return null_arg("dir");
    return e->save(dir, tag == nullptr ? "" : tag);
  });
}

STRATA_API strata_status_t strata_engine_load(strata_engine_t* engine, const char* dir, const char* tag) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (dir == nullptr) return null_arg("dir");
    return e->load(dir, tag == nullptr ? "" : tag);
  });
}

STRATA_API strata_status_t strata_engine_export(strata_engine_t* engine, const char* dir,
                                                const strata_export_options_t* options) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (dir == nullptr) return null_arg("dir");
    strata::engine::ckpt::ExportOptions o;
    if (options != nullptr) {
      STRATA_RETURN_IF_ERROR(strata::capi::check_struct("options", options->struct_size, sizeof(*options),
                                                        options->reserved, sizeof(options->reserved),
                                                        "STRATA_EXPORT_OPTIONS_INIT"));
      STRATA_ASSIGN_OR_RETURN(o.dtype, strata::capi::to_dtype(options->dtype, "options.dtype"));
      const int f = strata::capi::raw_enum(options->format);
      if (f != STRATA_EXPORT_STRATA && f != STRATA_EXPORT_SAFETENSORS)
        return strata::invalid_argument("options.format = " + std::to_string(f) +
                                        " is not a strata_export_format_t (STRATA = 0, SAFETENSORS = 1)");
      o.format = f == STRATA_EXPORT_SAFETENSORS ? strata::engine::ckpt::WeightsFormat::kSafetensors
                                                : strata::engine::ckpt::WeightsFormat::kStrata;
      if (options->config_json != nullptr) o.config_json = options->config_json;
    }
    return e->export_weights(dir, o);
  });
}

STRATA_API strata_status_t strata_engine_map_param(strata_engine_t* engine, const char* name, void** device_ptr) {
  return guard(__func__, [&]() -> Status {
    if (device_ptr == nullptr) return null_arg("device_ptr");
    *device_ptr = nullptr;
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    STRATA_RETURN_IF_ERROR(strata::capi::name_arg(name));
    STRATA_ASSIGN_OR_RETURN(*device_ptr, e->map_param(name));
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_engine_export_weights(strata_engine_t* engine, const char* dir,
                                                        strata_dtype_t dtype) {
  return guard(__func__, [&]() -> Status {
    STRATA_ASSIGN_OR_RETURN(strata::engine::Engine * e, live(engine));
    if (dir == nullptr) return null_arg("dir");
    STRATA_ASSIGN_OR_RETURN(strata::DType d, strata::capi::to_dtype(dtype, "export dtype"));
    return e->export_weights(dir, d);
  });
}

// The earlier names (strata.h).
STRATA_API strata_status_t strata_engine_plan(strata_engine_t* engine, char* buf, size_t capacity, size_t* length) {
  return strata_engine_get_plan(engine, buf, capacity, length);
}
STRATA_API strata_status_t strata_engine_loss_scale(strata_engine_t* engine, double* scale) {
  return strata_engine_get_loss_scale(engine, scale);
}

}  // extern "C"
