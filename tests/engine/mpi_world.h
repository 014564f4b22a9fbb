// Shared by the engine tests that run under mpirun: the world communicator (MPI, created once per
// process) and a scratch directory every rank of one mpirun names alike.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace strata::engine::mpi_test {

inline comm::Communicator& world() {
  static std::unique_ptr<comm::Communicator> c = [] {
    auto r = comm::create_mpi();
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return std::move(r).value();
  }();
  return *c;
}

// $TMPDIR (or /tmp) / <prefix><the mpirun's PMIx namespace, or this process's id>.
inline std::string scratch_dir(const std::string& prefix) {
  const char* job = std::getenv("PMIX_NAMESPACE");  // the same on every rank of one mpirun
  const char* tmp = std::getenv("TMPDIR");
  std::string d = std::string(tmp ? tmp : "/tmp") + "/" + prefix + (job ? job : "pid" + std::to_string(::getpid()));
  for (char& ch : d)
    if (ch == '@' || ch == ',' || ch == ':') ch = '_';
  return d;
}

}  // namespace strata::engine::mpi_test
