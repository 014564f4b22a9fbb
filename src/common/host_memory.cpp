// Host memory sizes from sysconf and /proc/meminfo.
#include "src/common/host_memory.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>

namespace strata {

size_t host_memory_total() {
  const long pages = ::sysconf(_SC_PHYS_PAGES), page = ::sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<size_t>(pages) * static_cast<size_t>(page) : 0;
}

size_t host_memory_available() {
  FILE* f = std::fopen("/proc/meminfo", "r");
  if (f == nullptr) return host_memory_total();
  char line[256];
  size_t kib = 0;
  bool found = false;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::strncmp(line, "MemAvailable:", 13) == 0) {
      unsigned long long v = 0;
      found = std::sscanf(line + 13, "%llu", &v) == 1;
      kib = static_cast<size_t>(v);
      break;
    }
  }
  std::fclose(f);
  return found ? kib * 1024 : host_memory_total();
}

}  // namespace strata
