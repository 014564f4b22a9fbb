// How much host memory this machine has: in all (the default host budget) and available now
// (what an allocation can expect to get, from /proc/meminfo's MemAvailable).
#pragma once

#include <cstddef>

namespace strata {

size_t host_memory_total();      // physical memory, bytes (0 if unknown)
size_t host_memory_available();  // MemAvailable, bytes (host_memory_total() where the kernel has none)

}  // namespace strata
