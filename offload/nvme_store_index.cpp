// The NvmeStore index: writing and strict parsing (nvme_store_index.h).
#include "offload/nvme_store_index.h"

#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <set>

#include "src/common/json_text.h"

namespace strata::offload {
namespace {

constexpr uint64_t kMaxBytes = uint64_t{1} << 56;

std::vector<std::string_view> split(std::string_view line, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= line.size(); ++i) {
    if (i == line.size() || line[i] == sep) {
      out.push_back(line.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace

std::string format_store_index(const std::vector<StoreIndexEntry>& entries) {
  std::string out = std::string(kStoreIndexHeader) + "\n";
  for (const StoreIndexEntry& e : entries) {
    char sum[24] = "none";
    if (e.has_xxh3) std::snprintf(sum, sizeof(sum), "%016" PRIx64, e.xxh3);
    out += e.key + "\t" + e.file + "\t" + std::to_string(e.bytes) + "\t" + sum + "\n";
  }
  return out;
}

StatusOr<std::vector<StoreIndexEntry>> parse_store_index(std::string_view text, const std::string& where) {
  std::vector<StoreIndexEntry> out;
  const std::vector<std::string_view> lines = split(text, '\n');
  const bool v1 = !lines.empty() && lines[0] == kStoreIndexHeaderV1;
  if (lines.empty() || (lines[0] != kStoreIndexHeader && !v1))
    return Status(StatusCode::kDataLoss, where + ": line 1 is not \"" + kStoreIndexHeader + "\" (\"" +
                                             printable(lines.empty() ? "" : lines[0], 60) + "\")");
  std::set<std::string, std::less<>> keys, files;
  for (size_t n = 1; n < lines.size(); ++n) {
    const std::string_view line = lines[n];
    if (line.empty() && n + 1 == lines.size()) break;  // the final newline
    auto bad = [&](const std::string& what) {
      return Status(StatusCode::kDataLoss,
                    where + ": line " + std::to_string(n + 1) + ": " + what + " (\"" + printable(line, 80) + "\")");
    };
    const std::vector<std::string_view> f = split(line, '\t');
    if (f.size() != 4) return bad("expected 4 tab-separated fields, found " + std::to_string(f.size()));
    StoreIndexEntry e;
    e.key = std::string(f[0]);
    e.file = std::string(f[1]);
    if (e.key.empty()) return bad("the key is empty");
    if (e.file.empty() || e.file == "." || e.file == ".." || e.file.find('/') != std::string::npos ||
        e.file.find('\0') != std::string::npos)
      return bad("the file is not a plain file name");
    const auto r = std::from_chars(f[2].data(), f[2].data() + f[2].size(), e.bytes);
    if (f[2].empty() || r.ec != std::errc() || r.ptr != f[2].data() + f[2].size() || e.bytes > kMaxBytes)
      return bad("the size is not a whole number of bytes up to 2^56");
    if (f[3] != "none") {
      const auto h = std::from_chars(f[3].data(), f[3].data() + f[3].size(), e.xxh3, 16);
      if (f[3].size() != 16 || h.ec != std::errc() || h.ptr != f[3].data() + 16)
        return bad("the checksum is not 16 hex digits or \"none\"");
      e.has_xxh3 = true;
      e.whole = v1;
    }
    if (!keys.insert(e.key).second) return bad("key '" + printable(e.key) + "' appears twice");
    if (!files.insert(e.file).second) return bad("file '" + printable(e.file) + "' appears twice");
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace strata::offload
