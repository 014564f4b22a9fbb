// Runs a shell command for a test and returns what it printed (stdout and stderr together) and
// its exit status (-1 if it did not exit normally). Used by the tests of the `strata` command.
#pragma once

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace strata::testing {

inline std::string run_command(const std::string& cmd, int* rc) {
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  std::string out;
  char b[4096];
  while (p != nullptr && std::fgets(b, sizeof(b), p) != nullptr) out += b;
  const int st = p != nullptr ? ::pclose(p) : -1;
  *rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return out;
}

}  // namespace strata::testing
