// The checkpoint and weights-export formats, readable without an engine (the `strata checkpoint`
// CLI uses them too).
//
// Checkpoint (version 2): <root>/<tag>/ holds
//   manifest.json  format, version, step counters, loss-scaler state, precision, seed, stage,
//                  world size; the optimizer (type and the names of its fp32 arrays, "master"
//                  first); every param (name, shape, chunk, offset in the chunk, numel); every
//                  chunk (its file, shard size, and per array by name: byte offset, length, xxh3-64)
//   chunk<i>.bin   the chunk's shard: the optimizer's fp32 arrays in manifest order, then the
//                  bit16 params ("params16"), back to back, little-endian
// Version 1 (strata 0.1) had no "optimizer" entry: its arrays were Adam's master, exp_avg,
// exp_avg_sq; it is still read.
// and <root>/latest names the newest complete tag. Every file is fsync'd and a checkpoint appears
// only by renaming its finished directory into place, so a crash leaves the previous one intact.
//
// The weights export (index.json + weights.bin, or safetensors) is in weights_export.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/common/dtype.h"
#include "src/common/status.h"
#include "src/engine/loss_scaler.h"

namespace strata::engine::ckpt {

inline constexpr const char* kFormat = "strata-checkpoint";
inline constexpr int kVersion = 2;
inline constexpr const char* kParams16 = "params16";
inline constexpr size_t kMaxOptimizerArrays = 16;

uint64_t checksum(const void* data, size_t bytes);  // xxh3-64

struct ArrayEntry {
  uint64_t offset = 0, bytes = 0, xxh3 = 0;
};
struct ChunkEntry {
  std::string file;
  uint64_t numel = 0;              // elements of the shard in the file
  uint64_t shard_begin = 0;        // the shard's first element in the chunk
  std::vector<ArrayEntry> arrays;  // the optimizer's arrays in manifest order, then params16
  const ArrayEntry& params16() const { return arrays.back(); }
  uint64_t file_bytes() const { return arrays.empty() ? 0 : arrays.back().offset + arrays.back().bytes; }
};
struct ParamEntry {
  std::string name;
  std::vector<int64_t> shape;
  uint32_t chunk = 0;
  uint64_t offset = 0;  // first element in its chunk
  uint64_t numel = 0;
};
struct Manifest {
  int version = kVersion;  // as read (1 or 2); written as kVersion
  // The optimizer whose state the file holds; version 1: "" (Adam or AdamW, not recorded).
  std::string optimizer_type = "AdamW";
  std::vector<std::string> optimizer_arrays = {"master", "exp_avg", "exp_avg_sq"};
  size_t num_arrays() const { return optimizer_arrays.size() + 1; }  // params16 last
  std::string array_name(size_t a) const { return a < optimizer_arrays.size() ? optimizer_arrays[a] : kParams16; }
  uint64_t element_bytes(size_t a) const { return a < optimizer_arrays.size() ? 4 : 2; }
  int64_t optimizer_step = 0, micro_steps = 0;
  LossScaler::State scaler{1.0, 0, -1, 1};
  DType dtype = DType::kBF16;  // the bit16 params' dtype
  uint64_t seed = 0;
  int stage = 0, world_size = 1;
  std::string strata_version;
  std::vector<ParamEntry> params;
  std::vector<ChunkEntry> chunks;

  std::string to_json() const;
  // `where` names the file in errors.
  static StatusOr<Manifest> parse(const std::string& text, const std::string& where);
};

// A checkpoint directory from `dir` and `tag`: tag empty and dir holding manifest.json -> dir;
// tag empty -> dir/<contents of dir/latest>; else dir/tag. Errors say what is missing.
StatusOr<std::string> resolve(const std::string& dir, const std::string& tag);
StatusOr<Manifest> read_manifest(const std::string& ckpt_dir);
// Chunk i's file, whole, after checking its length and every array's checksum.
StatusOr<std::vector<uint8_t>> read_chunk(const std::string& ckpt_dir, const Manifest& m, size_t i);
// Reads and checks every chunk file.
Status verify(const std::string& ckpt_dir, const Manifest& m);

// Publishes the finished directory `tmp` as `final`: renamed into place, or atomically exchanged
// with an existing `final` whose old content is then removed. Both fsync'd.
Status publish_dir(const std::string& tmp, const std::string& final_dir);

}  // namespace strata::engine::ckpt
