// The engine's optimizer part: the configured optimizer (src/optim) and, for every chunk, its fp32
// arrays of this rank's shard wherever the plan put them (one ArrayHome each: device, pinned host
// or NVMe); their initial values; the update of every chunk where its state lives (device kernels,
// host kernels in place, or — state on NVMe — a pipeline over offload_optimizer.buffer_count
// buffer sets: reads of the next chunks run while this one is updated and the previous ones are
// written back); the reads and writes checkpoints and read_master need. What the update reads
// (the fp32 gradient) and where the new bit16 values go belong to the rest of the engine, which
// it reaches through a ChunkSink.
#pragma once

#include <oneapi/tbb/task_arena.h>

#include <algorithm>
#include <array>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cpu/kernel_types.h"
#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "src/common/serial_queue.h"
#include "src/engine/array_home.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/placement.h"
#include "src/engine/trace.h"
#include "src/optim/optimizer.h"

namespace strata::engine {

class OptimizerRunner {
 public:
  // What the runner uses of the engine (owned there, alive as long as the runner).
  struct Context {
    offload::Device* dev = nullptr;
    DeviceOps* ops = nullptr;
    offload::Stream* compute = nullptr;  // device updates and copies
    const kernels::KernelTable* k = nullptr;
    tbb::task_arena* arena = nullptr;  // host updates
    // The update of host-resident chunks during backward and the checks of NVMe state read ahead
    // run on a thread of their own in this arena (CpuThreads::background_arena), so that the host
    // program's call that queued them returns at once; null: on that call's thread, in `arena`.
    tbb::task_arena* background_arena = nullptr;
    bool background_idle = false;         // that thread at idle priority (CpuThreads::idle_background)
    EngineStats* stats = nullptr;         // step_update_s, step_nvme_s, NVMe bytes
    Tracer* tracer = nullptr;             // may be null
    offload::NvmeStore* store = nullptr;  // set when some chunk's state is on NVMe
    void* scratch = nullptr;              // device scratch for the masters' sums of squares
    offload::PinMode pin = offload::PinMode::kAuto;
    bool overlap = true;           // read ahead / write behind (false: one chunk at a time)
    int buffer_count = 4;          // NVMe pipeline buffer sets
    DType bit16 = DType::kBF16;    // the params' dtype: the updated copy's
    size_t spec_slots = 0;         // backup slots of the update during backward (Plan::speculation_slots)
    size_t device_spec_slots = 0;  // the same in device memory (Plan::device_speculation_slots)
    bool nvme_grads = false;       // some NVMe chunk's gradient rests on NVMe: sets and slots read it too
    // An adopted gradient (adopt_grads) whose slot is dropped before the step goes back through
    // this (GradientPath::give_back: written to NVMe).
    std::function<Status(uint32_t ci, const offload::AlignedBuffer& buf)> give_back_grads;
  };

  // The rest of the engine's side of one chunk's update.
  class ChunkSink {
   public:
    virtual ~ChunkSink() = default;
    // The chunk's fp32 gradient of the shard: device memory for device-resident state, host else.
    virtual const void* grads(uint32_t ci) = 0;
    // Where the updated bit16 values of the shard go: device memory for device-resident state,
    // host memory else (then bit16_written forwards them where the params rest).
    virtual StatusOr<void*> bit16_out(uint32_t ci) = 0;
    virtual Status bit16_written(uint32_t ci) = 0;
    // bit16_out(ci) is where the params rest, seen before bit16_written (else a buffer of the sink's own).
    virtual bool bit16_in_place(uint32_t ci) = 0;
    // A gradient that rests on NVMe (grads returned nullptr) read into buf, asynchronously.
    virtual StatusOr<offload::IoHandle> read_grads(uint32_t ci, offload::AlignedBuffer& buf) {
      (void)buf;
      return internal_error("chunk " + std::to_string(ci) + ": its gradient is not on NVMe");
    }
  };

  explicit OptimizerRunner(std::unique_ptr<optim::Optimizer> opt) : opt_(std::move(opt)) {}
  ~OptimizerRunner() { (void)free(); }
  const optim::Optimizer& optimizer() const { return *opt_; }
  int num_arrays() const { return opt_->num_arrays(); }

  // Allocates every chunk's arrays on its tier (shard elements each) and the NVMe buffer sets.
  Status allocate(const Context& ctx, const std::vector<size_t>& shard_numel, const std::vector<Tier>& tiers);
  Status free();  // waits for I/O, frees device memory

  // The master from `master` ([shard] fp32), the optimizer's state zero. Synchronous.
  Status init(uint32_t ci, const float* master);
  // Every array of chunk ci's shard into / from host memory (dst[a] / src[a], [shard] fp32 each).
  // The engine must be idle (quiesce first).
  Status read_arrays(uint32_t ci, float* const* dst);
  Status write_arrays(uint32_t ci, const float* const* src);
  // Master elements [off, off + n) of chunk ci's shard into host memory (engine idle).
  Status read_master(uint32_t ci, size_t off, float* dst, size_t n);

  bool has_nvme() const { return !sets_.empty(); }
  // Idle priority was asked for the background thread and the OS refused it.
  bool background_idle_refused() const { return background_ && ctx_.background_idle && !background_->idle_priority(); }
  // Some chunk's state is in host (device) memory and there are host (device) slots to speculate it in.
  bool can_speculate() const {
    auto some = [&](Tier t) {
      return std::any_of(chunks_.begin(), chunks_.end(), [t](const Chunk& c) { return c.tier == t; });
    };
    return (!slots_.empty() && some(Tier::kHost)) || (!dslots_.empty() && some(Tier::kDevice));
  }
  // NVMe reads ahead of the step (never blocks; safe before the norm is known: reads only), after
  // the last step's write-backs (issued a few at a time: background_io).
  Status start_reads();
  Status background_io() { return progress_io(false); }
  // Every chunk's update, in descending chunk order (the order backward completes them). Chunks
  // speculated with the same constants commit (their bit16 values go to the sink); with other
  // constants they are restored from their backups and updated again.
  Status update(const optim::StepCoeffs& c, ChunkSink& sink);

  // The update during backward (speculation.cpp). Chunk ci, whose state is in host memory and
  // whose fp32 gradient of the cycle is final at `grads`, updated now with `c`: its arrays are
  // backed up in a slot first and its new bit16 values kept there until update commits them.
  // State in device memory (device slots, strata.speculate_device): the same with the device
  // kernel on the compute stream. false: not speculated (every slot taken, or the state is on
  // NVMe); update does it.
  // NVMe-resident chunks use the slots differently: start_reads reads their state into free slots
  // during the cycle's last micro-batch, and update updates it there with the step's constants
  // and writes it back behind the step (exact without a redo, whatever clipping does).
  StatusOr<bool> speculate(uint32_t ci, const optim::StepCoeffs& c, const void* grads);
  // Gradients on NVMe: chunk ci's complete gradient ([n] fp32 in `buf`) taken by the step slot its
  // state is being read ahead into, so that it needs no NVMe write and read: `buf` and the slot's
  // gradient buffer are swapped (both hold any NVMe chunk's gradient). false when it has none.
  bool adopt_grads(uint32_t ci, offload::AlignedBuffer& buf, size_t n);
  // Every speculated chunk restored to its state before, slots read ahead dropped (an overflow
  // skips the step; a checkpoint or read_master inside the cycle reads the state before the step).
  // keep_grads false: gradients adopted into slots are dropped with them (a skipped step).
  Status restore_speculated(bool keep_grads = true);
  struct SpecCounts {
    int speculated = 0;  // chunks updated during backward since the last take_counts
    int redone = 0;      //   of which restored and updated again (clipping, another lr)
    int read_ahead = 0;  // NVMe chunks whose state was read into a slot before the step
  };
  SpecCounts take_counts() { return std::exchange(counts_, {}); }
  // The lowest chunk whose fp32 master holds inf / NaN after the last update, or -1.
  StatusOr<int> first_nonfinite_master();
  // Every read and write-back finished.
  Status quiesce();

 private:
  struct Chunk {
    size_t shard = 0;
    Tier tier = Tier::kDevice;
    std::array<std::unique_ptr<ArrayHome>, optim::kMaxArrays> a;
  };
  using Buffers = std::array<offload::AlignedBuffer, optim::kMaxArrays>;  // one per optimizer array
  using Handles = std::array<offload::IoHandle, optim::kMaxArrays>;
  using Sums = std::array<std::optional<uint64_t>, optim::kMaxArrays>;          // checksums taken for a write
  using Checks = std::array<offload::NvmeStore::ReadCheck, optim::kMaxArrays>;  // of a read, run by the update
  // An NVMe-resident gradient read beside the state (Context::nvme_grads).
  struct GradIn {
    offload::AlignedBuffer buf;
    offload::IoHandle io;
    bool issued = false;   // buf holds the chunk's gradient, or its read is in flight (io)
    bool adopted = false;  // handed over by adopt_grads: no NVMe copy exists
  };
  // One buffer set of the NVMe pipeline: one chunk's arrays, read ahead and written behind.
  struct Set {
    enum class State { kFree, kReading, kReady, kWriting } state = State::kFree;
    Buffers buf;
    Handles io;
    int chunk = -1;
    uint64_t issued = 0;  // order of the last read / write issued, to wait for the oldest
    GradIn grad;
    Sums sums;
    Checks checks;
  };
  std::vector<uint32_t> order() const;
  // What the update of an NVMe chunk's buffers does besides the kernel, in the same arena call:
  // the checks of the reads that brought the state (a mismatch is `verified`, and nothing the
  // caller can see was updated) and the write-back's checksums of the new state (filled, or
  // cleared when the store keeps none). Segmented checks run inside the update (update_summed),
  // whole-tensor ones (an index-1 store's) before it.
  struct KernelIo {
    const Checks* checks = nullptr;
    Sums* sums = nullptr;
    Status verified;
    bool out_in_place = false;  // the bit16 output is where the params rest (ChunkSink::bit16_in_place)
  };
  Status update_host(uint32_t ci, float* const* state, const void* grads, const optim::StepCoeffs& c, ChunkSink& sink,
                     KernelIo* io = nullptr);
  // NVMe-resident gradients: the read started (once per chunk held), the gradient when it landed.
  Status issue_grads(uint32_t ci, GradIn& g, ChunkSink& sink);
  StatusOr<const void*> chunk_grads(uint32_t ci, GradIn& g, ChunkSink& sink);
  Status reset_grads(GradIn& g);  // the buffer free for another chunk (a read in flight landed)
  Status update_device(uint32_t ci, const optim::StepCoeffs& c, ChunkSink& sink);
  StatusOr<int> free_set(bool block);
  // demand: the step waits for it (else read ahead or written behind: background traffic, unless
  // without overlap, where every transfer is waited for).
  // put: `sums` (optional) are the arrays' checksums; get: `checks` (optional) receive the reads'
  // checks, which the update then runs (KernelIo).
  Status transfer(uint32_t ci, bool put, Buffers& buf, Handles& io, bool demand, Sums* sums = nullptr,
                  Checks* checks = nullptr);
  // The update of one chunk (t, in host memory) with the store's checksums of its new arrays taken
  // on the way (state_checksums.cpp): the chunk in segments of the checksum, each segment hashed
  // right after its update, while still in cache, so that the write-back issued later need not
  // read the arrays again. `checks` (may be null; segmented): the read's checks, each segment
  // hashed just before the kernel reads it — one pass over the state instead of two; their
  // result in *verified (a mismatch leaves t's arrays and output holding an update of the
  // corrupt state, for the caller to drop). False when a master came out inf / NaN. In the arena.
  bool update_summed(const optim::Tensor& t, const optim::StepCoeffs& c, Sums& sums, const Checks* checks = nullptr,
                     Status* verified = nullptr);
  // The checks of a read's arrays, their segments hashed over the arena's threads. In the arena.
  Status verify_reads(uint32_t ci, float* const* state, const Checks& checks);
  static bool all_done(const Handles& io);  // every valid handle finished (never blocks)
  Status wait_handles(Handles& io);
  Status read_set(int s, uint32_t ci, bool demand);
  Status write_set(int s);
  Status wait_set(int s);
  Status reap_sets();
  bool writing(uint32_t ci) const;
  int set_of(uint32_t ci) const;  // the set holding (or reading) chunk ci, -1 if none
  void span(TraceLane lane, std::string name, Clock::time_point b) const;
  std::function<void()> io_span(TraceLane lane, std::string name) const;

  // A chunk's arrays beside their home: the backup of a speculated host chunk (its arrays before
  // the update; the bit16 values after it), or an NVMe chunk's state read ahead of the step,
  // updated there and written back.
  struct Slot {
    enum class State { kFree, kReading, kStaged, kSpeculated, kUpdated, kWriting } state = State::kFree;
    Buffers buf;
    Handles io;
    offload::AlignedBuffer bit16;
    int chunk = -1;
    bool finite = true;
    GradIn grad;
    Sums sums;      // of the updated state (kUpdated), for its write-back
    Checks checks;  // of the state read into it, verified by its update
    // The checks already ran (check_landed), with this result: the update skips them.
    bool checked = false;
    Status check_result;
    bool pending = false;        // kSpeculated: its update queued or running (join_background)
    bool check_pending = false;  // kReading: its checks queued or running (join_background)
  };
  Status give_back(Slot& slot);    // an adopted gradient of a slot about to be dropped, back to NVMe
  Status progress_io(bool reads);  // write-backs, then reads ahead (start_reads), a few at a time
  // The checks of one slot whose read landed (without error), queued now rather than run in the step.
  void check_landed();
  int updated_slot(uint32_t ci) const;  // the slot holding chunk ci's updated state not yet written, or -1
  StatusOr<int> take_slot();            // a free slot (finished write-backs reaped), or -1
  Status reap_slots();                  // finished write-backs free their slots
  Status wait_slot(Slot& s);            // its reads (-> staged) or writes (-> free) finished
  void drop(Slot& slot);                // freed unless its state must still be written back
  Status read_slot(int s, uint32_t ci);
  Status write_slot(int s);
  Status update_staged(uint32_t ci, const optim::StepCoeffs& c, ChunkSink& sink);
  bool run_kernel(uint32_t ci, float* const* state, const void* grads, void* out, const optim::StepCoeffs& c,
                  KernelIo* io = nullptr);
  void copy_arrays(float* const* dst, float* const* src, size_t n);
  float* const* slot_arrays(Slot& s, float** out);
  float* const* slot_arrays(Set& s, float** out);
  float* const* home_arrays(uint32_t ci, float** out);  // the arrays where they rest (host or device memory)
  // The kernel's view of chunk ci: its arrays `state` (master first), fp32 gradient, bit16 output.
  optim::Tensor tensor_of(uint32_t ci, float* const* state, const void* grads, void* out) const;
  Status wait_write(uint32_t ci);  // the chunk's NVMe write-back of the step landed
  Status settle_speculated(const optim::StepCoeffs& c, ChunkSink& sink);
  Status release_slots();

  std::unique_ptr<optim::Optimizer> opt_;
  Context ctx_;
  std::vector<Slot> slots_;
  std::vector<int> spec_;  // per chunk: the slot reading / holding / backing it up, else -1
  // Device-resident state updated during backward by the device kernel (on the compute stream,
  // after the chunk's gradient in stream order): its arrays before the update and its new bit16
  // values, in device memory, until the step commits or redoes it.
  struct DeviceSlot {
    void* mem = nullptr;  // one allocation: the arrays, then the bit16 values
    std::array<float*, optim::kMaxArrays> a{};
    void* bit16 = nullptr;
    int chunk = -1;  // the chunk speculated in it, -1 if free
  };
  std::vector<DeviceSlot> dslots_;
  std::vector<int> dspec_;  // per chunk: its device slot, else -1
  bool any_speculated() const;
  // The speculative update of host chunk ci into slot s: its arrays backed up into the slot, the
  // kernel on its home arrays, the new bit16 values into the slot. Runs on the speculation queue
  // (or the caller's thread) and touches nothing but those buffers, spec_finite_[s] and
  // spec_seconds_ — which only the host program's thread reads, after join_background.
  void speculate_into(int s, uint32_t ci, const optim::StepCoeffs& c, const void* grads, float* const* backup,
                      void* bit16, tbb::task_arena& arena);
  // Every queued speculative update and check finished; their results into their slots. Whatever
  // reads or writes a chunk's host arrays or a slot's buffers or state calls this first.
  void join_background();
  // The checks of slot s's arrays (chunk ci's state, landed), traced; in `arena`.
  Status check_slot(uint32_t ci, float* const* state, const Checks& checks, tbb::task_arena& arena);
  std::vector<Status> check_results_;        // per slot: its queued checks' result, into the slot at the join
  std::unique_ptr<SerialQueue> background_;  // set when there are slots and a background arena
  std::vector<char> spec_finite_;            // per slot: its update left every master finite
  double spec_seconds_ = 0;                  // kernel time of the queued updates, into stats at the join
  StatusOr<bool> speculate_device(uint32_t ci, const optim::StepCoeffs& c, const void* grads);
  // Every array's n elements from src to dst, device memory, on the compute stream.
  Status device_copy_arrays(float* const* dst, float* const* src, size_t n);
  Status settle_device(const optim::StepCoeffs& c, bool commit, ChunkSink& sink);
  Status restore_device();
  optim::StepCoeffs spec_c_;
  SpecCounts counts_;
  std::vector<Chunk> chunks_;
  std::vector<Set> sets_;
  // The bit16 output of an update whose checks run inside it and whose output is in place: kept
  // here until the checks passed (the largest NVMe shard's bit16 bytes, taken at the first such update).
  offload::AlignedBuffer checked_out_;
  uint64_t issue_ = 0;
  int bad_master_ = -1;  // the lowest chunk whose host update produced inf / NaN
};

}  // namespace strata::engine
