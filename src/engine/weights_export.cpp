// The weights export: strata's index.json + weights.bin, or safetensors (weights_export.h).
#include "src/engine/weights_export.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <set>

#include "src/common/fs.h"
#include "src/common/half.h"
#include "src/common/json_text.h"
#include "src/engine/checkpoint_format.h"
#include "src/engine/output_dirs.h"

namespace strata::engine::ckpt {
namespace {

using json = nlohmann::json;

const char* strata_dtype(DType d) { return d == DType::kF32 ? "fp32" : d == DType::kBF16 ? "bf16" : "fp16"; }
const char* safetensors_dtype(DType d) { return d == DType::kF32 ? "F32" : d == DType::kBF16 ? "BF16" : "F16"; }

std::string hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

// The export target just before publishing: still absent, empty or an export of strata's.
Status check_export_target_now(const std::string& out) {
  if (!fs::exists(out) || is_export(out)) return Status::ok();
  auto names = fs::list_dir(out);
  if (fs::is_dir(out) && names.is_ok() && names.value().empty()) return Status::ok();
  return Status(StatusCode::kAlreadyExists,
                "export to '" + out + "': files appeared there while exporting; nothing replaced");
}

// The safetensors header for `params` in `dtype`: every tensor's byte range, back to back.
std::string safetensors_header(const std::vector<WeightsParam>& params, DType dtype) {
  json h = json::object();
  uint64_t at = 0;
  for (const WeightsParam& p : params) {
    const uint64_t bytes = p.numel * dtype_size(dtype);
    h[p.name] = {{"dtype", safetensors_dtype(dtype)}, {"shape", p.shape}, {"data_offsets", {at, at + bytes}}};
    at += bytes;
  }
  h["__metadata__"] = {{"format", "pt"}, {"producer", std::string("strata ") + STRATA_VERSION_STRING}};
  std::string text = h.dump();
  while ((text.size() + 8) % 8 != 0) text += ' ';  // the data starts 8-byte aligned
  return text;
}

}  // namespace

StatusOr<WeightsFormat> parse_weights_format(const std::string& name) {
  if (name == "strata") return WeightsFormat::kStrata;
  if (name == "safetensors") return WeightsFormat::kSafetensors;
  return invalid_argument("export format '" + printable(name) + "': expected strata or safetensors");
}

StatusOr<WeightsWriter> WeightsWriter::begin(const std::string& out_dir, const ExportOptions& options,
                                             const std::vector<WeightsParam>& params) {
  const DType dtype = options.dtype;
  if (dtype != DType::kF32 && dtype != DType::kBF16 && dtype != DType::kF16)
    return invalid_argument("export: dtype must be fp32, bf16 or fp16");
  if (options.format != WeightsFormat::kStrata && options.format != WeightsFormat::kSafetensors)
    return invalid_argument("export: unknown format");
  std::set<std::string> names;
  for (const WeightsParam& p : params) {
    if (p.name.empty() || !valid_utf8(p.name) || !names.insert(p.name).second || p.name == "__metadata__")
      return invalid_argument("export: param name '" + printable(p.name) +
                              "' is empty, repeated, reserved or not UTF-8");
  }
  if (!options.config_json.empty()) {
    STRATA_ASSIGN_OR_RETURN(json cfg, parse_json(options.config_json, "export: the model config"));
    if (!cfg.is_object()) return invalid_argument("export: the model config is not a JSON object");
  }
  STRATA_RETURN_IF_ERROR(check_export_target(out_dir));
  WeightsWriter w;
  w.out_ = out_dir;
  w.tmp_ = out_dir + ".strata-tmp";
  w.options_ = options;
  w.params_ = params;
  if (::mkdir(w.tmp_.c_str(), 0755) != 0)
    return Status(StatusCode::kIo, "export: cannot create " + w.tmp_ + ": " + std::strerror(errno));
  // The marker first: a crash from here on leaves a temporary directory recognisably strata's.
  STRATA_RETURN_IF_ERROR(fs::write_file(w.tmp_ + "/" + kExportMarker, std::string("strata-weights export\n")));
  const bool st = options.format == WeightsFormat::kSafetensors;
  w.data_path_ = w.tmp_ + (st ? "/model.safetensors" : "/weights.bin");
  w.fd_ = ::open(w.data_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (w.fd_ < 0) return Status(StatusCode::kIo, "export: cannot create " + w.data_path_ + ": " + std::strerror(errno));
  if (st) {
    const std::string header = safetensors_header(params, dtype);
    uint8_t len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(static_cast<uint64_t>(header.size()) >> (8 * i));
    STRATA_RETURN_IF_ERROR(w.write_bytes(len, 8));
    STRATA_RETURN_IF_ERROR(w.write_bytes(header.data(), header.size()));
  }
  return w;
}

WeightsWriter::WeightsWriter(WeightsWriter&& o) noexcept
    : out_(std::move(o.out_)),
      tmp_(std::move(o.tmp_)),
      data_path_(std::move(o.data_path_)),
      options_(std::move(o.options_)),
      params_(std::move(o.params_)),
      next_(o.next_),
      fd_(o.fd_),
      offset_(o.offset_),
      index_(std::move(o.index_)),
      finished_(o.finished_) {
  o.fd_ = -1;
  o.finished_ = true;
}

WeightsWriter::~WeightsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_ && !tmp_.empty()) (void)fs::remove_tree(tmp_);
}

Status WeightsWriter::write_bytes(const void* data, size_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < bytes) {
    const ssize_t n = ::write(fd_, p + done, bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return Status(errno == ENOSPC ? StatusCode::kNoSpace : StatusCode::kIo,
                    "export: writing " + data_path_ + ": " + std::strerror(errno));
    done += static_cast<size_t>(n);
  }
  return Status::ok();
}

Status WeightsWriter::add(const std::string& name, const std::vector<int64_t>& shape, const float* values,
                          size_t numel) {
  if (next_ >= params_.size() || params_[next_].name != name || params_[next_].numel != numel)
    return internal_error("export: param '" + name + "' added out of the announced order");
  ++next_;
  const DType dtype = options_.dtype;
  std::vector<uint8_t> bytes;
  if (dtype == DType::kF32) {
    bytes.resize(numel * 4);
    std::memcpy(bytes.data(), values, bytes.size());
  } else {
    bytes.resize(numel * 2);
    auto* out = reinterpret_cast<uint16_t*>(bytes.data());
    for (size_t i = 0; i < numel; ++i)
      out[i] = dtype == DType::kBF16 ? float_to_bf16(values[i]) : float_to_fp16(values[i]);
  }
  if (options_.format == WeightsFormat::kSafetensors) {  // back to back, as the header says
    STRATA_RETURN_IF_ERROR(write_bytes(bytes.data(), bytes.size()));
    offset_ += bytes.size();
    return Status::ok();
  }
  const uint64_t at = (offset_ + 63) / 64 * 64;
  const std::vector<uint8_t> pad(at - offset_, 0);
  STRATA_RETURN_IF_ERROR(write_bytes(pad.data(), pad.size()));
  STRATA_RETURN_IF_ERROR(write_bytes(bytes.data(), bytes.size()));
  json p = {{"name", name}, {"shape", shape},        {"dtype", strata_dtype(dtype)},
            {"offset", at}, {"bytes", bytes.size()}, {"xxh3", hex(checksum(bytes.data(), bytes.size()))}};
  index_ += (index_.empty() ? "  " : ",\n  ") + p.dump();
  offset_ = at + bytes.size();
  return Status::ok();
}

Status WeightsWriter::finish() {
  if (next_ != params_.size())
    return internal_error("export: " + std::to_string(params_.size() - next_) + " announced params were not added");
  if (::fsync(fd_) != 0 || ::close(fd_) != 0) {
    fd_ = -1;
    return Status(StatusCode::kIo, "export: flushing " + data_path_ + ": " + std::strerror(errno));
  }
  fd_ = -1;
  if (options_.format == WeightsFormat::kStrata) {
    const std::string index = std::string("{\"format\": \"") + kWeightsFormat +
                              "\", \"version\": " + std::to_string(kWeightsVersion) +
                              ", \"byte_order\": \"little\", \"dtype\": \"" + strata_dtype(options_.dtype) +
                              "\", \"file\": \"weights.bin\", \"bytes\": " + std::to_string(offset_) +
                              ", \"params\": [\n" + index_ + "\n]}\n";
    STRATA_RETURN_IF_ERROR(fs::write_file(tmp_ + "/index.json", index));
  }
  if (!options_.config_json.empty())
    STRATA_RETURN_IF_ERROR(fs::write_file(tmp_ + "/config.json", options_.config_json));
  // Checked again at the end: the directory may have gained files while the export ran.
  STRATA_RETURN_IF_ERROR(check_export_target_now(out_));
  STRATA_RETURN_IF_ERROR(publish_dir(tmp_, out_));
  finished_ = true;
  return Status::ok();
}

Status export_checkpoint(const std::string& ckpt_dir, const std::string& out_dir, const ExportOptions& options) {
  STRATA_ASSIGN_OR_RETURN(Manifest m, read_manifest(ckpt_dir));
  std::vector<WeightsParam> params;
  for (const ParamEntry& p : m.params) params.push_back({p.name, p.shape, p.numel});
  STRATA_ASSIGN_OR_RETURN(WeightsWriter w, WeightsWriter::begin(out_dir, options, params));
  size_t loaded = SIZE_MAX;
  std::vector<uint8_t> data;
  for (const ParamEntry& p : m.params) {
    if (p.chunk != loaded) {
      STRATA_ASSIGN_OR_RETURN(data, read_chunk(ckpt_dir, m, p.chunk));
      loaded = p.chunk;
    }
    const ChunkEntry& c = m.chunks[p.chunk];
    std::vector<float> v(p.numel);
    std::memcpy(v.data(), data.data() + c.arrays[0].offset + (p.offset - c.shard_begin) * 4, p.numel * 4);
    STRATA_RETURN_IF_ERROR(w.add(p.name, p.shape, v.data(), p.numel));
  }
  return w.finish();
}

}  // namespace strata::engine::ckpt
