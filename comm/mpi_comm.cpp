// The MPI backend of comm::Communicator: non-blocking MPI collectives (MPI_Iallreduce, ...) on a
// duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN, waited on by polling MPI_Test under a
// deadline. bf16 / fp16 reduce through user-defined MPI ops on 16-bit words (widened to float,
// rounded to nearest even). MPI is initialised on first use and finalised at exit, unless a
// communicator broke with collectives still pending (finalising then could hang on a dead peer).
#include <mpi.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "src/common/half.h"

namespace strata::comm {
namespace {

using Clock = std::chrono::steady_clock;

std::mutex g_mu;  // every MPI call (the thread level may be SERIALIZED)
std::atomic<bool> g_unsafe_to_finalise{false};
MPI_Op g_ops[2][2];  // [bf16, fp16][sum, max]

template <bool kBf16, bool kMax>
void half_op(void* in, void* inout, int* len, MPI_Datatype*) {
  const auto* a = static_cast<const uint16_t*>(in);
  auto* b = static_cast<uint16_t*>(inout);
  for (int i = 0; i < *len; ++i) {
    const float x = kBf16 ? bf16_to_float(a[i]) : fp16_to_float(a[i]);
    const float y = kBf16 ? bf16_to_float(b[i]) : fp16_to_float(b[i]);
    const float r = kMax ? std::max(x, y) : x + y;
    b[i] = kBf16 ? float_to_bf16(r) : float_to_fp16(r);
  }
}

Status mpi_error(int err, const std::string& what) {
  char text[MPI_MAX_ERROR_STRING];
  int n = 0;
  MPI_Error_string(err, text, &n);
  return Status(StatusCode::kComm, what + " failed: " + std::string(text, static_cast<size_t>(n)));
}

void finalise_at_exit() {
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (!finalised && !g_unsafe_to_finalise.load()) MPI_Finalize();
}

// The bf16 / fp16 reduction ops, once per process (also when the host program initialised MPI).
void make_ops() {
  static bool made = false;
  if (made) return;
  made = true;
  MPI_Op_create(&half_op<true, false>, 1, &g_ops[0][0]);
  MPI_Op_create(&half_op<true, true>, 1, &g_ops[0][1]);
  MPI_Op_create(&half_op<false, false>, 1, &g_ops[1][0]);
  MPI_Op_create(&half_op<false, true>, 1, &g_ops[1][1]);
}

// Initialises MPI once per process unless the host program did (caller holds g_mu).
Status ensure_mpi() {
  int init = 0;
  MPI_Initialized(&init);
  if (init) {
    int provided = 0;
    MPI_Query_thread(&provided);
    if (provided < MPI_THREAD_SERIALIZED)
      return Status(StatusCode::kUnsupported, "MPI was initialised by the program with thread level " +
                                                  std::to_string(provided) +
                                                  "; strata needs MPI_THREAD_SERIALIZED or more");
    make_ops();
    return Status::ok();
  }
  int finalised = 0;
  MPI_Finalized(&finalised);
  if (finalised) return Status(StatusCode::kFailedPrecondition, "MPI was already finalised in this process");
  int provided = 0;
  if (const int err = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided); err != MPI_SUCCESS)
    return mpi_error(err, "MPI_Init_thread");
  if (provided < MPI_THREAD_SERIALIZED)
    return Status(StatusCode::kUnsupported, "this MPI library gives thread level " + std::to_string(provided) +
                                                ", strata needs MPI_THREAD_SERIALIZED (" +
                                                std::to_string(MPI_THREAD_SERIALIZED) + ")");
  make_ops();
  std::atexit(finalise_at_exit);
  return Status::ok();
}

MPI_Datatype mpi_type(Elem e) {
  switch (e) {
    case Elem::kF32:
      return MPI_FLOAT;
    case Elem::kF64:
      return MPI_DOUBLE;
    case Elem::kI32:
      return MPI_INT;
    case Elem::kBF16:
    case Elem::kF16:
      return MPI_UINT16_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(Elem e, ReduceOp op) {
  if (e == Elem::kBF16 || e == Elem::kF16) return g_ops[e == Elem::kBF16 ? 0 : 1][op == ReduceOp::kMax ? 1 : 0];
  return op == ReduceOp::kMax ? MPI_MAX : MPI_SUM;
}

class MpiComm;

class MpiWork final : public Work {
 public:
  MpiWork(MpiComm* c, std::string what) : comm_(c), what_(std::move(what)) {}
  ~MpiWork() override;
  Status wait() override;
  StatusOr<bool> test() override;
  const std::string& what() const { return what_; }
  std::vector<MPI_Request> reqs;
  std::vector<unsigned char> scratch;  // a result to copy out at the end (in-place reduce-scatter)
  void* copy_to = nullptr;

 private:
  MpiComm* comm_;
  std::string what_;
  bool done_ = false;
};

class MpiComm final : public Communicator {
 public:
  MpiComm(MPI_Comm c, int rank, int size, const CommOptions& o) : comm_(c), rank_(rank), size_(size), opts_(o) {}
  ~MpiComm() override {
    if (broken_ && !settle_orphans()) {
      g_unsafe_to_finalise = true;  // collectives still pending on a dead peer: leave MPI as it is
      return;
    }
    std::lock_guard<std::mutex> lock(g_mu);
    MPI_Comm_free(&comm_);
  }
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  std::string backend() const override { return "mpi"; }
  Status set_timeout(std::chrono::milliseconds t) override {
    if (t.count() <= 0) return invalid_argument("comm timeout must be > 0 ms, not " + std::to_string(t.count()));
    opts_.timeout = t;
    return Status::ok();
  }
  std::chrono::milliseconds timeout() const override { return opts_.timeout; }

  StatusOr<std::unique_ptr<Work>> all_reduce(const void* send, void* recv, size_t count, Elem e, ReduceOp op,
                                             void*) override {
    auto w = std::make_unique<MpiWork>(this, describe("all_reduce", count, e));
    STRATA_RETURN_IF_ERROR(usable(w->what()));
    std::lock_guard<std::mutex> lock(g_mu);
    const size_t es = elem_size(e);
    // MPI counts are int: a large reduction goes in pieces (element-wise, so any split is exact).
    for (size_t off = 0; off < count; off += kMaxPiece) {
      const int n = static_cast<int>(std::min(count - off, kMaxPiece));
      MPI_Request r;
      const void* s = send == recv ? MPI_IN_PLACE : static_cast<const unsigned char*>(send) + off * es;
      if (const int err =
              MPI_Iallreduce(s, static_cast<unsigned char*>(recv) + off * es, n, mpi_type(e), mpi_op(e, op), comm_, &r);
          err != MPI_SUCCESS)
        return mpi_error(err, w->what());
      w->reqs.push_back(r);
    }
    return std::unique_ptr<Work>(std::move(w));
  }

  StatusOr<std::unique_ptr<Work>> reduce_scatter(const void* send, void* recv, size_t count, Elem e, ReduceOp op,
                                                 void*) override {
    auto w = std::make_unique<MpiWork>(this, describe("reduce_scatter", count, e));
    STRATA_RETURN_IF_ERROR(usable(w->what()));
    STRATA_RETURN_IF_ERROR(fits_int(count, w->what()));
    const size_t bytes = count * elem_size(e);
    void* out = recv;
    if (recv == static_cast<const unsigned char*>(send) + static_cast<size_t>(rank_) * bytes) {
      w->scratch.resize(bytes);  // in place: MPI writes elsewhere, wait() copies the shard home
      out = w->scratch.data();
      w->copy_to = recv;
    }
    std::lock_guard<std::mutex> lock(g_mu);
    MPI_Request r;
    if (const int err =
            MPI_Ireduce_scatter_block(send, out, static_cast<int>(count), mpi_type(e), mpi_op(e, op), comm_, &r);
        err != MPI_SUCCESS)
      return mpi_error(err, w->what());
    w->reqs.push_back(r);
    return std::unique_ptr<Work>(std::move(w));
  }

  StatusOr<std::unique_ptr<Work>> all_gather(const void* send, void* recv, size_t count, Elem e, void*) override {
    auto w = std::make_unique<MpiWork>(this, describe("all_gather", count, e));
    STRATA_RETURN_IF_ERROR(usable(w->what()));
    STRATA_RETURN_IF_ERROR(fits_int(count, w->what()));
    const bool in_place = send == static_cast<unsigned char*>(recv) + static_cast<size_t>(rank_) * count * elem_size(e);
    std::lock_guard<std::mutex> lock(g_mu);
    MPI_Request r;
    if (const int err = MPI_Iallgather(in_place ? MPI_IN_PLACE : send, static_cast<int>(count), mpi_type(e), recv,
                                       static_cast<int>(count), mpi_type(e), comm_, &r);
        err != MPI_SUCCESS)
      return mpi_error(err, w->what());
    w->reqs.push_back(r);
    return std::unique_ptr<Work>(std::move(w));
  }

  StatusOr<std::unique_ptr<Work>> broadcast(void* buf, size_t count, Elem e, int root, void*) override {
    auto w = std::make_unique<MpiWork>(this, describe("broadcast", count, e));
    STRATA_RETURN_IF_ERROR(usable(w->what()));
    STRATA_RETURN_IF_ERROR(fits_int(count, w->what()));
    if (root < 0 || root >= size_)
      return invalid_argument(w->what() + ": root " + std::to_string(root) + " is not a rank of " +
                              std::to_string(size_));
    std::lock_guard<std::mutex> lock(g_mu);
    MPI_Request r;
    if (const int err = MPI_Ibcast(buf, static_cast<int>(count), mpi_type(e), root, comm_, &r); err != MPI_SUCCESS)
      return mpi_error(err, w->what());
    w->reqs.push_back(r);
    return std::unique_ptr<Work>(std::move(w));
  }

  Status barrier() override {
    auto w = std::make_unique<MpiWork>(this, "MPI barrier across " + std::to_string(size_) + " ranks");
    STRATA_RETURN_IF_ERROR(usable(w->what()));
    {
      std::lock_guard<std::mutex> lock(g_mu);
      MPI_Request r;
      if (const int err = MPI_Ibarrier(comm_, &r); err != MPI_SUCCESS) return mpi_error(err, w->what());
      w->reqs.push_back(r);
    }
    return w->wait();
  }

  const CommOptions& options() const { return opts_; }
  void mark_broken() { broken_ = true; }
  bool broken() const { return broken_; }
  // A timed-out collective's requests (and scratch) stay with the communicator: MPI may still
  // complete them if the late peer joins.
  void adopt(std::vector<MPI_Request> reqs, std::vector<unsigned char> scratch) {
    orphans_.push_back({std::move(reqs), std::move(scratch)});
  }

 private:
  static constexpr size_t kMaxPiece = size_t{1} << 30;
  static constexpr std::chrono::milliseconds kSettle{100};
  std::string describe(const char* op, size_t count, Elem e) const {
    return std::string("MPI ") + op + " of " + std::to_string(count) + " x " + elem_name(e) + " across " +
           std::to_string(size_) + " ranks";
  }
  Status usable(const std::string& what) const {
    if (broken_)
      return Status(StatusCode::kComm,
                    what + ": the communicator broke after an earlier timeout and takes no more work");
    return Status::ok();
  }
  static Status fits_int(size_t count, const std::string& what) {
    if (count > static_cast<size_t>(INT_MAX))
      return invalid_argument(what + ": more than " + std::to_string(INT_MAX) +
                              " elements per rank (MPI counts are int)");
    return Status::ok();
  }

  // Whether every adopted collective completed, polling briefly: a peer that missed the whole
  // timeout is gone, and waiting another full timeout here only delays the exit.
  bool settle_orphans() {
    const Clock::time_point deadline = Clock::now() + std::min<std::chrono::milliseconds>(opts_.timeout, kSettle);
    for (;;) {
      bool all = true;
      {
        std::lock_guard<std::mutex> lock(g_mu);
        for (Orphan& o : orphans_) {
          int flag = 0;
          if (MPI_Testall(static_cast<int>(o.reqs.size()), o.reqs.data(), &flag, MPI_STATUSES_IGNORE) != MPI_SUCCESS)
            return false;
          all = all && flag;
        }
      }
      if (all) return true;
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }

  struct Orphan {
    std::vector<MPI_Request> reqs;
    std::vector<unsigned char> scratch;
  };
  MPI_Comm comm_;
  int rank_, size_;
  CommOptions opts_;
  bool broken_ = false;
  std::vector<Orphan> orphans_;
};

MpiWork::~MpiWork() {
  if (done_ || reqs.empty()) return;
  // Never waited on: the collective still has to finish before its buffers go away (on a broken
  // communicator wait() hands it to the communicator at once instead).
  (void)wait();
}

StatusOr<bool> MpiWork::test() {
  if (done_) return true;
  int flag = 0;
  {
    std::lock_guard<std::mutex> lock(g_mu);
    if (const int err = MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE);
        err != MPI_SUCCESS) {
      done_ = true;
      comm_->mark_broken();
      return mpi_error(err, what_);
    }
  }
  if (!flag) return false;
  done_ = true;
  if (copy_to != nullptr) std::memcpy(copy_to, scratch.data(), scratch.size());
  return true;
}

Status MpiWork::wait() {
  if (done_) return Status::ok();
  if (comm_->broken()) {  // an earlier collective timed out: its peers are gone, do not wait again
    done_ = true;
    comm_->adopt(std::move(reqs), std::move(scratch));
    return Status(StatusCode::kComm, what_ + ": the communicator broke after an earlier timeout");
  }
  const Clock::time_point started = Clock::now(), deadline = started + comm_->options().timeout;
  for (;;) {
    int flag = 0;
    {
      std::lock_guard<std::mutex> lock(g_mu);
      const int err = MPI_Testall(static_cast<int>(reqs.size()), reqs.data(), &flag, MPI_STATUSES_IGNORE);
      if (err != MPI_SUCCESS) {
        done_ = true;
        comm_->mark_broken();
        return mpi_error(err, what_);
      }
    }
    if (flag) break;
    if (Clock::now() > deadline) {
      done_ = true;
      comm_->mark_broken();
      comm_->adopt(std::move(reqs), std::move(scratch));
      return Status(
          StatusCode::kTimeout,
          what_ + " did not complete within " + std::to_string(comm_->options().timeout.count()) +
              " ms (a rank died, hangs, or did not call the same collective); the communicator is now unusable");
    }
    // Non-blocking MPI collectives advance only inside MPI calls: keep testing (yielding the core
    // to other ranks when oversubscribed); back off only once the wait is long (a late peer).
    if (Clock::now() - started < std::chrono::milliseconds(200)) {
      std::this_thread::yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  done_ = true;
  if (copy_to != nullptr) std::memcpy(copy_to, scratch.data(), scratch.size());
  return Status::ok();
}

}  // namespace

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int n = 0;
  if (MPI_Get_library_version(text, &n) != MPI_SUCCESS) return "unknown (MPI_Get_library_version failed)";
  std::string v(text, static_cast<size_t>(std::max(n, 0)));
  const size_t cut = v.find_first_of(",\n");  // "Open MPI v4.1.4, package: ..." -> "Open MPI v4.1.4"
  return cut == std::string::npos ? v : v.substr(0, cut);
}

StatusOr<std::unique_ptr<Communicator>> create_mpi(const CommOptions& options) {
  if (options.timeout.count() <= 0) return invalid_argument("comm timeout must be > 0 ms");
  std::lock_guard<std::mutex> lock(g_mu);
  STRATA_RETURN_IF_ERROR(ensure_mpi());
  MPI_Comm c;
  if (const int err = MPI_Comm_dup(MPI_COMM_WORLD, &c); err != MPI_SUCCESS) return mpi_error(err, "MPI_Comm_dup");
  MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  int rank = 0, size = 0;
  MPI_Comm_rank(c, &rank);
  MPI_Comm_size(c, &size);
  return std::unique_ptr<Communicator>(new MpiComm(c, rank, size, options));
}

}  // namespace strata::comm
