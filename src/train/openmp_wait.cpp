// prefer_passive_openmp: see openmp_wait.h.
#include "src/train/openmp_wait.h"

#include <unistd.h>

#include <cstdlib>

namespace strata::train {

void prefer_passive_openmp(char** argv) {
  if (std::getenv("OMP_WAIT_POLICY") != nullptr) return;
  // The binary's own path (not /proc/self/exe, which would rename the process "exe" in ps).
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return;
  path[n] = '\0';
  if (setenv("OMP_WAIT_POLICY", "passive", 1) != 0) return;
  execv(path, argv);  // returns only on failure: go on with the policy libgomp already has
}

}  // namespace strata::train
