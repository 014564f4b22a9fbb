// The MPI entry point in a build without MPI.
#include "comm/communicator.h"

namespace strata::comm {

std::string mpi_library_version() { return "not built (install libopenmpi-dev and reconfigure)"; }

StatusOr<std::unique_ptr<Communicator>> create_mpi(const CommOptions&) {
  return Status(StatusCode::kUnsupported, "this build of strata has no MPI (install libopenmpi-dev and reconfigure)");
}

}  // namespace strata::comm
