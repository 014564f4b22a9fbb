// C API: communicators (wraps strata::comm::Communicator) for data-parallel engines.
#include <chrono>
#include <cstring>
#include <memory>

#include "api_guard.h"
#include "comm/communicator.h"
#include "strata.h"

struct strata_comm {
  std::unique_ptr<strata::comm::Communicator> impl;
};

namespace {

strata::comm::CommOptions options(int64_t timeout_ms) {
  strata::comm::CommOptions o;
  if (timeout_ms > 0) o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

}  // namespace

using strata::Status;
using strata::capi::guard;
using strata::capi::null_arg;

extern "C" {

STRATA_API strata_status_t strata_comm_create_mpi(int64_t timeout_ms, strata_comm_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    STRATA_ASSIGN_OR_RETURN(auto c, strata::comm::create_mpi(options(timeout_ms)));
    *out = new strata_comm{std::move(c)};
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_nccl_id(unsigned char id[128]) {
  return guard(__func__, [&]() -> Status {
    if (id == nullptr) return null_arg("id");
    STRATA_ASSIGN_OR_RETURN(strata::comm::NcclId got, strata::comm::nccl_unique_id());
    std::memcpy(id, got.data(), got.size());
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_create_nccl(const unsigned char id[128], int rank, int world_size, int cuda_device,
                                                   int64_t timeout_ms, strata_comm_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    if (id == nullptr) return null_arg("id");
    strata::comm::NcclId nid;
    std::memcpy(nid.data(), id, nid.size());
    STRATA_ASSIGN_OR_RETURN(auto c, strata::comm::create_nccl(nid, rank, world_size, cuda_device, options(timeout_ms)));
    *out = new strata_comm{std::move(c)};
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_rank(const strata_comm_t* comm, int* rank, int* world_size) {
  return guard(__func__, [&]() -> Status {
    if (comm == nullptr) return null_arg("comm");
    if (rank != nullptr) *rank = comm->impl->rank();
    if (world_size != nullptr) *world_size = comm->impl->size();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_destroy(strata_comm_t* comm) {
  return guard(__func__, [&]() -> Status {
    delete comm;
    return Status::ok();
  });
}

}  // extern "C"

namespace strata::capi {
comm::Communicator* comm_of(strata_comm_t* c) { return c != nullptr ? c->impl.get() : nullptr; }
}  // namespace strata::capi
