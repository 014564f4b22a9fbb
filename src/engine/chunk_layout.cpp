// Packing parameters into chunks and shards.
#include "src/engine/chunk_layout.h"

#include <limits>

namespace strata::engine {
namespace {

size_t round_up(size_t n, size_t m) { return (n + m - 1) / m * m; }

}  // namespace

StatusOr<ChunkLayout> ChunkLayout::build(std::span<const ParamSpec> params, size_t chunk_elems, int world, int rank) {
  if (world < 1) return invalid_argument("world size " + std::to_string(world) + ": must be >= 1");
  if (rank < 0 || rank >= world)
    return invalid_argument("rank " + std::to_string(rank) + ": must be in 0 .. " + std::to_string(world - 1));
  if (chunk_elems < kParamAlignElems)
    return invalid_argument("chunk size of " + std::to_string(chunk_elems) + " elements: must be at least " +
                            std::to_string(kParamAlignElems));
  ChunkLayout l;
  l.world_ = world;
  l.rank_ = rank;
  const size_t w = static_cast<size_t>(world);
  // A closed chunk shrinks to what it holds (aligned): padding would cost memory on every tier and
  // bandwidth on every transfer. Buffers that carry chunks are sized for the largest one.
  auto close_chunk = [&](bool) {
    ChunkInfo& c = l.chunks_.back();
    c.numel = round_up(round_up(c.numel_used, kParamAlignElems), w);
    c.shard_numel = c.numel / w;
    l.total_numel_ += c.numel;
  };
  for (size_t i = 0; i < params.size(); ++i) {
    const ParamSpec& p = params[i];
    if (p.name.empty()) return invalid_argument("parameter " + std::to_string(i) + " has an empty name");
    if (l.by_name_.count(p.name) != 0)
      return invalid_argument("parameter '" + p.name + "' is registered twice (names must be unique)");
    size_t numel = 1;
    for (int64_t d : p.shape) {
      if (d < 1)
        return invalid_argument("parameter '" + p.name + "': dimension " + std::to_string(d) + " must be >= 1");
      if (numel > std::numeric_limits<size_t>::max() / 2 / static_cast<size_t>(d))
        return invalid_argument("parameter '" + p.name + "': element count overflows");
      numel *= static_cast<size_t>(d);
    }
    const bool fits =
        !l.chunks_.empty() && round_up(l.chunks_.back().numel_used, kParamAlignElems) + numel <= l.chunks_.back().numel;
    if (!fits) {
      if (!l.chunks_.empty()) close_chunk(false);
      ChunkInfo c{};
      c.numel = std::max(chunk_elems, numel);  // an oversized parameter gets a chunk of its own size
      l.chunks_.push_back(c);
    }
    ChunkInfo& c = l.chunks_.back();
    const size_t offset = round_up(c.numel_used, kParamAlignElems);
    c.numel_used = offset + numel;
    c.params.push_back(static_cast<uint32_t>(l.params_.size()));
    l.by_name_[p.name] = static_cast<uint32_t>(l.params_.size());
    l.params_.push_back(ParamSlot{p.name, p.shape, numel, static_cast<uint32_t>(l.chunks_.size() - 1), offset});
    l.param_numel_ += numel;
  }
  if (!l.chunks_.empty()) close_chunk(true);
  return l;
}

const ParamSlot* ChunkLayout::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &params_[it->second];
}

}  // namespace strata::engine
