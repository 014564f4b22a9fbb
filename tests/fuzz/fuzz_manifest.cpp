// Fuzz target: the checkpoint manifest reader. A manifest it accepts must be self-consistent (each
// param inside its chunk's shard, arrays back to back), whatever the bytes.
#include <cstddef>
#include <cstdint>
#include <string>

#include "src/engine/checkpoint_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace ckpt = strata::engine::ckpt;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto m = ckpt::Manifest::parse(text, "manifest.json");
  if (!m.is_ok()) return 0;
  for (const ckpt::ParamEntry& p : m.value().params) {
    const ckpt::ChunkEntry& c = m.value().chunks.at(p.chunk);
    if (p.offset < c.shard_begin || p.offset + p.numel > c.shard_begin + c.numel) __builtin_trap();
  }
  // What it accepted writes back and reads again to the same manifest.
  auto again = ckpt::Manifest::parse(m.value().to_json(), "manifest.json (written back)");
  if (!again.is_ok() || again.value().to_json() != m.value().to_json()) __builtin_trap();
  return 0;
}
