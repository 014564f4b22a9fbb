// Fuzz target: the NVMe store's index reader. Accepted entries are plain file names with sizes in
// range, and they format back to an index that parses to the same entries.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "offload/nvme_store_index.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace o = strata::offload;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto rows = o::parse_store_index(text, "index");
  if (!rows.is_ok()) return 0;
  for (const o::StoreIndexEntry& e : rows.value())
    if (e.file.find('/') != std::string::npos || e.file == ".." || e.bytes > (uint64_t{1} << 56)) __builtin_trap();
  auto again = o::parse_store_index(o::format_store_index(rows.value()), "index (written back)");
  if (!again.is_ok() || again.value().size() != rows.value().size()) __builtin_trap();
  return 0;
}
