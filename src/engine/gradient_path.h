// The engine's gradient part: device bit16 buckets that take each param's gradient as the host
// program hands it over (engine.grad), flushed when their chunk's gradients of the micro-batch are
// complete (or a bucket is needed) — copied to a pinned landing buffer and accumulated into the
// chunk's fp32 host shard, or accumulated on the device — and the fp32 gradient of every chunk's
// shard, which it owns. How gradients are summed across ranks is a Reduction chosen once at
// allocate: none (one rank), replicated (DDP: each chunk's fp32 gradient all-reduced, started in
// backward once the chunk is complete) or sharded (ZeRO 1-3: each bucket's span all-reduced as it
// drains, this rank keeping its shard; the norm summed over the ranks). A chunk whose gradient
// rests on NVMe (Tier::kNvme, nvme_grads.cpp) has no host array: its gradient is assembled in one
// of a few pinned buffers and written to the store once complete, its norm's partial sums and
// first non-finite element taken on the way; the optimizer reads it back for the step (read).
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "comm/communicator.h"
#include "kernels/cpu/kernel_types.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "src/engine/chunk_layout.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/placement.h"
#include "src/engine/trace.h"

namespace strata::engine {

class GradientPath {
 public:
  enum class Reduction { kNone, kReplicated, kSharded };
  struct Context {
    offload::Device* dev = nullptr;
    DeviceOps* ops = nullptr;
    offload::Stream* compute = nullptr;  // gradient copies into buckets, device accumulation
    offload::Stream* d2h = nullptr;      // bucket flushes to the host
    const kernels::KernelTable* k = nullptr;
    tbb::task_arena* arena = nullptr;
    EngineStats* stats = nullptr;
    Tracer* tracer = nullptr;
    comm::Communicator* comm = nullptr;  // null with one rank
    const ChunkLayout* layout = nullptr;
    DType dtype = DType::kBF16;
    offload::PinMode pin = offload::PinMode::kAuto;
    bool overlap = true;  // DDP: all-reduces started in backward
    int buckets = 2;
    void* scratch = nullptr;              // device scratch of the norm
    offload::NvmeStore* store = nullptr;  // gradients of Tier::kNvme chunks
    // A Tier::kNvme chunk's complete gradient (its first n floats of `buf`, an assembly buffer)
    // offered to the optimizer before it is written: true when it took it (the chunk's state is
    // read ahead into a step slot, the gradient joins it there: the slot's gradient buffer and
    // `buf` trade places, nothing is copied) and no NVMe copy is needed; give_back returns it if
    // the slot is dropped before the step.
    std::function<bool(uint32_t ci, offload::AlignedBuffer& buf, size_t n)> adopt;
  };
  struct Chunk {  // one chunk's geometry, from the layout and the plan
    size_t numel = 0, shard = 0, shard_begin = 0;
    Tier tier = Tier::kHost;  // where its fp32 gradient shard lives
  };
  struct Norm {
    double sumsq = 0;
    bool finite = true;
  };

  GradientPath() = default;
  ~GradientPath() { (void)free(); }
  Status allocate(const Context& ctx, Reduction r, std::vector<Chunk> chunks);
  Status free();

  // Param pi's gradient (bit16, on the device — host memory on the emulated device) copied into its
  // chunk's bucket; the caller's stream `native` (or null) is ordered before the copy and after
  // it. `boundary`: this micro-batch ends an accumulation cycle.
  Status add(uint32_t pi, const void* g, void* native, bool boundary);
  void new_micro();  // per-micro-batch counts reset (engine.step)
  // Lands what has finished (one rank: finished flushes; replicated: landed chunks start their
  // all-reduce, finished all-reduces complete); sharded drains stay in lockstep. `wait`: lands every
  // flush and all-reduce in flight now (the host-emulated device, where the copies are the host's
  // own memcpy: chunks become final at a point that does not depend on timing).
  Status poll(bool wait);
  // Chunks whose fp32 gradient of the cycle became final in the micro-batch that ends it (every
  // gradient handed over, landed and, across ranks, summed), since the last call; in that order.
  std::vector<uint32_t> take_final();
  Status flush_open();  // a micro-batch inside a cycle ended: open buckets start their way off
  Status drain_all();   // every bucket landed in its fp32 shard
  Status reduce_all();  // drain_all, then replicated gradients summed over the ranks (the step)
  StatusOr<Norm> norm();
  Status zero();
  const void* grads(uint32_t ci) const;  // the fp32 shard of chunk ci (device or host; nullptr on NVMe)
  // An NVMe-resident gradient of the cycle (complete: reduce_all ran) into buf, asynchronously.
  StatusOr<offload::IoHandle> read(uint32_t ci, offload::AlignedBuffer& buf);
  // An adopted gradient handed back (its slot was dropped before the step): written to NVMe now.
  Status give_back(uint32_t ci, const offload::AlignedBuffer& buf);
  Status quiesce();  // NVMe gradient writes finished
  // Where the first inf / NaN gradient is, in registration order: "in 'w' (element 3 of [4, 4])".
  StatusOr<std::string> first_nonfinite();
  double ranks_in_sum() const;  // replicated or sharded: the world size; else 1

 private:
  struct Bucket {
    enum class State { kFree, kOpen, kInFlight } state = State::kFree;
    void* dev = nullptr;
    offload::AlignedBuffer landing;  // pinned host landing buffer (host-side gradients only)
    int chunk = -1;
    std::vector<uint32_t> params;  // params whose gradient is in the bucket
    uint64_t opened = 0;
    std::unique_ptr<offload::Event> done;  // the flush finished
  };
  struct ChunkGrads {
    Chunk geom;
    void* dev = nullptr;          // fp32 shard on the device
    offload::AlignedBuffer host;  // or on the host
    int bucket = -1;              // open bucket of this micro-batch, -1 if none
    size_t in_micro = 0;          // its params' gradients handed over this micro-batch
    bool reduce_started = false;  // replicated: its all-reduce of this cycle was started
    // NVMe-resident gradient (geom.tier == kNvme):
    int assembly = -1;                     // the pinned buffer it is being assembled in, -1 if none
    bool spilled = false;                  // a partial sum was written out to free its buffer (read back to go on)
    bool written = false;                  // this cycle's gradient is complete and written (zero() resets)
    bool adopted = false;                  //   into a step slot (Context::adopt), not to NVMe
    std::vector<double> partials;          // its norm's partial sums (kernels::sumsq_partials), when written
    int64_t bad_param = -1, bad_elem = 0;  // its first inf / NaN element, when written
  };
  // A pinned fp32 buffer NVMe-resident gradients are assembled in, then written from.
  struct Assembly {
    offload::AlignedBuffer buf;
    int chunk = -1;           // the chunk assembled here (also while its write is in flight)
    offload::IoHandle write;  // the chunk's write, valid until reaped
  };
  bool sharded() const { return red_ == Reduction::kSharded; }
  bool replicated() const { return red_ == Reduction::kReplicated; }
  StatusOr<int> acquire(uint32_t ci);
  std::pair<size_t, size_t> span(const Bucket& bk) const;
  Status flush(int b);
  Status drain(int b);
  Status reduce_span_host(const Bucket& bk, ChunkGrads& c);
  Status reduce_span_device(const Bucket& bk, ChunkGrads& c);
  Status start_reduce(uint32_t ci);
  Status progress_reduces(bool wait = false);
  // The first inf / NaN of chunk ci's fp32 shard `g` (host memory): {param index, element}, or {-1, 0}.
  std::pair<int64_t, int64_t> first_nonfinite_in(uint32_t ci, const float* g) const;
  Status note_landed(uint32_t ci);  // a drain finished: final if that was the chunk's last bucket
  // nvme_grads.cpp
  StatusOr<float*> host_grads(uint32_t ci);  // host array, or the assembly buffer (taken, zeroed)
  StatusOr<int> take_assembly();             // a free buffer (finished writes reaped; else waited or spilled)
  Status reap_write(Assembly& a);            // its write finished: the buffer is free
  Status land_writes_of(uint32_t ci);        // chunk ci's writes in flight finished
  Status write_chunk(uint32_t ci);           // complete: partials, first inf / NaN, the write started
  Status finish_nvme();                      // the step: every NVMe chunk's gradient written
  std::string grad_key(uint32_t ci) const { return "c" + std::to_string(ci) + ".grad32"; }
  std::function<void()> io_span(TraceLane lane, const char* what, uint32_t ci) const;  // empty when not tracing
  Status wait_timed(offload::Event& e, double* counter);
  Status traced_copy(offload::Stream& s, TraceLane lane, std::string name, void* dst, const void* src, size_t bytes,
                     offload::CopyKind kind);

  Context ctx_;
  Reduction red_ = Reduction::kNone;
  std::vector<ChunkGrads> chunks_;
  std::vector<Bucket> buckets_;
  std::unique_ptr<offload::Event> user_ready_, copy_done_;
  uint64_t clock_ = 0;
  std::vector<float> rs_full_;  // a bucket's span in fp32 for the cross-rank sum (host side)
  void* rs_dev_ = nullptr;      // the same on the device
  // Replicated: chunks complete in backward waiting for their buckets to land, and all-reduces in flight.
  std::vector<uint32_t> reduce_ready_;
  std::vector<std::pair<uint32_t, std::unique_ptr<comm::Work>>> reduces_;
  bool boundary_ = false;        // the current micro-batch ends the accumulation cycle
  std::vector<uint32_t> final_;  // take_final's
  std::vector<Assembly> assembly_;
};

}  // namespace strata::engine
