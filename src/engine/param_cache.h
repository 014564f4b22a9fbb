// The engine's parameter part: where every chunk's bit16 params rest (device, pinned host or
// NVMe; at ZeRO stage 3 across ranks only this rank's shard), the device working buffers that hold
// chunks in use when they rest elsewhere, the pinned staging buffers between NVMe / a host
// optimizer and the device, loads on demand and ahead of need (prefetch along the recorded fetch
// order, offload::PrefetchScheduler), stage-3 gathers, and where the optimizer's updated bit16
// values go. The working buffers are allocated once, so the device budget cannot be exceeded.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "offload/prefetch_scheduler.h"
#include "src/engine/chunk_layout.h"
#include "src/engine/config.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/placement.h"
#include "src/engine/trace.h"

namespace strata::engine {

class ParamCache {
 public:
  struct Context {
    offload::Device* dev = nullptr;
    DeviceOps* ops = nullptr;
    offload::Stream* h2d = nullptr;      // loads and updated params to the device
    offload::Stream* compute = nullptr;  // checkpoint copies
    EngineStats* stats = nullptr;
    Tracer* tracer = nullptr;
    comm::Communicator* comm = nullptr;
    const ChunkLayout* layout = nullptr;
    const EngineConfig* cfg = nullptr;    // placement, prefetch limits, overlap
    offload::NvmeStore* store = nullptr;  // params on NVMe
    offload::PinMode pin = offload::PinMode::kAuto;
    bool sharded = false;         // ZeRO across ranks
    bool host_optimizer = false;  // some chunk's optimizer runs on the host (output staging)
    std::function<void(const std::string&)> log;
  };
  struct Chunk {
    size_t numel = 0, shard = 0, shard_begin = 0, rest_numel = 0;
    Tier tier = Tier::kDevice;  // where the bit16 params rest
  };

  ParamCache();
  ~ParamCache();
  Status allocate(const Context& ctx, std::vector<Chunk> chunks);
  Status free();
  // ZeRO stage 3 across ranks: only the bit16 shard rests here; every use gathers the chunk.
  bool gathers() const;

  // The chunk's initial bit16 values at rest ([rest_numel]).
  Status init(uint32_t ci, const void* bit16);
  // This rank's shard of chunk ci's bit16 params into / from host memory (engine idle).
  Status read_shard(uint32_t ci, uint16_t* dst);
  Status write_shard(uint32_t ci, const uint16_t* src);
  // Chunk ci's bit16 params resting on the device, or nullptr.
  void* resident(uint32_t ci) const;

  // The chunk of a param being fetched, on the device: its base address and the event its load
  // recorded (null when resident). `name` is for messages; `native` the caller's stream or null.
  struct Fetched {
    uint8_t* base = nullptr;
    offload::Event* ready = nullptr;
  };
  StatusOr<Fetched> fetch(uint32_t ci, const std::string& name, void* native);
  void pin(uint32_t pi);           // a fetch of param pi succeeded
  Status unpin(uint32_t pi);       // its release: the buffer may be reused (prefetch runs)
  int fetches(uint32_t pi) const;  // outstanding fetches of param pi
  Status prefetch();               // follow the recorded order ahead of the caller
  void set_eval(bool eval);        // evaluation passes record their own fetch order
  void end_pass();                 // a training micro-batch ended
  Status retire_loads();           // the step changes the params: working buffers emptied
  Status quiesce();                // staging reads and writes finished
  Status publish_shards();         // ZeRO 1 / 2: every chunk's bit16 params from the ranks' shards

  // Where the optimizer writes chunk ci's updated bit16 shard: device memory in place (device
  // optimizer), host memory in place, or a staging buffer then sent where the params rest.
  StatusOr<void*> update_out(uint32_t ci, bool device_optimizer);
  bool update_in_place(uint32_t ci, bool device_optimizer) const;  // update_out is where the params rest
  Status update_written(uint32_t ci);
  void step_done();  // staging buffers' copies of this step need no more waiting

 private:
  struct WorkBuffer;
  struct Staging;
  struct State;
  std::unique_ptr<State> s_;
};

}  // namespace strata::engine
