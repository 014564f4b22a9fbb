// The consolidated weights, exported for other programs, in one of two formats:
//
//   strata       <out>/index.json lists every param (name, shape, dtype, byte offset and length in
//                weights.bin, xxh3-64); <out>/weights.bin holds the values, row-major, each param at
//                a 64-byte aligned offset (version 1, docs/checkpoint.md).
//   safetensors  <out>/model.safetensors in the safetensors format (an 8-byte little-endian header
//                length, a JSON header naming each tensor's dtype, shape and byte range, then the
//                tensors back to back) — what the safetensors package and Hugging Face's
//                from_pretrained read; with a model config given, <out>/config.json beside it.
//
// Both carry the marker file .strata-export and are published atomically; an existing <out> is
// replaced only when it is empty or an earlier export (output_dirs.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "src/common/dtype.h"
#include "src/common/status.h"

namespace strata::engine::ckpt {

inline constexpr const char* kWeightsFormat = "strata-weights";
inline constexpr int kWeightsVersion = 1;

enum class WeightsFormat { kStrata, kSafetensors };
// "strata" | "safetensors"; the error names the accepted ones.
StatusOr<WeightsFormat> parse_weights_format(const std::string& name);

struct ExportOptions {
  DType dtype = DType::kF32;  // fp32 (the masters), bf16 or fp16 (rounded to nearest even)
  WeightsFormat format = WeightsFormat::kStrata;
  std::string config_json;  // written as config.json when not empty (a JSON object)
};

struct WeightsParam {
  std::string name;
  std::vector<int64_t> shape;
  size_t numel = 0;
};

// Writes an export: begin with every param in the order they will be added, add each, then
// finish() publishes <out>.
class WeightsWriter {
 public:
  static StatusOr<WeightsWriter> begin(const std::string& out_dir, const ExportOptions& options,
                                       const std::vector<WeightsParam>& params);
  Status add(const std::string& name, const std::vector<int64_t>& shape, const float* values, size_t numel);
  Status finish();
  ~WeightsWriter();
  WeightsWriter(WeightsWriter&&) noexcept;
  WeightsWriter& operator=(WeightsWriter&&) = delete;

 private:
  WeightsWriter() = default;
  Status write_bytes(const void* data, size_t bytes);
  std::string out_, tmp_, data_path_;
  ExportOptions options_;
  std::vector<WeightsParam> params_;
  size_t next_ = 0;  // params added so far
  int fd_ = -1;
  uint64_t offset_ = 0;  // bytes of tensor data written
  std::string index_;    // strata format: params so far, JSON
  bool finished_ = false;
};

// The consolidated weights of a checkpoint, without an engine.
Status export_checkpoint(const std::string& ckpt_dir, const std::string& out_dir, const ExportOptions& options);

}  // namespace strata::engine::ckpt
