// The index a kept NvmeStore leaves beside its files (NvmeStoreOptions::keep_files), and reads back
// when it is opened again (NvmeStoreOptions::reopen): one line per tensor. The reader trusts
// nothing in the file — every field is checked and an error names the line.
//
//   # strata nvme store index 2
//   <key>\t<file name in the store's directory>\t<bytes>\t<checksum as 16 hex digits, or "none">
//
// Index 2 holds the store's segmented checksum (NvmeStore::checksum_of); index 1 (still read) the
// XXH3-64 of the whole tensor.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "src/common/status.h"

namespace strata::offload {

inline constexpr const char* kStoreIndexFile = "strata_store.index";
inline constexpr const char* kStoreIndexHeader = "# strata nvme store index 2";
inline constexpr const char* kStoreIndexHeaderV1 = "# strata nvme store index 1";

struct StoreIndexEntry {
  std::string key;   // non-empty, no tab / newline
  std::string file;  // a plain file name (no '/', not "." or ".."), unique in the index
  uint64_t bytes = 0;
  bool has_xxh3 = false;
  uint64_t xxh3 = 0;
  bool whole = false;  // read from an index 1: xxh3 is the XXH3-64 of the whole tensor
};

std::string format_store_index(const std::vector<StoreIndexEntry>& entries);
// DATA_LOSS naming `where` and the line for anything malformed: a missing header, a wrong field
// count, an empty or repeated key or file, a path in place of a file name, a size beyond 2^56.
StatusOr<std::vector<StoreIndexEntry>> parse_store_index(std::string_view text, const std::string& where);

}  // namespace strata::offload
