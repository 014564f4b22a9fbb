// Engine: creation, parameter registration, prepare (layout, plan, allocation, initial values),
// accessors. Fetch / grad live in engine_params.cpp, the optimizer step in engine_step.cpp.
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
  if (impl_->tracer) {
    if (Status s = impl_->tracer->write(); !s.is_ok()) impl_->log(s.to_string());
  }
}

Status Engine::write_trace() {
  if (!impl_->tracer) return failed_precondition("write_trace: tracing is off (set strata.trace to a file path)");
  return impl_->tracer->write();
}

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
    STRATA_ASSIGN_OR_RETURN(impl->dev, offload::open_device(choice, config.device_bytes, [p](const std::string& l) { p->log(l); }));
  }
  STRATA_RETURN_IF_ERROR(impl->check_ranks());
  if (impl->opts.comm != nullptr && config.comm_timeout_s > 0)
    STRATA_RETURN_IF_ERROR(impl->opts.comm->set_timeout(
        std::chrono::milliseconds(static_cast<int64_t>(config.comm_timeout_s * 1000.0 + 0.5))).annotate("strata.comm_timeout"));
  STRATA_ASSIGN_OR_RETURN(impl->ops, make_device_ops(*impl->dev));
  STRATA_ASSIGN_OR_RETURN(impl->h2d, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->d2h, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->compute, impl->dev->create_stream());
  STRATA_ASSIGN_OR_RETURN(impl->user_ready, impl->dev->create_event());
  STRATA_ASSIGN_OR_RETURN(impl->k, kernels::kernel_table(kernels::best_isa()));
  if (!config.trace_path.empty()) {
    // Fail now, not after hours of training, if the trace cannot be written there.
    impl->tracer = std::make_unique<Tracer>(config.trace_path);
    STRATA_RETURN_IF_ERROR(impl->tracer->write());
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Status Engine::register_param(const std::string& name, const std::vector<int64_t>& shape, DType init_dtype,
                              const void* init) {
  Impl& m = *impl_;
  if (m.prepared)
    return failed_precondition("register of '" + name +
                               "' after prepare (the first fetch or step built the layout): register every param first");
  if (name.empty()) return invalid_argument("register: the param name is empty");
  if (auto it = m.pending_index.find(name); it != m.pending_index.end())
    return Status(StatusCode::kAlreadyExists, "register of '" + name + "': already registered with shape " +
                                                  shape_string(m.pending[it->second].spec.shape));
  if (shape.size() > 8) return invalid_argument("register of '" + name + "': " + std::to_string(shape.size()) + " dimensions, at most 8");
  size_t numel = 1;
  for (int64_t d : shape) {
    if (d < 1) return invalid_argument("register of '" + name + "': shape " + shape_string(shape) + " has a dimension < 1");
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
    const bool per_rank = m.world() > 1 && d.size() > rank_dir.size() && d.compare(d.size() - rank_dir.size(), rank_dir.size(), rank_dir) == 0;
    for (const std::string& level : per_rank ? std::vector<std::string>{d.substr(0, d.size() - rank_dir.size()), d}
                                             : std::vector<std::string>{d}) {
      if (fs::is_dir(level)) continue;
      // Ranks sharing the folder create it concurrently: is_dir again after exists.
      if (fs::exists(level) && !fs::is_dir(level)) return invalid_argument("nvme_path '" + level + "' is not a directory");
      const std::string parent = fs::parent_dir(level);
      if (!fs::is_dir(parent))
        return not_found("nvme_path '" + level + "': its parent '" + parent +
                         "' does not exist (strata creates only the last directory of nvme_path; is the NVMe mounted?)");
      STRATA_RETURN_IF_ERROR(fs::make_dir(level).annotate("nvme_path"));
      m.log("created nvme_path " + level);
    }
    b.nvme_bytes = std::min(b.nvme_bytes, free_bytes_under(d));
  }
  STRATA_ASSIGN_OR_RETURN(m.plan, plan_placement(*m.layout, m.cfg.placement, b));
  m.log("device: " + m.dev->name());
  const std::string per_rank = m.world() == 1 ? std::string()
                               : "; the plan of rank " + std::to_string(m.rank()) + " of " + std::to_string(m.world()) +
                                     " (ZeRO stage " + std::to_string(m.cfg.placement.stage) + ")";
  m.log(std::to_string(m.layout->params().size()) + " params, " + std::to_string(m.layout->param_numel()) +
        " elements in " + std::to_string(m.layout->chunks().size()) + " chunks" + per_rank + "\n" + m.plan.table());

  for (const std::string& d : dirs) {
    if (m.stores.count(d)) continue;
    offload::NvmeStoreOptions o;
    o.dir = d;
    o.aio = m.cfg.aio;
    o.checksum = m.cfg.nvme_checksum;
    STRATA_ASSIGN_OR_RETURN(m.stores[d], offload::NvmeStore::open(o, m.seams.io_sys));
  }
  if (m.cfg.placement.offload_optimizer == OffloadTarget::kNvme) m.opt_store = m.stores[m.cfg.optimizer_nvme_path].get();
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

Status Engine::Impl::check_ranks() {
  if (world() == 1) return Status::ok();
  const std::string who = "data-parallel training over " + std::to_string(world()) + " ranks";
  // CPU ranks: MPI with the host-emulated device (its buffers are host memory). GPU ranks: NCCL
  // on CUDA devices (MPI is not assumed CUDA-aware).
  const bool cpu_ranks = opts.comm->backend() == "mpi" && !dev->is_cuda();
  const bool gpu_ranks = opts.comm->backend() == "nccl" && dev->is_cuda();
  if (!cpu_ranks && !gpu_ranks)
    return Status(StatusCode::kUnsupported, who + ": the MPI backend trains on the host-emulated device and the NCCL "
                                                  "backend on GPUs; this engine has " + dev->name() + " and the " +
                                                  opts.comm->backend() + " backend");
  // Each rank keeps its own NVMe files.
  const std::string sub = "/rank" + std::to_string(rank());
  if (!cfg.optimizer_nvme_path.empty()) cfg.optimizer_nvme_path += sub;
  if (!cfg.param_nvme_path.empty()) cfg.param_nvme_path += sub;
  return Status::ok();
}

Status Engine::Impl::agree_on_params() {
  if (world() == 1) return Status::ok();
  // Every rank must register the same params: compare a digest of names and shapes.
  uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&](uint64_t v) { h = (h ^ v) * 0x100000001b3ull; };
  for (const Pending& p : pending) {
    for (unsigned char ch : p.spec.name) mix(ch);
    for (int64_t d : p.spec.shape) mix(static_cast<uint64_t>(d));
  }
  const int32_t mine = static_cast<int32_t>(h & 0x7fffffff);
  int32_t lo = -mine, hi = mine;
  STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(&lo, &lo, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
  STRATA_RETURN_IF_ERROR(opts.comm->all_reduce_sync(&hi, &hi, 1, comm::Elem::kI32, comm::ReduceOp::kMax));
  if (-lo != hi)
    return invalid_argument("prepare: the ranks registered different params (names or shapes differ; rank " +
                            std::to_string(rank()) + " registered " + std::to_string(pending.size()) + ")");
  // Rank 0's initial values everywhere (params strata initialises are already equal: seeded by name).
  for (Pending& p : pending) {
    double bytes = static_cast<double>(p.init.size());  // 0: strata initialises
    STRATA_RETURN_IF_ERROR(opts.comm->broadcast_sync(&bytes, 1, comm::Elem::kF64, 0));
    if (bytes == 0) continue;
    if (static_cast<double>(p.init.size()) != bytes)
      return invalid_argument("prepare: rank 0 gave '" + p.spec.name + "' " + std::to_string(static_cast<size_t>(bytes)) +
                              " bytes of initial values and rank " + std::to_string(rank()) + " " +
                              std::to_string(p.init.size()));
    STRATA_RETURN_IF_ERROR(opts.comm->broadcast_sync(p.init.data(), p.init.size() / 2, comm::Elem::kF16, 0));
  }
  return Status::ok();
}

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
  pctx.tracer = tracer.get();
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
  gc.arena = &arena;
  gc.stats = &st;
  gc.tracer = tracer.get();
  gc.comm = opts.comm;
  gc.layout = layout.get();
  gc.dtype = dtype;
  gc.pin = pin;
  gc.overlap = cfg.overlap;
  gc.buckets = pc.grad_buckets;
  gc.scratch = scratch;
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
  rc.arena = &arena;
  rc.stats = &st;
  rc.tracer = tracer.get();
  rc.store = opt_store;
  rc.scratch = scratch;
  rc.pin = pin;
  rc.overlap = cfg.overlap;
  rc.buffer_count = pc.optimizer_buffer_count;
  rc.bit16 = dtype;
  std::vector<size_t> shards;
  std::vector<Tier> tiers;
  for (const ChunkState& c : chunks) {
    shards.push_back(c.shard);
    tiers.push_back(c.at.optimizer);
  }
  return runner->allocate(rc, shards, tiers);
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

Status Engine::Impl::nvme_put(offload::NvmeStore* s, const std::string& name, const offload::AlignedBuffer& b, size_t bytes) {
  STRATA_RETURN_IF_ERROR(s->put(name, b, bytes).wait());
  st.bytes_nvme_write += bytes;
  return Status::ok();
}

Status Engine::Impl::nvme_get(offload::NvmeStore* s, const std::string& name, offload::AlignedBuffer& b, size_t bytes) {
  STRATA_RETURN_IF_ERROR(s->get(name, b, bytes).wait());
  st.bytes_nvme_read += bytes;
  return Status::ok();
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

std::string Engine::plan_table() const { return impl_->prepared ? impl_->plan.table() : std::string(); }
const Plan* Engine::plan() const { return impl_->prepared ? &impl_->plan : nullptr; }

// The public calls mark the host program's time between them on the timeline.
StatusOr<void*> Engine::fetch(const std::string& name, void* native_stream) {
  impl_->call_begin("forward / backward");
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  auto r = impl_->fetch(name, native_stream);
  impl_->call_end();
  return r;
}

Status Engine::begin_eval() {
  Impl& m = *impl_;
  if (!m.prepared) STRATA_RETURN_IF_ERROR(prepare());
  if (m.in_eval) return failed_precondition("begin_eval: an evaluation pass is already open (end_eval first)");
  for (size_t i = 0; i < m.params.size(); ++i)
    if (m.cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition("begin_eval while '" + m.layout->params()[i].name + "' is fetched: release every param first");
  m.in_eval = true;
  m.cache->set_eval(true);
  return Status::ok();
}

Status Engine::end_eval() {
  Impl& m = *impl_;
  if (!m.in_eval) return failed_precondition("end_eval without begin_eval");
  for (size_t i = 0; i < m.params.size(); ++i)
    if (m.cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition("end_eval while '" + m.layout->params()[i].name + "' is fetched: release every param first");
  m.cache->set_eval(false);
  m.in_eval = false;
  return Status::ok();
}

Status Engine::release(const std::string& name) {
  impl_->call_begin("forward / backward");
  Status s = impl_->release(name);
  impl_->call_end();
  return s;
}

Status Engine::grad(const std::string& name, const void* g, DType dtype, size_t numel, void* native_stream) {
  impl_->call_begin("backward");
  Status s = impl_->grad(name, g, dtype, numel, native_stream);
  impl_->call_end();
  return s;
}

StatusOr<StepResult> Engine::step(double lr) {
  impl_->call_begin("forward / backward");
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  auto r = impl_->step(lr);
  if (r.is_ok()) STRATA_RETURN_IF_ERROR(impl_->after_step(r.value()));
  impl_->call_end();
  return r;
}

Status Engine::synchronize() {
  if (impl_->gradients) STRATA_RETURN_IF_ERROR(impl_->gradients->drain_all());
  STRATA_RETURN_IF_ERROR(impl_->quiesce_io());
  return impl_->synchronize_streams();
}

Status Engine::read_master(const std::string& name, float* dst, size_t numel) {
  Impl& m = *impl_;
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, m.param_index(name, "read_master"));
  const ParamSlot& slot = m.layout->params()[pi];
  if (dst == nullptr) return invalid_argument("read_master of '" + name + "': dst is NULL");
  if (numel != slot.numel)
    return invalid_argument("read_master of '" + name + "': room for " + std::to_string(numel) + " elements, the param has " +
                            std::to_string(slot.numel));
  STRATA_RETURN_IF_ERROR(synchronize());
  return m.read_master_into(slot, dst);
}

// Needs the engine idle (synchronize). With shards across ranks it is collective: every rank
// calls it for the same param, and the chunk's master is gathered.
Status Engine::Impl::read_master_into(const ParamSlot& slot, float* dst) {
  ChunkState& c = chunks[slot.chunk];
  if (sharded()) {
    std::vector<float> mine(c.shard), all(c.numel);
    const ParamSlot own{slot.name, slot.shape, c.shard, slot.chunk, c.shard_begin};
    STRATA_RETURN_IF_ERROR(read_shard_master(own, mine.data()));
    STRATA_ASSIGN_OR_RETURN(auto w, opts.comm->all_gather(mine.data(), all.data(), c.shard, comm::Elem::kF32));
    STRATA_RETURN_IF_ERROR(w->wait());
    std::memcpy(dst, all.data() + slot.offset, slot.numel * 4);
    return Status::ok();
  }
  return read_shard_master(slot, dst);
}

// The master values of `slot` (which lies inside this rank's shard of its chunk).
Status Engine::Impl::read_shard_master(const ParamSlot& slot, float* dst) {
  const ChunkState& c = chunks[slot.chunk];
  return runner->read_master(slot.chunk, slot.offset - c.shard_begin, dst, slot.numel);
}

// Across ranks, save and export write from rank 0: with DDP only rank 0 runs them (every rank
// holds the same state); with ZeRO shards every rank runs them, gathering its shards. Either way
// every rank learns how that went.
static Status on_rank0(Engine::Impl& m, const char* what, const std::string& dir, const std::function<Status()>& run) {
  if (m.world() == 1) return run();
  Status s = m.rank() == 0 || m.sharded() ? run() : Status::ok();
  int32_t code = static_cast<int32_t>(s.code());
  STRATA_RETURN_IF_ERROR(m.opts.comm->broadcast_sync(&code, 1, comm::Elem::kI32, 0));
  if (m.rank() == 0 || code == 0) return s;
  return Status(static_cast<StatusCode>(code), std::string(what) + " of " + dir + " failed on rank 0 (its log says why)");
}

Status Engine::save(const std::string& dir, const std::string& tag) {
  if (!impl_->prepared) return failed_precondition("save before prepare: nothing to save yet");
  return on_rank0(*impl_, "save", dir, [&] { return impl_->save(dir, tag); });
}

Status Engine::load(const std::string& dir, const std::string& tag) {
  if (!impl_->prepared) STRATA_RETURN_IF_ERROR(prepare());
  return impl_->load(dir, tag);
}

Status Engine::export_weights(const std::string& dir, DType dtype) {
  ckpt::ExportOptions o;
  o.dtype = dtype;
  return export_weights(dir, o);
}

Status Engine::export_weights(const std::string& dir, const ckpt::ExportOptions& options) {
  if (!impl_->prepared) return failed_precondition("export before prepare: nothing to export yet");
  return on_rank0(*impl_, "export", dir, [&] { return impl_->export_weights(dir, options); });
}

StatusOr<void*> Engine::map_param(const std::string& name) {
  Impl& m = *impl_;
  if (!m.prepared) STRATA_RETURN_IF_ERROR(prepare());
  STRATA_ASSIGN_OR_RETURN(uint32_t pi, m.param_index(name, "map"));
  const ParamSlot& slot = m.layout->params()[pi];
  const ChunkState& c = m.chunks[slot.chunk];
  if (c.at.params16 != Tier::kDevice || m.gathers())
    return failed_precondition("map of '" + name + "': its bit16 values do not rest on the device (" +
                               (m.gathers() ? std::string("ZeRO stage 3 across ranks keeps a shard") : std::string("offload_param")) +
                               "); fetch it before each use instead");
  return static_cast<void*>(static_cast<uint8_t*>(m.cache->resident(slot.chunk)) + slot.offset * 2);
}

double Engine::loss_scale() const { return impl_->scaler.scale(); }
int64_t Engine::optimizer_step() const { return impl_->opt_step; }
int64_t Engine::micro_steps() const { return impl_->micro; }
DType Engine::param_dtype() const { return impl_->dtype; }
const EngineConfig& Engine::config() const { return impl_->cfg; }
std::string Engine::device_name() const { return impl_->dev->name(); }

EngineStats Engine::stats() const {
  EngineStats s = impl_->st;
  s.device_peak_bytes = impl_->dev->peak_bytes();
  s.loss_scale = impl_->scaler.scale();
  return s;
}

}  // namespace strata::engine
