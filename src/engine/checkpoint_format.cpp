// Checkpoint and weights-export formats: manifest JSON (written and strictly parsed), chunk files
// checked against the manifest, the weights writer, directory publication.
#include "src/engine/checkpoint_format.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <nlohmann/json.hpp>

#include "src/common/fs.h"
#include "src/common/json_text.h"
#include "src/common/xxh3.h"
#include "src/engine/output_dirs.h"

namespace strata::engine::ckpt {
namespace {
using json = nlohmann::json;

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

Status bad(const std::string& where, const std::string& what) {
  return Status(StatusCode::kDataLoss, where + ": " + what);
}

// Typed access to a JSON object with errors that name the key path and the file.
class Reader {
 public:
  Reader(const json& j, std::string where, std::string path)
      : j_(j), where_(std::move(where)), path_(std::move(path)) {}
  const json* get(const std::string& k, json::value_t t, Status* err) const {
    if (!j_.is_object() || !j_.contains(k)) {
      *err = bad(where_, "missing key " + path_ + k);
      return nullptr;
    }
    const json& v = j_.at(k);
    const bool ok = t == json::value_t::number_unsigned
                        ? v.is_number_unsigned() || (v.is_number_integer() && v.get<int64_t>() >= 0)
                    : t == json::value_t::number_integer ? v.is_number_integer()
                    : t == json::value_t::number_float   ? v.is_number()
                                                         : v.type() == t;
    if (!ok) {
      *err = bad(where_, path_ + k + " has the wrong type: " + v.dump().substr(0, 80));
      return nullptr;
    }
    return &v;
  }
  Status u64(const std::string& k, uint64_t* out) const {
    Status e;
    if (const json* v = get(k, json::value_t::number_unsigned, &e)) *out = v->get<uint64_t>();
    return e;
  }
  Status i64(const std::string& k, int64_t* out) const {
    Status e;
    if (const json* v = get(k, json::value_t::number_integer, &e)) *out = v->get<int64_t>();
    return e;
  }
  Status f64(const std::string& k, double* out) const {
    Status e;
    if (const json* v = get(k, json::value_t::number_float, &e)) *out = v->get<double>();
    return e;
  }
  Status str(const std::string& k, std::string* out) const {
    Status e;
    if (const json* v = get(k, json::value_t::string, &e)) *out = v->get<std::string>();
    return e;
  }
  Status arr(const std::string& k, const json** out) const {
    Status e;
    *out = get(k, json::value_t::array, &e);
    return e;
  }
  Reader sub(const json& j, const std::string& k) const { return Reader(j, where_, path_ + k + "."); }

 private:
  const json& j_;
  std::string where_, path_;
};

StatusOr<DType> parse_dtype(const std::string& s, const std::string& where) {
  if (s == "bf16") return DType::kBF16;
  if (s == "fp16") return DType::kF16;
  if (s == "fp32") return DType::kF32;
  return bad(where, "unknown dtype \"" + s + "\"");
}

const char* dtype_key(DType d) { return d == DType::kF32 ? "fp32" : d == DType::kBF16 ? "bf16" : "fp16"; }

}  // namespace

uint64_t checksum(const void* data, size_t bytes) { return xxh3_64(data, bytes); }

std::string Manifest::to_json() const {
  json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["strata_version"] = strata_version;
  j["optimizer_step"] = optimizer_step;
  j["micro_steps"] = micro_steps;
  j["loss_scaler"] = {{"scale", scaler.scale},
                      {"iteration", scaler.iter},
                      {"last_overflow_iteration", scaler.last_overflow_iter},
                      {"hysteresis_left", scaler.hysteresis_left}};
  j["dtype"] = dtype_key(dtype);
  j["seed"] = seed;
  j["stage"] = stage;
  j["world_size"] = world_size;
  j["optimizer"] = {{"type", optimizer_type}, {"arrays", optimizer_arrays}};
  json ps = json::array();
  for (const ParamEntry& p : params)
    ps.push_back({{"name", p.name}, {"shape", p.shape}, {"chunk", p.chunk}, {"offset", p.offset}, {"numel", p.numel}});
  j["params"] = std::move(ps);
  json cs = json::array();
  for (const ChunkEntry& c : chunks) {
    json arrays = json::object();
    for (size_t a = 0; a < c.arrays.size(); ++a)
      arrays[array_name(a)] = {
          {"offset", c.arrays[a].offset}, {"bytes", c.arrays[a].bytes}, {"xxh3", hex(c.arrays[a].xxh3)}};
    cs.push_back({{"file", c.file}, {"numel", c.numel}, {"shard_begin", c.shard_begin}, {"arrays", std::move(arrays)}});
  }
  j["chunks"] = std::move(cs);
  return j.dump(1) + "\n";
}

StatusOr<Manifest> Manifest::parse(const std::string& text, const std::string& where) {
  const json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return bad(where, "not a JSON object (truncated or corrupt manifest)");
  Reader r(j, where, "");
  std::string format;
  STRATA_RETURN_IF_ERROR(r.str("format", &format));
  if (format != kFormat) return bad(where, "format \"" + format + "\", expected \"" + kFormat + "\"");
  int64_t version = 0;
  STRATA_RETURN_IF_ERROR(r.i64("version", &version));
  if (version != 1 && version != kVersion)
    return Status(StatusCode::kUnsupported, where + ": checkpoint format version " + std::to_string(version) +
                                                ", this strata reads versions 1 and " + std::to_string(kVersion));
  Manifest m;
  m.version = static_cast<int>(version);
  if (version == 1) {
    m.optimizer_type.clear();  // Adam or AdamW: version 1 did not say
  } else {
    Status oe;
    const json* oj = r.get("optimizer", json::value_t::object, &oe);
    STRATA_RETURN_IF_ERROR(oe);
    Reader o = r.sub(*oj, "optimizer");
    STRATA_RETURN_IF_ERROR(o.str("type", &m.optimizer_type));
    const json* names = nullptr;
    STRATA_RETURN_IF_ERROR(o.arr("arrays", &names));
    m.optimizer_arrays.clear();
    for (const json& n : *names) {
      if (!n.is_string() || n.get<std::string>().empty() || n.get<std::string>() == kParams16)
        return bad(where, "optimizer.arrays holds " + n.dump().substr(0, 40) + ", not an array name");
      for (const std::string& seen : m.optimizer_arrays)
        if (seen == n.get<std::string>()) return bad(where, "optimizer.arrays names \"" + seen + "\" twice");
      m.optimizer_arrays.push_back(n.get<std::string>());
    }
    if (m.optimizer_arrays.empty() || m.optimizer_arrays[0] != "master" ||
        m.optimizer_arrays.size() > kMaxOptimizerArrays)
      return bad(where, "optimizer.arrays must start with \"master\" and hold at most " +
                            std::to_string(kMaxOptimizerArrays) + " names, got " + names->dump().substr(0, 80));
  }
  STRATA_RETURN_IF_ERROR(r.str("strata_version", &m.strata_version));
  STRATA_RETURN_IF_ERROR(r.i64("optimizer_step", &m.optimizer_step));
  STRATA_RETURN_IF_ERROR(r.i64("micro_steps", &m.micro_steps));
  Status e;
  const json* ls = r.get("loss_scaler", json::value_t::object, &e);
  STRATA_RETURN_IF_ERROR(e);
  Reader lr = r.sub(*ls, "loss_scaler");
  int64_t hyst = 0;
  STRATA_RETURN_IF_ERROR(lr.f64("scale", &m.scaler.scale));
  STRATA_RETURN_IF_ERROR(lr.i64("iteration", &m.scaler.iter));
  STRATA_RETURN_IF_ERROR(lr.i64("last_overflow_iteration", &m.scaler.last_overflow_iter));
  STRATA_RETURN_IF_ERROR(lr.i64("hysteresis_left", &hyst));
  m.scaler.hysteresis_left = static_cast<int>(hyst);
  std::string dt;
  STRATA_RETURN_IF_ERROR(r.str("dtype", &dt));
  STRATA_ASSIGN_OR_RETURN(m.dtype, parse_dtype(dt, where));
  if (m.dtype == DType::kF32) return bad(where, "dtype must be bf16 or fp16");
  STRATA_RETURN_IF_ERROR(r.u64("seed", &m.seed));
  int64_t stage = 0, world = 0;
  STRATA_RETURN_IF_ERROR(r.i64("stage", &stage));
  STRATA_RETURN_IF_ERROR(r.i64("world_size", &world));
  m.stage = static_cast<int>(stage);
  m.world_size = static_cast<int>(world);
  const json* cs = nullptr;
  STRATA_RETURN_IF_ERROR(r.arr("chunks", &cs));
  for (size_t i = 0; i < cs->size(); ++i) {
    Reader c = r.sub((*cs)[i], "chunks[" + std::to_string(i) + "]");
    ChunkEntry ce;
    STRATA_RETURN_IF_ERROR(c.str("file", &ce.file));
    if (ce.file.empty() || ce.file.find('/') != std::string::npos || ce.file[0] == '.')
      return bad(where, "chunks[" + std::to_string(i) + "].file \"" + ce.file + "\" is not a plain file name");
    STRATA_RETURN_IF_ERROR(c.u64("numel", &ce.numel));
    STRATA_RETURN_IF_ERROR(c.u64("shard_begin", &ce.shard_begin));
    const json* arrays = c.get("arrays", json::value_t::object, &e);
    STRATA_RETURN_IF_ERROR(e);
    uint64_t expect_offset = 0;
    ce.arrays.resize(m.num_arrays());
    for (size_t a = 0; a < m.num_arrays(); ++a) {
      const std::string name = m.array_name(a);
      const json* aj = c.sub(*arrays, "arrays").get(name, json::value_t::object, &e);
      STRATA_RETURN_IF_ERROR(e);
      Reader ar = c.sub(*aj, "arrays." + name);
      ArrayEntry& ae = ce.arrays[a];
      std::string h;
      STRATA_RETURN_IF_ERROR(ar.u64("offset", &ae.offset));
      STRATA_RETURN_IF_ERROR(ar.u64("bytes", &ae.bytes));
      STRATA_RETURN_IF_ERROR(ar.str("xxh3", &h));
      char* end = nullptr;
      ae.xxh3 = std::strtoull(h.c_str(), &end, 16);
      if (h.size() != 16 || end != h.c_str() + 16)
        return bad(where, "chunks[" + std::to_string(i) + "] checksum \"" + h + "\" is not 16 hex digits");
      const uint64_t want = ce.numel * m.element_bytes(a);
      if (ae.offset != expect_offset || ae.bytes != want)
        return bad(where, "chunks[" + std::to_string(i) + "]." + name + " is at " + std::to_string(ae.offset) + "+" +
                              std::to_string(ae.bytes) + ", expected " + std::to_string(expect_offset) + "+" +
                              std::to_string(want));
      expect_offset += ae.bytes;
    }
    m.chunks.push_back(std::move(ce));
  }
  const json* ps = nullptr;
  STRATA_RETURN_IF_ERROR(r.arr("params", &ps));
  for (size_t i = 0; i < ps->size(); ++i) {
    Reader p = r.sub((*ps)[i], "params[" + std::to_string(i) + "]");
    ParamEntry pe;
    STRATA_RETURN_IF_ERROR(p.str("name", &pe.name));
    const json* shape = nullptr;
    STRATA_RETURN_IF_ERROR(p.arr("shape", &shape));
    uint64_t n = 1;
    for (const json& d : *shape) {
      if (!d.is_number_integer() || d.get<int64_t>() < 1)
        return bad(where, "param '" + pe.name + "' has a bad shape " + shape->dump());
      pe.shape.push_back(d.get<int64_t>());
      n *= static_cast<uint64_t>(d.get<int64_t>());
    }
    uint64_t chunk = 0;
    STRATA_RETURN_IF_ERROR(p.u64("chunk", &chunk));
    STRATA_RETURN_IF_ERROR(p.u64("offset", &pe.offset));
    STRATA_RETURN_IF_ERROR(p.u64("numel", &pe.numel));
    if (pe.numel != n)
      return bad(where, "param '" + pe.name + "': numel " + std::to_string(pe.numel) + " does not match its shape");
    if (chunk >= m.chunks.size())
      return bad(where, "param '" + pe.name + "' is in chunk " + std::to_string(chunk) + " of " +
                            std::to_string(m.chunks.size()));
    pe.chunk = static_cast<uint32_t>(chunk);
    const ChunkEntry& ce = m.chunks[chunk];
    if (pe.offset < ce.shard_begin || pe.offset + pe.numel > ce.shard_begin + ce.numel)
      return bad(where, "param '" + pe.name + "' lies outside chunk " + std::to_string(chunk) + "'s shard");
    m.params.push_back(std::move(pe));
  }
  return m;
}

StatusOr<std::string> resolve(const std::string& dir, const std::string& tag) {
  if (!tag.empty()) {
    const std::string d = dir + "/" + tag;
    if (!fs::exists(d + "/manifest.json"))
      return not_found("checkpoint '" + d + "' does not exist (no manifest.json there)");
    return d;
  }
  if (fs::exists(dir + "/manifest.json")) return dir;
  auto latest = fs::read_file(dir + "/latest");
  if (!latest.is_ok())
    return not_found("no checkpoint in '" + dir + "': neither manifest.json nor a 'latest' file is there");
  std::string t = latest.value();
  while (!t.empty() && (t.back() == '\n' || t.back() == ' ')) t.pop_back();
  if (t.empty() || t.size() > 255 || t.find('/') != std::string::npos || t.find('\n') != std::string::npos)
    return bad(dir + "/latest", "does not name a checkpoint (it holds \"" + printable(t, 60) + "\")");
  const std::string d = dir + "/" + t;
  if (!fs::exists(d + "/manifest.json"))
    return bad(dir + "/latest", "names '" + printable(t) + "', which has no manifest.json");
  return d;
}

StatusOr<Manifest> read_manifest(const std::string& ckpt_dir) {
  const std::string path = ckpt_dir + "/manifest.json";
  STRATA_ASSIGN_OR_RETURN(std::string text, fs::read_file(path));
  return Manifest::parse(text, path);
}

StatusOr<std::vector<uint8_t>> read_chunk(const std::string& ckpt_dir, const Manifest& m, size_t i) {
  const ChunkEntry& c = m.chunks[i];
  const std::string path = ckpt_dir + "/" + c.file;
  STRATA_ASSIGN_OR_RETURN(std::string raw, fs::read_file(path));
  if (raw.size() != c.file_bytes()) {
    const bool shorter = raw.size() < c.file_bytes();
    return Status(StatusCode::kDataLoss,
                  path + " is " + std::to_string(raw.size()) + " bytes, the manifest says " +
                      std::to_string(c.file_bytes()) + " (" +
                      std::to_string(shorter ? c.file_bytes() - raw.size() : raw.size() - c.file_bytes()) + " bytes " +
                      (shorter ? "short: truncated" : "too many") + ")");
  }
  for (size_t a = 0; a < c.arrays.size(); ++a) {
    const ArrayEntry& ae = c.arrays[a];
    const uint64_t got = checksum(raw.data() + ae.offset, ae.bytes);
    if (got != ae.xxh3)
      return bad(path, "checksum mismatch in " + m.array_name(a) + " (manifest " + hex(ae.xxh3) + ", file " + hex(got) +
                           "): the file is corrupt");
  }
  return std::vector<uint8_t>(raw.begin(), raw.end());
}

Status verify(const std::string& ckpt_dir, const Manifest& m) {
  for (size_t i = 0; i < m.chunks.size(); ++i) {
    STRATA_ASSIGN_OR_RETURN(auto data, read_chunk(ckpt_dir, m, i));
    (void)data;
  }
  return Status::ok();
}

Status publish_dir(const std::string& tmp, const std::string& final_dir) {
  STRATA_RETURN_IF_ERROR(fs::fsync_dir(tmp));
  if (!fs::exists(final_dir)) return fs::rename_durable(tmp, final_dir);
  // Swap the finished directory with the old one in one step, then drop the old.
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) != 0)
    return Status(StatusCode::kIo, "replacing " + final_dir + " (renameat2 RENAME_EXCHANGE): " + std::strerror(errno));
  STRATA_RETURN_IF_ERROR(fs::fsync_dir(fs::parent_dir(final_dir)));
  return fs::remove_tree(tmp);
}

}  // namespace strata::engine::ckpt
