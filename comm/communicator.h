// The collectives strata needs between ranks — all-reduce, reduce-scatter, all-gather, broadcast,
// barrier — behind one interface with two backends: MPI for CPU ranks (host buffers, OpenMPI under
// mpirun) and NCCL for GPUs (device buffers, ordered on a CUDA stream). Every collective is
// asynchronous and returns a Work to wait on; a wait that outlasts the communicator's timeout
// returns kTimeout naming the collective, its size and the peer count, and breaks the
// communicator (NCCL: aborted; MPI: refuses further work) instead of hanging. Not thread-safe:
// one thread issues collectives and waits (the engine's host thread).
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "src/common/dtype.h"
#include "src/common/status.h"

namespace strata::comm {

// Element types of collectives: the tensor dtypes plus what norms and flags need.
enum class Elem { kF32, kBF16, kF16, kF64, kI32 };
Elem elem_of(DType d);
size_t elem_size(Elem e);
const char* elem_name(Elem e);

enum class ReduceOp { kSum, kMax };

// One collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the collective completed on this rank (MPI: its buffers may be used; NCCL: the
  // stream it was queued on has passed it), or the communicator's timeout ran out.
  [[nodiscard]] virtual Status wait() = 0;
  // Advances the collective without blocking (MPI progresses only inside MPI calls); true once
  // it completed as wait() would have. Errors as wait's, except that it never times out.
  virtual StatusOr<bool> test() = 0;
};

struct CommOptions {
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};  // per wait; then the communicator breaks
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" or "nccl"
  // The deadline of every later wait (CommOptions::timeout); must be > 0.
  virtual Status set_timeout(std::chrono::milliseconds timeout) = 0;
  virtual std::chrono::milliseconds timeout() const = 0;

  // Buffers are host memory (MPI) or device memory (NCCL; `stream` a cudaStream_t, nullptr: the
  // default stream). count is in elements. In-place use: all_reduce with send == recv;
  // all_gather with send == recv + rank * count; reduce_scatter with recv == send + rank * count.
  virtual StatusOr<std::unique_ptr<Work>> all_reduce(const void* send, void* recv, size_t count, Elem e, ReduceOp op,
                                                     void* stream = nullptr) = 0;
  // send: size() * count elements; recv: this rank's count elements of the reduction.
  virtual StatusOr<std::unique_ptr<Work>> reduce_scatter(const void* send, void* recv, size_t count, Elem e,
                                                         ReduceOp op, void* stream = nullptr) = 0;
  // send: count elements; recv: size() * count elements, rank r's at r * count.
  virtual StatusOr<std::unique_ptr<Work>> all_gather(const void* send, void* recv, size_t count, Elem e,
                                                     void* stream = nullptr) = 0;
  virtual StatusOr<std::unique_ptr<Work>> broadcast(void* buf, size_t count, Elem e, int root,
                                                    void* stream = nullptr) = 0;
  [[nodiscard]] virtual Status barrier() = 0;

  // Blocking forms: issue and wait.
  Status all_reduce_sync(const void* send, void* recv, size_t count, Elem e, ReduceOp op, void* stream = nullptr);
  Status broadcast_sync(void* buf, size_t count, Elem e, int root, void* stream = nullptr);
  Status all_gather_sync(const void* send, void* recv, size_t count, Elem e, void* stream = nullptr);
};

// The MPI backend over a duplicate of MPI_COMM_WORLD; initialises MPI (thread level
// MPI_THREAD_SERIALIZED or more) if the program has not, and finalises it when the last MPI
// communicator is destroyed. Under mpirun the world is mpirun's; a plain process is a world of
// one. kUnsupported when this build has no MPI.
StatusOr<std::unique_ptr<Communicator>> create_mpi(const CommOptions& options = {});
// The MPI library this build uses ("Open MPI v4.1.4, ..."), or why there is none.
std::string mpi_library_version();
// Whether this process was started by mpirun / mpiexec with more than one rank (from the
// launcher's environment; MPI is not initialised to find out).
bool launched_with_several_ranks();

// NCCL's bootstrap: rank 0 makes an id, the host program sends it to every rank its own way
// (strata's C API takes it as 128 bytes), each rank passes it with its rank and the world size.
using NcclId = std::array<char, 128>;
StatusOr<NcclId> nccl_unique_id();
// The NCCL library loaded ("2.28.9"), or why there is none.
std::string nccl_library_version();
// The NCCL backend on CUDA device `device` (the caller's current device is left as it was).
// kUnsupported when this build has no NCCL or there is no GPU.
StatusOr<std::unique_ptr<Communicator>> create_nccl(const NcclId& id, int rank, int size, int device,
                                                    const CommOptions& options = {});

}  // namespace strata::comm
