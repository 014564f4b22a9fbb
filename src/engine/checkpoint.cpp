// Engine: checkpoint save / load and the consolidated-weights export (formats in
// checkpoint_format.h). Save writes a new directory, fsyncs every file and publishes it by rename,
// then points <root>/latest at it. Load verifies the manifest against the registered params and
// every chunk's checksums before it changes anything, then copies param by param, so a
// checkpoint loads into any chunk size or placement.
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <unordered_map>

#include "src/common/fs.h"
#include "src/engine/checkpoint_format.h"
#include "src/engine/engine_impl.h"
#include "src/engine/output_dirs.h"
#include "src/engine/weights_export.h"

namespace strata::engine {
namespace {

Status check_tag(const std::string& tag) {
  if (tag.empty() || tag == "." || tag == ".." || tag == "latest" || tag.find('/') != std::string::npos ||
      tag.find(".tmp") != std::string::npos)
    return invalid_argument("save: tag \"" + tag +
                            "\" is not usable as a directory name (no '/', not 'latest', no '.tmp')");
  return Status::ok();
}

}  // namespace

// The save's directories: the root checked (strata's or new), temporaries of crashed saves
// removed, <root>/<tag>.tmp made; nothing strata did not write is touched.
Status Engine::Impl::prepare_save_dir(const std::string& root, const std::string& tag) {
  STRATA_RETURN_IF_ERROR(ckpt::check_checkpoint_root(root));
  STRATA_RETURN_IF_ERROR(ckpt::check_checkpoint_target(root, tag));
  STRATA_RETURN_IF_ERROR(fs::make_dir(root));
  STRATA_ASSIGN_OR_RETURN(std::vector<std::string> stale, ckpt::remove_stale_saves(root));
  for (const std::string& n : stale) log("removed " + root + "/" + n + ", left by a save that did not finish");
  const std::string tmp = root + "/" + tag + ".tmp";
  if (fs::exists(tmp))
    return Status(StatusCode::kAlreadyExists,
                  "'" + tmp + "' is in the way and is not a temporary directory of strata's");
  return fs::make_dir(tmp);
}

Status Engine::Impl::quiet_for_io(const char* call) {
  for (size_t i = 0; i < params.size(); ++i)
    if (cache->fetches(static_cast<uint32_t>(i)) > 0)
      return failed_precondition(std::string(call) + " while '" + layout->params()[i].name +
                                 "' is fetched: release every param first");
  // load replaces the gradients too: a gradient write that failed (and was reported) is not its news.
  if (std::string(call) == "load") (void)gradients->quiesce();
  STRATA_RETURN_IF_ERROR(gradients->drain_all());
  STRATA_RETURN_IF_ERROR(restore_speculated());
  // A write-back that failed before is news for save (the state it would read is not whole), not
  // for load, which replaces all of it: the reported failure's recovery must not fail on its kin.
  if (Status q = quiesce_io(); !q.is_ok() && std::string(call) != "load") return q;
  STRATA_RETURN_IF_ERROR(cache->retire_loads());
  return synchronize_streams();
}

// Chunk ci's shard into / from host memory: the optimizer's fp32 arrays and the bit16 params.
Status Engine::Impl::pull_chunk(uint32_t ci, float* const* opt, uint16_t* p16) {
  STRATA_RETURN_IF_ERROR(runner->read_arrays(ci, opt));
  return cache->read_shard(ci, p16);
}

Status Engine::Impl::push_chunk(uint32_t ci, const float* const* opt, const uint16_t* p16) {
  STRATA_RETURN_IF_ERROR(runner->write_arrays(ci, opt));
  return cache->write_shard(ci, p16);
}

void Engine::Impl::hook(const std::string& point) const {
  if (seams.checkpoint_hook) seams.checkpoint_hook(point);
}

Status Engine::Impl::save(const std::string& root, const std::string& tag_arg) {
  if (root.empty()) return invalid_argument("save: the checkpoint directory is empty");
  if (micro % cfg.gradient_accumulation_steps != 0)
    return failed_precondition(
        "save in the middle of an accumulation cycle (" + std::to_string(micro % cfg.gradient_accumulation_steps) +
        " of " + std::to_string(cfg.gradient_accumulation_steps) +
        " micro-batches done): their gradients are not saved; save after the step that ends the cycle");
  const std::string tag = tag_arg.empty() ? "step" + std::to_string(opt_step) : tag_arg;
  STRATA_RETURN_IF_ERROR(check_tag(tag));
  STRATA_RETURN_IF_ERROR(quiet_for_io("save"));
  // Shards across ranks (ZeRO 1 / 2): every rank runs this, gathering each chunk's arrays; rank 0
  // alone writes, a checkpoint of whole chunks (world size 1) that loads on any number of ranks.
  // A failed write does not leave the loop early: the other ranks' gathers must still line up.
  const bool writer = !sharded() || rank() == 0;
  const Clock::time_point t0 = Clock::now();
  const std::string final_dir = root + "/" + tag, tmp = final_dir + ".tmp";
  Status broken = Status::ok();
  auto fail = [&](Status s) {
    (void)fs::remove_tree(tmp);
    return std::move(s).annotate("save to " + final_dir + " (the previous checkpoint is untouched)");
  };
  if (writer) {
    broken = prepare_save_dir(root, tag);
    if (!broken.is_ok()) broken = std::move(broken).annotate("save to " + final_dir + " (nothing written)");
    if (!broken.is_ok() && !sharded()) return broken;
  }

  ckpt::Manifest m;
  m.optimizer_step = opt_step;
  m.micro_steps = micro;
  m.scaler = scaler.state();
  m.dtype = dtype;
  m.seed = cfg.seed;
  m.stage = cfg.placement.stage;
  m.world_size = 1;
  m.strata_version = STRATA_VERSION_STRING;
  m.optimizer_type = std::string(runner->optimizer().type());
  m.optimizer_arrays.assign(runner->optimizer().arrays().begin(), runner->optimizer().arrays().end());
  const size_t na = m.num_arrays();  // the optimizer's, then params16
  for (const ParamSlot& p : layout->params())
    m.params.push_back(ckpt::ParamEntry{p.name, p.shape, p.chunk, p.offset, p.numel});
  std::vector<uint8_t> file;
  std::vector<uint8_t> shard_file;
  for (uint32_t ci = 0; ci < chunks.size(); ++ci) {
    const ChunkState& c = chunks[ci];
    ckpt::ChunkEntry ce;
    ce.file = "chunk" + std::to_string(ci) + ".bin";
    const size_t n = sharded() ? c.numel : c.shard;  // elements written
    ce.numel = n;
    ce.shard_begin = sharded() ? 0 : c.shard_begin;
    uint64_t off = 0;
    ce.arrays.resize(na);
    for (size_t a = 0; a < na; ++a) {
      ce.arrays[a].offset = off;
      ce.arrays[a].bytes = n * m.element_bytes(a);
      off += ce.arrays[a].bytes;
    }
    file.assign(off, 0);
    // This rank's shard (the whole chunk with one rank), laid out like the file.
    std::vector<uint8_t>& mine = sharded() ? shard_file : file;
    std::vector<size_t> so(na);  // array offsets in `mine`
    for (size_t a = 0; a < na; ++a) so[a] = sharded() ? c.shard * 4 * a : ce.arrays[a].offset;
    if (sharded()) shard_file.assign(so[na - 1] + c.shard * 2, 0);
    float* opt[optim::kMaxArrays] = {};
    for (size_t a = 0; a + 1 < na; ++a) opt[a] = reinterpret_cast<float*>(mine.data() + so[a]);
    uint16_t* p16 = reinterpret_cast<uint16_t*>(mine.data() + so[na - 1]);
    if (Status s = pull_chunk(ci, opt, p16); !s.is_ok()) return sharded() ? s : fail(s);
    if (sharded()) {
      for (size_t a = 0; a < na; ++a) {
        const comm::Elem e = a + 1 == na ? comm::Elem::kBF16 : comm::Elem::kF32;
        STRATA_ASSIGN_OR_RETURN(
            auto w, opts.comm->all_gather(shard_file.data() + so[a], file.data() + ce.arrays[a].offset, c.shard, e));
        STRATA_RETURN_IF_ERROR(w->wait());
      }
    }
    if (!writer || !broken.is_ok()) continue;
    for (size_t a = 0; a < na; ++a)
      ce.arrays[a].xxh3 = ckpt::checksum(file.data() + ce.arrays[a].offset, ce.arrays[a].bytes);
    if (Status s = fs::write_file(tmp + "/" + ce.file, file.data(), file.size()); !s.is_ok()) {
      if (!sharded()) return fail(s);
      broken = s;
      continue;
    }
    st.bytes_checkpoint += file.size();
    m.chunks.push_back(ce);
    hook("chunk " + std::to_string(ci) + " written");
  }
  if (!writer) return Status::ok();
  if (!broken.is_ok()) return fail(broken);
  if (Status s = fs::write_file(tmp + "/manifest.json", m.to_json()); !s.is_ok()) return fail(s);
  hook("manifest written");
  if (Status s = ckpt::publish_dir(tmp, final_dir); !s.is_ok()) return fail(s);
  hook("published");
  STRATA_RETURN_IF_ERROR(
      fs::write_file_atomic(root + "/latest", tag + "\n").annotate("save: updating " + root + "/latest"));
  hook("latest updated");
  log("checkpoint " + final_dir + " saved (step " + std::to_string(opt_step) + ", " + std::to_string(chunks.size()) +
      " chunks) in " + std::to_string(seconds_since(t0)) + " s");
  return Status::ok();
}

Status Engine::Impl::load(const std::string& root, const std::string& tag) {
  STRATA_ASSIGN_OR_RETURN(std::string dir, ckpt::resolve(root, tag));
  STRATA_ASSIGN_OR_RETURN(ckpt::Manifest m, ckpt::read_manifest(dir));
  const std::string where = "load of " + dir + ": ";
  if (m.world_size != 1)
    return Status(StatusCode::kUnsupported,
                  where + "written by " + std::to_string(m.world_size) + " ranks; this engine has 1");
  if (m.dtype != dtype)
    return failed_precondition(where + "the params were trained in " + std::string(dtype_name(m.dtype)) +
                               ", this engine trains in " + std::string(dtype_name(dtype)) +
                               " (fp16 / bf16 in the config)");
  if (m.optimizer_arrays.size() != runner->optimizer().arrays().size() ||
      !std::equal(m.optimizer_arrays.begin(), m.optimizer_arrays.end(), runner->optimizer().arrays().begin())) {
    auto list = [](const auto& names) {
      std::string s;
      for (const auto& n : names) s += (s.empty() ? "" : ", ") + std::string(n);
      return s;
    };
    const std::string theirs = m.optimizer_type.empty() ? "Adam or AdamW (format version 1)" : m.optimizer_type;
    return failed_precondition(where + "the checkpoint holds the state of optimizer " + theirs + " (" +
                               list(m.optimizer_arrays) + "), the configured optimizer is " +
                               std::string(runner->optimizer().type()) + " (" + list(runner->optimizer().arrays()) +
                               "): set optimizer.type to match, or train without this checkpoint");
  }
  std::unordered_map<std::string, const ckpt::ParamEntry*> by_name;
  for (const ckpt::ParamEntry& p : m.params) by_name.emplace(p.name, &p);
  for (const ParamSlot& p : layout->params()) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) return not_found(where + "param '" + p.name + "' is registered but not in the checkpoint");
    if (it->second->shape != p.shape)
      return failed_precondition(where + "param '" + p.name + "' has shape " + shape_string(it->second->shape) +
                                 " in the checkpoint, " + shape_string(p.shape) + " registered");
  }
  if (m.params.size() != layout->params().size()) {
    for (const ckpt::ParamEntry& p : m.params)
      if (find(p.name) == nullptr)
        return not_found(where + "param '" + p.name + "' is in the checkpoint but not registered");
  }
  STRATA_RETURN_IF_ERROR(quiet_for_io("load"));
  // Nothing changes until every chunk file checked out.
  STRATA_RETURN_IF_ERROR(ckpt::verify(dir, m).annotate(where + "refused, the engine is unchanged"));

  std::vector<float> opt_buf[optim::kMaxArrays];
  std::vector<uint16_t> p16;
  size_t have = SIZE_MAX;
  std::vector<uint8_t> data;
  for (uint32_t ci = 0; ci < chunks.size(); ++ci) {
    const ChunkState& c = chunks[ci];
    for (int a = 0; a < runner->num_arrays(); ++a) opt_buf[a].assign(c.shard, 0.0f);
    p16.assign(c.shard, 0);
    for (uint32_t pi : c.params) {
      const ParamSlot& slot = layout->params()[pi];
      const ckpt::ParamEntry& pe = *by_name.at(slot.name);
      if (pe.chunk != have) {
        auto d = ckpt::read_chunk(dir, m, pe.chunk);
        if (!d.is_ok())
          return std::move(d).status().annotate(
              where + "the files changed after they were verified; the engine is partly loaded, load again");
        data = std::move(d).value();
        have = pe.chunk;
      }
      const ckpt::ChunkEntry& ce = m.chunks[pe.chunk];
      // The part of the param inside this rank's shard (all of it with one rank).
      const size_t lo = std::max(slot.offset, c.shard_begin),
                   hi = std::min(slot.offset + slot.numel, c.shard_begin + c.shard);
      if (lo >= hi) continue;
      const size_t src = pe.offset - ce.shard_begin + (lo - slot.offset), dst = lo - c.shard_begin, n = hi - lo;
      for (int a = 0; a < runner->num_arrays(); ++a)
        std::memcpy(opt_buf[a].data() + dst, data.data() + ce.arrays[static_cast<size_t>(a)].offset + src * 4, n * 4);
      std::memcpy(p16.data() + dst, data.data() + ce.params16().offset + src * 2, n * 2);
    }
    const float* opt[optim::kMaxArrays] = {};
    for (int a = 0; a < runner->num_arrays(); ++a) opt[a] = opt_buf[a].data();
    STRATA_RETURN_IF_ERROR(push_chunk(ci, opt, p16.data()));
  }
  STRATA_RETURN_IF_ERROR(cache->publish_shards());  // each rank pushed its shard of the bit16 params
  STRATA_RETURN_IF_ERROR(gradients->zero());
  for (ParamState& p : params) p.fetched_in_micro = p.grad_in_micro = false;
  gradients->new_micro();
  opt_step = m.optimizer_step;
  micro = m.micro_steps;
  scaler.restore(m.scaler);
  log("checkpoint " + dir + " loaded (step " + std::to_string(opt_step) + ")");
  return Status::ok();
}

// With shards across ranks every rank runs this (each param's master is gathered) and rank 0
// writes; a failed write does not leave the loop early, so the gathers still line up.
Status Engine::Impl::export_weights(const std::string& out_dir, const ckpt::ExportOptions& options) {
  STRATA_RETURN_IF_ERROR(quiet_for_io("export"));
  const bool writer = !sharded() || rank() == 0;
  std::optional<ckpt::WeightsWriter> w;
  Status broken = Status::ok();
  if (writer) {
    std::vector<ckpt::WeightsParam> order;
    for (const ParamSlot& p : layout->params()) order.push_back({p.name, p.shape, p.numel});
    auto b = ckpt::WeightsWriter::begin(out_dir, options, order);
    if (!b.is_ok() && !sharded()) return b.status();
    if (b.is_ok())
      w.emplace(std::move(b).value());
    else
      broken = b.status();
  }
  std::vector<float> v;
  for (const ParamSlot& p : layout->params()) {
    v.resize(p.numel);
    STRATA_RETURN_IF_ERROR(read_master_into(p, v.data()));
    if (!w || !broken.is_ok()) continue;
    if (Status s = w->add(p.name, p.shape, v.data(), p.numel); !s.is_ok()) {
      if (!sharded()) return s;
      broken = s;
    }
  }
  if (!broken.is_ok()) return broken;
  return w ? w->finish() : Status::ok();
}

}  // namespace strata::engine
