// C API: communicators (wraps strata::comm::Communicator) for data-parallel engines. Like engine
// handles, comm handles are checked on every call: a pointer strata never returned is refused, a
// destroyed one is refused (its tombstone stays), and a comm still used by an engine cannot be
// destroyed under it.
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_set>

#include "api_guard.h"
#include "comm/communicator.h"
#include "strata.h"

struct strata_comm {
  std::unique_ptr<strata::comm::Communicator> impl;  // null once destroyed
  int engines = 0;                                   // live engines created with it (under registry_mu)
};

namespace strata::capi {
namespace {

std::mutex& registry_mu() {
  static std::mutex mu;
  return mu;
}
std::unordered_set<const strata_comm*>& registry() {
  static auto* set = new std::unordered_set<const strata_comm*>();  // lives until exit, with its handles
  return *set;
}

// Caller holds registry_mu.
Status check_live(const strata_comm* c) {
  if (registry().count(c) == 0) return invalid_argument("comm is not a handle returned by strata_comm_create_*");
  if (!c->impl) return failed_precondition("the comm was destroyed: the handle is used after strata_comm_destroy");
  return Status::ok();
}

comm::CommOptions options(int64_t timeout_ms) {
  comm::CommOptions o;
  if (timeout_ms > 0) o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

strata_comm_t* adopt(std::unique_ptr<comm::Communicator> c) {
  auto* h = new strata_comm{std::move(c), 0};
  std::lock_guard<std::mutex> l(registry_mu());
  registry().insert(h);
  return h;
}

}  // namespace

StatusOr<comm::Communicator*> comm_acquire(strata_comm_t* c) {
  if (c == nullptr) return static_cast<comm::Communicator*>(nullptr);
  std::lock_guard<std::mutex> l(registry_mu());
  STRATA_RETURN_IF_ERROR(check_live(c).annotate("options.comm"));
  ++c->engines;
  return c->impl.get();
}

void comm_release(strata_comm_t* c) {
  if (c == nullptr) return;
  std::lock_guard<std::mutex> l(registry_mu());
  if (registry().count(c) != 0 && c->engines > 0) --c->engines;
}

}  // namespace strata::capi

using strata::Status;
using strata::capi::guard;
using strata::capi::null_arg;

extern "C" {

STRATA_API strata_status_t strata_comm_create_mpi(int64_t timeout_ms, strata_comm_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    STRATA_ASSIGN_OR_RETURN(auto c, strata::comm::create_mpi(strata::capi::options(timeout_ms)));
    *out = strata::capi::adopt(std::move(c));
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_make_nccl_id(unsigned char id[128]) {
  return guard(__func__, [&]() -> Status {
    if (id == nullptr) return null_arg("id");
    STRATA_ASSIGN_OR_RETURN(strata::comm::NcclId got, strata::comm::nccl_unique_id());
    std::memcpy(id, got.data(), got.size());
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_create_nccl(const unsigned char id[128], int rank, int world_size,
                                                   int cuda_device, int64_t timeout_ms, strata_comm_t** out) {
  return guard(__func__, [&]() -> Status {
    if (out == nullptr) return null_arg("out");
    *out = nullptr;
    if (id == nullptr) return null_arg("id");
    strata::comm::NcclId nid;
    std::memcpy(nid.data(), id, nid.size());
    STRATA_ASSIGN_OR_RETURN(
        auto c, strata::comm::create_nccl(nid, rank, world_size, cuda_device, strata::capi::options(timeout_ms)));
    *out = strata::capi::adopt(std::move(c));
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_get_rank(const strata_comm_t* comm, int* rank, int* world_size) {
  return guard(__func__, [&]() -> Status {
    if (comm == nullptr) return null_arg("comm");
    std::lock_guard<std::mutex> l(strata::capi::registry_mu());
    STRATA_RETURN_IF_ERROR(strata::capi::check_live(comm));
    if (rank != nullptr) *rank = comm->impl->rank();
    if (world_size != nullptr) *world_size = comm->impl->size();
    return Status::ok();
  });
}

STRATA_API strata_status_t strata_comm_destroy(strata_comm_t* comm) {
  return guard(__func__, [&]() -> Status {
    if (comm == nullptr) return Status::ok();
    std::unique_ptr<strata::comm::Communicator> dead;
    {
      std::lock_guard<std::mutex> l(strata::capi::registry_mu());
      STRATA_RETURN_IF_ERROR(strata::capi::check_live(comm));
      if (comm->engines > 0)
        return strata::failed_precondition(
            std::to_string(comm->engines) +
            " engine(s) created with this comm are not destroyed yet: destroy them first");
      dead = std::move(comm->impl);  // the tombstone stays registered
    }
    return Status::ok();  // `dead` closes the communicator outside the lock
  });
}

// The earlier names (strata.h).
STRATA_API strata_status_t strata_comm_nccl_id(unsigned char id[128]) { return strata_comm_make_nccl_id(id); }
STRATA_API strata_status_t strata_comm_rank(const strata_comm_t* comm, int* rank, int* world_size) {
  return strata_comm_get_rank(comm, rank, world_size);
}

}  // extern "C"
