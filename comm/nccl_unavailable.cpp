// The NCCL entry points in a build without NCCL.
#include "comm/communicator.h"

namespace strata::comm {

std::string nccl_library_version() { return "not built (configured without the CUDA toolkit's NCCL)"; }

StatusOr<NcclId> nccl_unique_id() {
  return Status(StatusCode::kUnsupported,
                "this build of strata has no NCCL (configured without the CUDA toolkit's NCCL)");
}

StatusOr<std::unique_ptr<Communicator>> create_nccl(const NcclId&, int, int, int, const CommOptions&) {
  return Status(StatusCode::kUnsupported,
                "this build of strata has no NCCL (configured without the CUDA toolkit's NCCL)");
}

}  // namespace strata::comm
