// ChunkLayout: how registered parameters are packed into chunks, the unit of placement, transfer
// and sharding. Parameters go in registration order; each starts at a 64-element boundary inside
// its chunk; one that does not fit in the current chunk starts the next; one larger than a chunk
// gets a chunk of its own size; every chunk shrinks to what it holds (aligned to kParamAlignElems).
// Every chunk is padded to a multiple of the world size and split
// into `world` equal shards; rank r owns shard r. Pure arithmetic, no memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "src/common/status.h"

namespace strata::engine {

inline constexpr size_t kParamAlignElems = 64;  // 128 bytes of bf16: vector and coalescing friendly

struct ParamSpec {
  std::string name;
  std::vector<int64_t> shape;  // every dimension >= 1; {} is a scalar
};

struct ParamSlot {
  std::string name;
  std::vector<int64_t> shape;
  size_t numel;    // product of shape
  uint32_t chunk;  // which chunk holds it
  size_t offset;   // first element inside the chunk (a multiple of kParamAlignElems)
};

struct ChunkInfo {
  size_t numel_used;             // elements up to the end of its last parameter
  size_t numel;                  // padded to a multiple of world: the chunk's size in elements
  size_t shard_numel;            // numel / world
  std::vector<uint32_t> params;  // indices into ChunkLayout::params(), in order
};

class ChunkLayout {
 public:
  // chunk_elems: the usual chunk size in elements (chunk_bytes / 2 for bit16 params).
  static StatusOr<ChunkLayout> build(std::span<const ParamSpec> params, size_t chunk_elems, int world, int rank);

  const std::vector<ParamSlot>& params() const { return params_; }
  const std::vector<ChunkInfo>& chunks() const { return chunks_; }
  int world() const { return world_; }
  int rank() const { return rank_; }
  // nullptr when no parameter has this name.
  const ParamSlot* find(const std::string& name) const;

  size_t param_numel() const { return param_numel_; }  // sum of parameter elements
  size_t total_numel() const { return total_numel_; }  // sum of padded chunk sizes
  // Elements of the shards rank `r` owns (the same for every rank: chunks split evenly).
  size_t owned_numel() const { return total_numel_ / static_cast<size_t>(world_); }
  // [begin, end) of chunk c owned by rank r, in elements of the chunk.
  size_t shard_begin(uint32_t c, int r) const { return chunks_[c].shard_numel * static_cast<size_t>(r); }

 private:
  std::vector<ParamSlot> params_;
  std::vector<ChunkInfo> chunks_;
  std::unordered_map<std::string, uint32_t> by_name_;
  int world_ = 1, rank_ = 0;
  size_t param_numel_ = 0, total_numel_ = 0;
};

}  // namespace strata::engine
