// Engine: creation, parameter registration, prepare (layout, plan, the parts allocated, initial
// values), ranks agreeing on the params. The public calls are in engine_calls.cpp.
#include "src/engine/engine.h"

#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <utility>

#include "kernels/cpu/casts.h"
#include "kernels/cpu/isa.h"
#include "src/common/fs.h"
#include "src/common/host_memory.h"
#include "src/engine/engine_impl.h"

namespace strata::engine {
namespace {

// splitmix64: the stream of strata's own initialisation.
uint64_t mix(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// N(0, 0.02^2) values for `name`, from the seed and the name only (not the registration order).
void seeded_init(uint64_t seed, const std::string& name, float* out, size_t n) {
  uint64_t state = seed ^ 0xcbf29ce484222325ull;
  for (unsigned char ch : name) state = (state ^ ch) * 0x100000001b3ull;
  for (size_t i = 0; i < n; i += 2) {
    const double u1 = (static_cast<double>(mix(state) >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(mix(state) >> 11) * 0x1.0p-53;
    const double r = std::sqrt(-2.0 * std::log(u1)) * 0.02;
    out[i] = static_cast<float>(r * std::cos(2.0 * M_PI * u2));
    if (i + 1 < n) out[i + 1] = static_cast<float>(r * std::sin(2.0 * M_PI * u2));
  }
}

size_t free_bytes_under(const std::string& dir) {
  struct statvfs s {};
  if (::statvfs(dir.c_str(), &s) != 0) return 0;
  return static_cast<size_t>(s.f_bavail) * s.f_frsize;
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

Engine::Impl::Impl(const EngineConfig& c, EngineOptions o)
    : cfg(c),
      opts(std::move(o)),
      seams(opts.seams != nullptr ? *opts.seams : EngineSeams{}),
      dtype(c.precision == Precision::kFP16 ? DType::kF16 : DType::kBF16),
      scaler(c.loss_scale, c.precision == Precision::kFP16) {}

void Engine::Impl::log(const std::string& line) const {
  if (opts.log) {
    opts.log(line);
  } else {
    std::fprintf(stderr, "strata: %s\n", line.c_str());
  }
}

StatusOr<uint32_t> Engine::Impl::param_index(const std::string& name, const char* call) const {
  if (!prepared) return failed_precondition(std::string(call) + " of '" + name + "' before prepare");
  const ParamSlot* s = find(name);
  if (s == nullptr) return not_found(std::string(call) + " of unknown param '" + name + "': it was never registered");
  return static_cast<uint32_t>(s - layout->params().data());
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  if (!impl_) return;
  (void)impl_->free_all();
  if (impl_->tracer()) {
    if (Status s = impl_->telemetry.write_trace(); !s.is_ok()) impl_->log(s.to_string());
  }
}

Status Engine::write_trace() { return impl_->telemetry.write_trace(); }

StatusOr<std::unique_ptr<Engine>> Engine::create(const EngineConfig& config, EngineOptions options) {
  auto impl = std::make_unique<Impl>(config, std::move(options));
  auto opt = optim::make(config.optimizer.type, config.optimizer.hyper);
  if (!opt.is_ok()) return invalid_argument("optimizer: " + opt.status().message());
  impl->runner = std::make_unique<OptimizerRunner>(std::move(opt).value());
  impl->cfg.placement.optimizer_state_bytes = impl->runner->optimizer().bytes_per_element();
  impl->cfg.placement.optimizer_type = std::string(impl->runner->optimizer().type());
  STRATA_ASSIGN_OR_RETURN(offload::DeviceChoice choice, offload::parse_device_choice(config.device));
  Impl* p = impl.get();
  if (impl->seams.device_factory) {
    impl->dev = impl->seams.device_factory();
    if (!impl->dev) return invalid_argument("EngineOptions::device_factory returned no device");
  } else {
    STRATA_ASSIGN_OR_RETURN(
        impl->dev, offload::open_device(choice, config.device_bytes, [p](const std::string& l) { p->log(l); }));
  }
  STRATA_RETURN_IF_ERROR(impl->check_ranks());
  if (impl->opts.comm != nullptr && config.comm_timeout_s > 0)
    STRATA_RETURN_IF_ERROR(
        impl->opts.comm
            ->set_timeout(std::chrono::milliseconds(static_cast<int64_t>(config.comm_timeout_s * 1000.0 + 0.5)))
            .annotate("strata.comm_timeout"));
  STRATA_ASSIGN_OR_RETURN(impl->ops, make_device_ops(*impl->dev));
  STRATA_ASSIGN_OR_RETURN(impl->h2d, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->d2h, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->compute, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->k, kernels::kernel_table(kernels::best_isa()));
  std::vector<int> cpus;
  if (!config.optimizer_cpus.empty()) {
    STRATA_ASSIGN_OR_RETURN(cpus, parse_cpu_list(config.optimizer_cpus, "strata.optimizer_cpus"));
  }
  const bool idle_background =
      config.background_priority == "idle" || (config.background_priority == "auto" && !impl->dev->is_cuda());
  STRATA_ASSIGN_OR_RETURN(impl->cpu, CpuThreads::create(config.optimizer_threads, std::move(cpus), idle_background));
  if (!config.trace_path.empty()) {
    // Fail now, not after hours of training, if the trace cannot be written there.
    STRATA_RETURN_IF_ERROR(impl->telemetry.open_trace(config.trace_path));
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Status Engine::register_param(const std::string& name, const std::vector<int64_t>& shape, DType init_dtype,
                              const void* init) {
  Impl& m = *impl_;
  if (m.prepared)
    return failed_precondition(
        "register of '" + name +
        "' after prepare (the first fetch or step built the layout): register every param first");
  if (name.empty()) return invalid_argument("register: the param name is empty");
  if (auto it = m.pending_index.find(name); it != m.pending_index.end())
    return Status(StatusCode::kAlreadyExists, "register of '" + name + "': already registered with shape " +
                                                  shape_string(m.pending[it->second].spec.shape));
  if (shape.size() > 8)
    return invalid_argument("register of '" + name + "': " + std::to_string(shape.size()) + " dimensions, at most 8");
  size_t numel = 1;
  for (int64_t d : shape) {
    if (d < 1)
      return invalid_argument("register of '" + name + "': shape " + shape_string(shape) + " has a dimension < 1");
    if (numel > (size_t{1} << 40) / static_cast<size_t>(d))
      return invalid_argument("register of '" + name + "': shape " + shape_string(shape) + " is too large");
    numel *= static_cast<size_t>(d);
  }
  if (init_dtype != DType::kF32 && init_dtype != DType::kBF16 && init_dtype != DType::kF16)
    return invalid_argument("register of '" + name + "': unknown init dtype");
  Impl::Pending p{ParamSpec{name, shape}, init_dtype, {}};
  if (init != nullptr) {
    const size_t bytes = numel * dtype_size(init_dtype);
    p.init.resize(bytes);
    std::memcpy(p.init.data(), init, bytes);
  }
  m.pending_index.emplace(name, static_cast<uint32_t>(m.pending.size()));
  m.pending.push_back(std::move(p));
  return Status::ok();
}

bool Engine::prepared() const { return impl_->prepared; }

Status Engine::prepare() {
  Impl& m = *impl_;
  if (m.prepared) return Status::ok();
  if (m.pending.empty()) return failed_precondition("prepare: no param was registered");
  STRATA_RETURN_IF_ERROR(m.agree_on_params());
  std::vector<ParamSpec> specs;
  for (const auto& p : m.pending) specs.push_back(p.spec);
  const bool zero_ranks = m.world() > 1 && m.cfg.placement.stage >= 1;  // ZeRO 1 / 2: shards per rank
  STRATA_ASSIGN_OR_RETURN(ChunkLayout l, ChunkLayout::build(specs, m.cfg.chunk_bytes / 2, zero_ranks ? m.world() : 1,
                                                            zero_ranks ? m.rank() : 0));
  m.layout = std::make_unique<ChunkLayout>(std::move(l));

  Budgets b;
  b.device_bytes = m.dev->budget_bytes() - m.dev->used_bytes();
  b.host_bytes = m.cfg.host_bytes ? m.cfg.host_bytes : host_memory_total();
  b.host_program = m.opts.host_program_bytes;
  std::vector<std::string> dirs;
  if (m.cfg.placement.offload_optimizer == OffloadTarget::kNvme) dirs.push_back(m.cfg.optimizer_nvme_path);
  if (m.cfg.placement.offload_param == OffloadTarget::kNvme) dirs.push_back(m.cfg.param_nvme_path);
  b.nvme_bytes = dirs.empty() ? 0 : SIZE_MAX;
  for (const auto& d : dirs) {
    // The swap folder is created like DeepSpeed's, but only its last level (and the per-rank one):
    // a missing parent is more likely an unmounted NVMe than a folder to make on the root disk.
    const std::string rank_dir = "/rank" + std::to_string(m.rank());
    const bool per_rank = m.world() > 1 && d.size() > rank_dir.size() &&
                          d.compare(d.size() - rank_dir.size(), rank_dir.size(), rank_dir) == 0;
    for (const std::string& level : per_rank ? std::vector<std::string>{d.substr(0, d.size() - rank_dir.size()), d}
                                             : std::vector<std::string>{d}) {
      if (fs::is_dir(level)) continue;
      // Ranks sharing the folder create it concurrently: is_dir again after exists.
      if (fs::exists(level) && !fs::is_dir(level))
        return invalid_argument("nvme_path '" + level + "' is not a directory");
      const std::string parent = fs::parent_dir(level);
      if (!fs::is_dir(parent))
        return not_found(
            "nvme_path '" + level + "': its parent '" + parent +
            "' does not exist (strata creates only the last directory of nvme_path; is the NVMe mounted?)");
      STRATA_RETURN_IF_ERROR(fs::make_dir(level).annotate("nvme_path"));
      m.log("created nvme_path " + level);
    }
    b.nvme_bytes = std::min(b.nvme_bytes, free_bytes_under(d));
  }
  m.cfg.placement.replicated = m.world() > 1 && !m.sharded();
  m.cfg.placement.accumulation_steps = m.cfg.gradient_accumulation_steps;
  STRATA_ASSIGN_OR_RETURN(m.plan, plan_placement(*m.layout, m.cfg.placement, b));
  m.log("device: " + m.dev->name());
  const std::string per_rank = m.world() == 1 ? std::string()
                                              : "; the plan of rank " + std::to_string(m.rank()) + " of " +
                                                    std::to_string(m.world()) + " (ZeRO stage " +
                                                    std::to_string(m.cfg.placement.stage) + ")";
  m.log(std::to_string(m.layout->params().size()) + " params, " + std::to_string(m.layout->param_numel()) +
        " elements in " + std::to_string(m.layout->chunks().size()) + " chunks" + per_rank + "\n" + m.plan.table() +
        "host threads (optimizer, gradient accumulation, norm): " + m.cpu->describe());

  for (const std::string& d : dirs) {
    if (m.stores.count(d)) continue;
    offload::NvmeStoreOptions o;
    o.dir = d;
    o.aio = m.cfg.aio;
    o.checksum = m.cfg.nvme_checksum;
    o.in_place = m.cfg.nvme_rewrite == "in_place";
    STRATA_ASSIGN_OR_RETURN(m.stores[d], offload::NvmeStore::open(o, m.seams.io_sys));
  }
  if (m.cfg.placement.offload_optimizer == OffloadTarget::kNvme)
    m.opt_store = m.stores[m.cfg.optimizer_nvme_path].get();
  if (m.cfg.placement.offload_param == OffloadTarget::kNvme) m.param_store = m.stores[m.cfg.param_nvme_path].get();

  Status s = m.allocate_all();
  if (s.is_ok()) s = m.write_initial_values();
  if (!s.is_ok()) {
    (void)m.free_all();
    m.chunks.clear();
    m.layout.reset();
    return s;
  }
  m.params.assign(m.layout->params().size(), ParamState{});
  m.pending.clear();
  m.prepared = true;
  for (int t = 0; t < kNumTiers; ++t) m.st.tier_bytes[t] = m.plan.tier_total(static_cast<Tier>(t));
  return Status::ok();
}

int Engine::Impl::world() const { return opts.comm != nullptr ? opts.comm->size() : 1; }
int Engine::Impl::rank() const { return opts.comm != nullptr ? opts.comm->rank() : 0; }

Status Engine::Impl::allocate_all() {
  const offload::PinMode pin = cfg.pin_memory ? offload::PinMode::kAuto : offload::PinMode::kNone;
  size_t max_chunk = 0, max_shard = 0;
  const auto& infos = layout->chunks();
  chunks.resize(infos.size());
  bool host_grads = false, device_opt = false;
  for (size_t i = 0; i < infos.size(); ++i) {
    ChunkState& c = chunks[i];
    c.at = plan.chunks[i];
    c.numel = infos[i].numel;
    c.shard = infos[i].shard_numel;
    c.shard_begin = layout->shard_begin(static_cast<uint32_t>(i), layout->rank());
    c.rest_numel = cfg.placement.stage == 3 ? c.shard : c.numel;
    c.params = infos[i].params;
    max_chunk = std::max(max_chunk, c.numel);
    max_shard = std::max(max_shard, c.shard);
    device_opt |= c.at.grad32 == Tier::kDevice;
    host_grads |= c.at.grad32 != Tier::kDevice;
  }
  const PlacementConfig& pc = cfg.placement;
  ParamCache::Context pctx;
  pctx.dev = dev.get();
  pctx.ops = ops.get();
  pctx.h2d = h2d.get();
  pctx.compute = compute.get();
  pctx.stats = &st;
  pctx.tracer = tracer();
  pctx.comm = opts.comm;
  pctx.layout = layout.get();
  pctx.cfg = &cfg;
  pctx.store = param_store;
  pctx.pin = pin;
  pctx.sharded = sharded();
  pctx.host_optimizer = host_grads;
  pctx.log = [this](const std::string& l) { log(l); };
  std::vector<ParamCache::Chunk> rest;
  for (const ChunkState& c : chunks) rest.push_back({c.numel, c.shard, c.shard_begin, c.rest_numel, c.at.params16});
  cache = std::make_unique<ParamCache>();
  STRATA_RETURN_IF_ERROR(cache->allocate(pctx, std::move(rest)));
  if (device_opt) {
    STRATA_ASSIGN_OR_RETURN(scratch, dev->allocate(norm_scratch_bytes(max_shard)));
  }
  GradientPath::Context gc;
  gc.dev = dev.get();
  gc.ops = ops.get();
  gc.compute = compute.get();
  gc.d2h = d2h.get();
  gc.k = k;
  gc.arena = &cpu->arena();
  gc.stats = &st;
  gc.tracer = tracer();
  gc.comm = opts.comm;
  gc.layout = layout.get();
  gc.dtype = dtype;
  gc.pin = pin;
  gc.overlap = cfg.overlap;
  gc.buckets = pc.grad_buckets;
  gc.scratch = scratch;
  gc.store = opt_store;
  gc.adopt = [this](uint32_t ci, offload::AlignedBuffer& buf, size_t n) { return runner->adopt_grads(ci, buf, n); };
  std::vector<GradientPath::Chunk> geom;
  for (const ChunkState& c : chunks) geom.push_back({c.numel, c.shard, c.shard_begin, c.at.grad32});
  const auto red = world() == 1 ? GradientPath::Reduction::kNone
                   : sharded()  ? GradientPath::Reduction::kSharded
                                : GradientPath::Reduction::kReplicated;
  gradients = std::make_unique<GradientPath>();
  STRATA_RETURN_IF_ERROR(gradients->allocate(gc, red, std::move(geom)));
  OptimizerRunner::Context rc;
  rc.dev = dev.get();
  rc.ops = ops.get();
  rc.compute = compute.get();
  rc.k = k;
  rc.arena = &cpu->arena();
  rc.background_arena = &cpu->background_arena();
  rc.background_idle = cpu->idle_background();
  rc.stats = &st;
  rc.tracer = tracer();
  rc.store = opt_store;
  rc.scratch = scratch;
  rc.pin = pin;
  rc.overlap = cfg.overlap;
  rc.buffer_count = pc.optimizer_buffer_count;
  rc.bit16 = dtype;
  rc.nvme_grads = plan.nvme_grads;
  rc.give_back_grads = [this](uint32_t ci, const offload::AlignedBuffer& buf) { return gradients->give_back(ci, buf); };
  rc.spec_slots = plan.speculation_slots;
  rc.device_spec_slots = plan.device_speculation_slots;
  std::vector<size_t> shards;
  std::vector<Tier> tiers;
  for (const ChunkState& c : chunks) {
    shards.push_back(c.shard);
    tiers.push_back(c.at.optimizer);
  }
  STRATA_RETURN_IF_ERROR(runner->allocate(rc, shards, tiers));
  if (runner->background_idle_refused())
    log("warning: the background thread runs at normal priority (the OS refused SCHED_IDLE; "
        "strata.background_priority)");
  return Status::ok();
}

Status Engine::Impl::free_all() {
  Status first = quiesce_io();
  if (Status s = synchronize_streams(); first.is_ok() && !s.is_ok()) first = std::move(s);
  auto keep = [&first](Status s) {
    if (first.is_ok() && !s.is_ok()) first = std::move(s);
  };
  if (runner) keep(runner->free());
  if (gradients) keep(gradients->free());
  if (cache) keep(cache->free());
  if (dev) keep(dev->free(std::exchange(scratch, nullptr)));
  for (auto& [dir, s] : stores) keep(s->close());
  stores.clear();
  opt_store = param_store = nullptr;
  return first;
}

Status Engine::Impl::synchronize_streams() {
  Status first;
  for (offload::Stream* s : {h2d.get(), d2h.get(), compute.get()}) {
    if (s == nullptr) continue;
    Status r = s->synchronize();
    if (first.is_ok() && !r.is_ok()) first = std::move(r);
  }
  return first;
}

// Each chunk's initial fp32 values are assembled on the host, then written to the tier of each
// array: master (m, v zero) and the bit16 copy rounded from the master.
Status Engine::Impl::write_initial_values() {
  std::vector<float> full, tmp;
  std::vector<uint8_t> bit16;
  for (size_t ci = 0; ci < chunks.size(); ++ci) {
    ChunkState& c = chunks[ci];
    full.assign(c.numel, 0.0f);
    for (uint32_t pi : c.params) {
      const ParamSlot& slot = layout->params()[pi];
      const Pending& p = pending[pending_index.at(slot.name)];
      float* dst = full.data() + slot.offset;
      if (p.init.empty()) {
        seeded_init(cfg.seed, slot.name, dst, slot.numel);
      } else {
        kernels::cast_to_fp32(*k, kernels::TensorView{p.init.data(), p.dtype, slot.numel}, 1.0f, dst);
      }
    }
    // Widening the rounded value keeps master == bit16 exactly where the caller gave bit16.
    const float* shard = full.data() + c.shard_begin;
    bit16.resize(c.rest_numel * 2);
    const float* rest = cfg.placement.stage == 3 ? shard : full.data();
    kernels::cast_from_fp32(*k, rest, c.rest_numel, dtype, bit16.data());

    STRATA_RETURN_IF_ERROR(cache->init(static_cast<uint32_t>(ci), bit16.data()));  // bit16 params at rest
    // the master from the params, the optimizer's state zero
    STRATA_RETURN_IF_ERROR(runner->init(static_cast<uint32_t>(ci), shard));
  }
  // Initialisation traffic is not training traffic.
  st.bytes_nvme_write = 0;
  return Status::ok();
}

}  // namespace strata::engine
