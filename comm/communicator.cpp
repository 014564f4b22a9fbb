// The backend-independent parts of comm/communicator.h: element types and the blocking forms.
#include "comm/communicator.h"

#include <cstdlib>

namespace strata::comm {

Elem elem_of(DType d) {
  switch (d) {
    case DType::kBF16:
      return Elem::kBF16;
    case DType::kF16:
      return Elem::kF16;
    case DType::kF32:
    default:
      return Elem::kF32;
  }
}

size_t elem_size(Elem e) {
  switch (e) {
    case Elem::kF32:
    case Elem::kI32:
      return 4;
    case Elem::kBF16:
    case Elem::kF16:
      return 2;
    case Elem::kF64:
      return 8;
  }
  return 0;
}

const char* elem_name(Elem e) {
  switch (e) {
    case Elem::kF32:
      return "fp32";
    case Elem::kBF16:
      return "bf16";
    case Elem::kF16:
      return "fp16";
    case Elem::kF64:
      return "fp64";
    case Elem::kI32:
      return "int32";
  }
  return "invalid";
}

Status Communicator::all_reduce_sync(const void* send, void* recv, size_t count, Elem e, ReduceOp op, void* stream) {
  STRATA_ASSIGN_OR_RETURN(auto w, all_reduce(send, recv, count, e, op, stream));
  return w->wait();
}

Status Communicator::all_gather_sync(const void* send, void* recv, size_t count, Elem e, void* stream) {
  STRATA_ASSIGN_OR_RETURN(auto w, all_gather(send, recv, count, e, stream));
  return w->wait();
}

Status Communicator::broadcast_sync(void* buf, size_t count, Elem e, int root, void* stream) {
  STRATA_ASSIGN_OR_RETURN(auto w, broadcast(buf, count, e, root, stream));
  return w->wait();
}

bool launched_with_several_ranks() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"}) {
    const char* v = std::getenv(var);
    if (v != nullptr && std::atoi(v) > 1) return true;
  }
  return false;
}

}  // namespace strata::comm
