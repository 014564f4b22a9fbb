// The training loop over the engine.
#include "src/train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include <csignal>

#include "comm/communicator.h"
#include "kernels/cpu/casts.h"
#include "kernels/cpu/isa.h"
#include "src/common/host_memory.h"
#include "src/common/units.h"
#include "src/engine/engine_seams.h"
#include "src/engine/output_dirs.h"

namespace strata::train {
namespace {

using Clock = std::chrono::steady_clock;

// The engine as the model's ParamSource: on the CPU path fp32 gradients are rounded to the
// engine's bit16 dtype here; on the CUDA path the model hands over bit16 device gradients.
class EngineSource final : public ParamSource {
 public:
  EngineSource(engine::Engine& e, const kernels::KernelTable& k) : e_(e), k_(k) {}
  StatusOr<const void*> fetch(const std::string& name) override {
    STRATA_ASSIGN_OR_RETURN(void* p, e_.fetch(name));
    return static_cast<const void*>(p);
  }
  StatusOr<const void*> fetch_device(const std::string& name, void* stream) override {
    STRATA_ASSIGN_OR_RETURN(void* p, e_.fetch(name, stream));
    return static_cast<const void*>(p);
  }
  Status grad_device(const std::string& name, const void* g, size_t n, void* stream) override {
    return e_.grad(name, g, e_.param_dtype(), n, stream);
  }
  Status release(const std::string& name) override { return e_.release(name); }
  Status grad(const std::string& name, const float* g, size_t n) override {
    buf_.resize(n);
    kernels::cast_from_fp32(k_, g, n, e_.param_dtype(), buf_.data());
    return e_.grad(name, buf_.data(), e_.param_dtype(), n);
  }
  DType dtype() const override { return e_.param_dtype(); }

 private:
  engine::Engine& e_;
  const kernels::KernelTable& k_;
  std::vector<uint16_t> buf_;
};

std::string mb(size_t bytes) {
  char b[32];
  std::snprintf(b, sizeof(b), "%.1f MB", static_cast<double>(bytes) / 1e6);
  return b;
}

// Refuses a run whose host memory cannot be had, naming the bytes and the flags that change them.
Status check_host_memory(const TrainOptions& o, bool on_gpu) {
  const GptShape& s = o.shape;
  size_t params = 0, largest = 0;
  for (const ParamInfo& p : gpt_params(s)) {
    params += p.numel();
    largest = std::max(largest, p.numel());
  }
  const size_t init =
      4 * (params + largest);  // fp32 initial values held by the engine until prepare, + one being drawn
  const size_t model = on_gpu ? 0 : gpt_cpu_model_bytes(s, o.batch, o.seq, o.checkpointing);
  const size_t need = init > SIZE_MAX - model ? SIZE_MAX : init + model;
  const size_t have = host_memory_available();
  if (need <= have) return Status::ok();
  char shape[160];
  std::snprintf(shape, sizeof(shape), "batch %d x %d tokens, %d layers x %d channels, %d heads", o.batch, o.seq,
                s.layers, s.channels, s.heads);
  std::string parts = "initial values of " + std::to_string(params) + " params " + format_bytes(init);
  if (!on_gpu)
    parts =
        "the model's activations and working copies on the CPU " + format_bytes(model) + " (" + shape + "), " + parts;
  return Status(
      StatusCode::kOutOfMemory,
      "refused before allocating: this run needs " + format_bytes(need) + " of host memory (" + parts + ") but " +
          format_bytes(have) + " is available; " +
          (model >= init ? "lower --batch or --seq, or add --checkpointing (one block's activations at a time)"
                         : "choose a smaller model (--layers, --channels, --model)"));
}

}  // namespace

double default_lr(const GptShape& s, std::string_view optimizer) {
  const double adam = std::min(3e-3, 0.6 / s.channels);
  return optimizer == "Lion" ? adam / 10 : adam;
}

double lr_at(const TrainOptions& o, int64_t step) {
  if (step < o.warmup) return o.lr * static_cast<double>(step + 1) / o.warmup;
  const double span = std::max<double>(1.0, static_cast<double>(o.steps - o.warmup));
  const double progress = std::min(1.0, static_cast<double>(step - o.warmup) / span);
  const double min_lr = o.lr * o.min_lr_ratio;
  return min_lr + 0.5 * (o.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

StatusOr<TrainSummary> run_training(const engine::EngineConfig& cfg, const TrainOptions& o,
                                    const std::function<void(const std::string&)>& print, engine::EngineOptions eopts) {
  // Everything that can be refused is refused before any work.
  STRATA_RETURN_IF_ERROR(o.shape.validate());
  if (o.shape.vocab != 256)
    return invalid_argument("the byte-level data needs vocab 256, not " + std::to_string(o.shape.vocab));
  if (o.batch < 1 || o.seq < 1 || o.steps < 1) return invalid_argument("batch, sequence length and steps must be >= 1");
  if (o.seq > o.shape.max_seq)
    return invalid_argument("sequence length " + std::to_string(o.seq) + " exceeds the model's max_seq " +
                            std::to_string(o.shape.max_seq));
  if (o.lr <= 0 || o.warmup < 0) return invalid_argument("lr must be > 0 and warm-up >= 0");
  const bool want_gpu = cfg.device != "host" && (eopts.seams == nullptr || !eopts.seams->device_factory);
  if (want_gpu && cfg.precision != engine::Precision::kBF16)
    return invalid_argument(
        "on a GPU the GPT model computes in bf16: enable bf16 (--precision bf16), or train on the host "
        "(--device host)");
  const int world = eopts.comm != nullptr ? eopts.comm->size() : 1;
  const int rank = eopts.comm != nullptr ? eopts.comm->rank() : 0;
  if (!o.save_dir.empty() && rank == 0)
    STRATA_RETURN_IF_ERROR(engine::ckpt::check_checkpoint_root(o.save_dir).annotate("--save"));
  STRATA_ASSIGN_OR_RETURN(ByteDataset data, ByteDataset::open(o.data_path, o.val_fraction, o.seq, cfg.seed + 1));
  // On a GPU the model computes there; its activations are allocated before the engine opens the
  // device, so the engine's default budget (the free device memory) leaves them out.
  std::unique_ptr<GptModel> model;
  if (want_gpu) {
    auto m = GptModel::create(o.shape, o.batch, o.seq, o.checkpointing, Compute::kCuda);
    if (m.is_ok()) {
      model = std::move(m).value();
    } else if (cfg.device == "cuda" || m.status().code() != StatusCode::kUnsupported) {
      return m.status();  // asked for a GPU, or out of device memory: say so
    }
  }
  const bool on_gpu = model != nullptr;
  // Host memory, checked before anything large is allocated: the initial values the engine holds
  // until prepare (fp32) and, on the CPU path, the model's activations — which the engine's plan
  // then counts with its own host arrays.
  STRATA_RETURN_IF_ERROR(check_host_memory(o, on_gpu));
  if (!on_gpu) eopts.host_program_bytes = gpt_cpu_model_bytes(o.shape, o.batch, o.seq, o.checkpointing);
  STRATA_ASSIGN_OR_RETURN(const kernels::KernelTable* k, kernels::kernel_table(kernels::best_isa()));

  // Data-parallel ranks: each takes its rows of the global batch; rank 0 alone prints.
  const std::function<void(const std::string&)> say = [&print, rank](const std::string& l) {
    if (rank == 0) print(l);
  };
  if (!eopts.log) eopts.log = say;
  STRATA_ASSIGN_OR_RETURN(auto eng, engine::Engine::create(cfg, eopts));
  if ((eng->device_name().rfind("CUDA", 0) == 0) != on_gpu)
    return Status(StatusCode::kInternal, "the GPT model computes on " + std::string(on_gpu ? "the GPU" : "the CPU") +
                                             " but the engine opened " + eng->device_name());
  std::vector<float> init;
  for (const ParamInfo& p : gpt_params(o.shape)) {
    init.resize(p.numel());
    gpt_init(o.shape, p, cfg.seed, init.data());
    STRATA_RETURN_IF_ERROR(eng->register_param(p.name, p.shape, DType::kF32, init.data()));
  }
  std::vector<float>().swap(init);
  STRATA_RETURN_IF_ERROR(eng->prepare());
  if (!on_gpu) {  // after the plan accepted its memory
    STRATA_ASSIGN_OR_RETURN(model, GptModel::create(o.shape, o.batch, o.seq, o.checkpointing));
  }
  if (!o.resume_dir.empty()) STRATA_RETURN_IF_ERROR(eng->load(o.resume_dir));
  const int gas = cfg.gradient_accumulation_steps;
  int64_t step = eng->optimizer_step();
  char line[512];
  std::snprintf(
      line, sizeof(line),
      "model: %d layers, %d heads, %d channels, %.2f M params (bit16 %s); batch %d x %d tokens x %d micro-batches; "
      "data %s (%zu train / %zu validation bytes); activations %s%s",
      o.shape.layers, o.shape.heads, o.shape.channels, static_cast<double>(o.shape.num_params()) / 1e6,
      mb(o.shape.num_params() * 2).c_str(), o.batch, o.seq, gas, data.path().c_str(), data.train_bytes(),
      data.val_bytes(), mb(model->activation_bytes()).c_str(), o.checkpointing ? " (checkpointed)" : "");
  say(line);
  if (!on_gpu) {  // the CPU model's matmuls run on OpenMP threads (openmp_wait.h)
    const char* wait = std::getenv("OMP_WAIT_POLICY");
    say(std::string("CPU model: OpenMP wait policy ") + (wait != nullptr ? wait : "unset (libgomp's default: spin)"));
  }
  if (world > 1)
    say("data parallel: " + std::to_string(world) + " ranks, global batch " + std::to_string(o.batch * world));
  if (step > 0) say("resumed at step " + std::to_string(step));

  EngineSource src(*eng, *k);
  const size_t tokens = static_cast<size_t>(o.batch) * static_cast<size_t>(o.seq);
  std::vector<int32_t> in(tokens), tgt(tokens);
  auto validate = [&]() -> StatusOr<double> {
    double sum = 0;
    for (int v = 0; v < o.val_batches; ++v) {
      data.val_batch(v, o.batch, in.data(), tgt.data(), rank * o.batch, o.batch * world);
      STRATA_RETURN_IF_ERROR(eng->begin_eval());
      auto l = model->eval_loss(src, in.data(), tgt.data());
      Status ended = eng->end_eval();
      if (!l.is_ok()) return l.status();
      STRATA_RETURN_IF_ERROR(ended);
      sum += l.value();
    }
    if (world > 1)
      STRATA_RETURN_IF_ERROR(eopts.comm->all_reduce_sync(&sum, &sum, 1, comm::Elem::kF64, comm::ReduceOp::kSum));
    return sum / (o.val_batches * world);
  };

  TrainSummary sum;
  const Clock::time_point t_start = Clock::now();
  bool first = true;
  int64_t last_saved = -1;
  double last_val = NAN;
  double trained_tokens = 0, flops = 0;
  const int64_t stop = o.stop_after > 0 ? std::min(o.steps, step + o.stop_after) : o.steps;
  while (step < stop) {
    const Clock::time_point t0 = Clock::now();
    const engine::EngineStats before = eng->stats();
    const double lr = lr_at(o, step);
    STRATA_RETURN_IF_ERROR(eng->set_lr(lr));  // chunks updated during backward use it
    double loss = 0;
    engine::StepResult r;
    for (int micro = 0; micro < gas; ++micro) {
      // Batches follow the engine's micro-batch count, so a skipped step consumes its batches (as in
      // DeepSpeed) and a resumed run continues with the batch it would have seen next.
      data.train_batch(eng->micro_steps(), o.batch, in.data(), tgt.data(), rank * o.batch);
      STRATA_ASSIGN_OR_RETURN(double l,
                              model->train_micro(src, in.data(), tgt.data(), static_cast<float>(eng->loss_scale())));
      loss += l / gas;
      STRATA_ASSIGN_OR_RETURN(r, eng->step(lr));
    }
    step = r.optimizer_step;
    if (!r.applied) step = eng->optimizer_step();
    if (r.overflow) ++sum.skipped;
    // A stop request (a signal) is agreed on with the loss, so that every rank stops at this step.
    const int sig = o.stop_requested ? o.stop_requested() : 0;
    double red[2] = {loss, static_cast<double>(sig)};
    if (world > 1) {  // the global batch's mean loss
      STRATA_RETURN_IF_ERROR(eopts.comm->all_reduce_sync(red, red, 2, comm::Elem::kF64, comm::ReduceOp::kSum));
      red[0] /= world;
    }
    loss = red[0];
    const bool stop_now = red[1] > 0;
    const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
    const engine::EngineStats after = eng->stats();
    const double stall = (after.stall_fetch_s - before.stall_fetch_s) + (after.stall_grad_s - before.stall_grad_s) +
                         (after.step_nvme_s - before.step_nvme_s);
    const double tps = static_cast<double>(tokens) * gas * world / secs;
    const double tflops = model->flops_per_micro() * gas * world / secs / 1e12;
    trained_tokens += static_cast<double>(tokens) * gas * world;
    flops += model->flops_per_micro() * gas * world;
    if (first) sum.first_loss = loss;
    first = false;
    sum.last_loss = loss;
    sum.losses.push_back(loss);
    sum.step_records.push_back(TrainSummary::Step{
        secs, stall, after.bytes_h2d - before.bytes_h2d, after.bytes_d2h - before.bytes_d2h,
        after.bytes_nvme_read - before.bytes_nvme_read, after.bytes_nvme_write - before.bytes_nvme_write,
        after.bytes_allreduce - before.bytes_allreduce, after.bytes_allgather - before.bytes_allgather,
        (after.allreduce_s - before.allreduce_s) + (after.allgather_s - before.allgather_s)});
    std::snprintf(
        line, sizeof(line),
        "step %4lld/%lld | loss %.4f | lr %.2e | %7.0f tok/s | %.3f TFLOPS | %6.0f ms | stall %4.1f%% | H2D %s D2H %s "
        "NVMe %s%s",
        static_cast<long long>(step), static_cast<long long>(o.steps), loss, lr, tps, tflops, secs * 1e3,
        100.0 * stall / secs, mb(after.bytes_h2d - before.bytes_h2d).c_str(),
        mb(after.bytes_d2h - before.bytes_d2h).c_str(),
        mb(after.bytes_nvme_read - before.bytes_nvme_read + after.bytes_nvme_write - before.bytes_nvme_write).c_str(),
        r.overflow ? " | overflow: step skipped" : "");
    say(line);
    const bool last = step >= stop;
    if ((o.val_every > 0 && step % o.val_every == 0) || last) {
      STRATA_ASSIGN_OR_RETURN(last_val, validate());
      std::snprintf(line, sizeof(line), "step %4lld: validation loss %.4f", static_cast<long long>(step), last_val);
      say(line);
    }
    if (!o.save_dir.empty() && ((o.save_every > 0 && step % o.save_every == 0) || last)) {
      STRATA_RETURN_IF_ERROR(eng->save(o.save_dir));
      last_saved = eng->optimizer_step();
      if (o.keep_last > 0 && rank == 0) {
        STRATA_ASSIGN_OR_RETURN(std::vector<std::string> pruned, engine::ckpt::keep_newest(o.save_dir, o.keep_last));
        for (const std::string& n : pruned)
          say("removed checkpoint " + o.save_dir + "/" + n + " (--keep-last " + std::to_string(o.keep_last) + ")");
      }
    }
    if (stop_now && !last) {
      return Status(
          StatusCode::kCancelled,
          std::string("stopped by ") +
              (sig == SIGINT    ? "SIGINT"
               : sig == SIGTERM ? "SIGTERM"
               : sig > 0        ? "a signal"
                                : "a signal to another rank") +
              " after step " + std::to_string(step) + " of " + std::to_string(o.steps) + "; " +
              (o.save_dir.empty() ? std::string("no checkpoint was saved (--save)")
               : last_saved >= 0  ? "the last checkpoint is step " + std::to_string(last_saved) + " in " + o.save_dir
                                  : "no checkpoint was saved yet") +
              "; resume with --resume and the same --steps");
    }
  }
  sum.stats = eng->stats();
  sum.steps = step;
  sum.val_loss = last_val;
  sum.seconds = std::chrono::duration<double>(Clock::now() - t_start).count();
  sum.tokens_per_s = trained_tokens / sum.seconds;
  sum.tflops = flops / sum.seconds / 1e12;
  return sum;
}

}  // namespace strata::train
