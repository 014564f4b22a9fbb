// A collective on buffers a device stream writes or reads: MPI (host-emulated device) waits for
// the stream first, NCCL queues it on the stream; either way it has completed when this returns.
#pragma once

#include <functional>
#include <memory>

#include "comm/communicator.h"
#include "offload/device.h"
#include "src/common/status.h"

namespace strata::engine {

inline Status device_collective(
    offload::Device& dev, offload::Stream& s,
    const std::function<StatusOr<std::unique_ptr<comm::Work>>(void* native_stream)>& issue) {
  if (!dev.is_cuda()) STRATA_RETURN_IF_ERROR(s.synchronize());
  STRATA_ASSIGN_OR_RETURN(auto w, issue(dev.is_cuda() ? s.native_handle() : nullptr));
  return w->wait();
}

}  // namespace strata::engine
