// Where one array of one chunk lives — device memory, pinned host memory, or a key of an NVMe
// store — behind one interface: synchronous reads and writes of a range through host memory, the
// resident memory when there is some, asynchronous whole-array NVMe I/O. The three tiers are
// implemented once here; code holding an ArrayHome does not branch on the tier to move bytes.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>

#include "offload/aligned_buffer.h"
#include "offload/device.h"
#include "offload/nvme_store.h"
#include "src/common/status.h"
#include "src/engine/device_ops.h"
#include "src/engine/engine.h"
#include "src/engine/placement.h"

namespace strata::engine {

class ArrayHome {
 public:
  virtual ~ArrayHome() = default;
  virtual Tier tier() const = 0;
  size_t bytes() const { return bytes_; }
  // The array's memory: a device pointer (device), host memory (host); nullptr on NVMe.
  virtual void* resident() = 0;
  // Bytes [off, off + n) into / from host memory; synchronous. Nothing else may be using the
  // array (the engine is idle); NVMe reads and writes go through the bounce buffer.
  virtual Status read(size_t off, void* dst, size_t n) = 0;
  virtual Status write(size_t off, const void* src, size_t n) = 0;
  virtual Status zero() = 0;
  // NVMe: the whole array into / from `buf` (at least bytes() long), asynchronously; `done` runs
  // when the I/O completes; `priority`: demand or background traffic (offload/aio_engine.h).
  // Other tiers: an unsupported error.
  // `check`: verified by the caller where it uses the bytes (NvmeStore::get).
  virtual StatusOr<offload::IoHandle> get_async(offload::AlignedBuffer& buf, std::function<void()> done,
                                                offload::IoPriority priority = offload::IoPriority::kDemand,
                                                offload::NvmeStore::ReadCheck* check = nullptr);
  // `checksum`: the store's checksum of the bytes when the caller took it (NvmeStore::put).
  virtual StatusOr<offload::IoHandle> put_async(const offload::AlignedBuffer& buf, std::function<void()> done,
                                                offload::IoPriority priority = offload::IoPriority::kDemand,
                                                std::optional<uint64_t> checksum = std::nullopt);
  virtual bool checksummed() const { return false; }  // NVMe with strata.nvme_checksum
  virtual Status release() { return Status::ok(); }   // frees device memory (before the device goes)

 protected:
  explicit ArrayHome(size_t bytes) : bytes_(bytes) {}
  size_t bytes_;
};

// What an array needs on each tier; make_array picks the implementation from the tier.
struct ArraySite {
  offload::Device* dev = nullptr;  // device: its memory, copies on `stream`, zeroes with `ops`
  offload::Stream* stream = nullptr;
  DeviceOps* ops = nullptr;
  offload::PinMode pin = offload::PinMode::kAuto;  // host
  offload::NvmeStore* store = nullptr;             // NVMe: the store, synchronous I/O through `bounce`,
  offload::AlignedBuffer* bounce = nullptr;
  EngineStats* stats = nullptr;  // NVMe bytes counted here
};
StatusOr<std::unique_ptr<ArrayHome>> make_array(Tier tier, const ArraySite& site, std::string nvme_key, size_t bytes);

// Device memory of `dev`; copies on `stream` (synchronised), zeroes with `ops`.
StatusOr<std::unique_ptr<ArrayHome>> device_array(offload::Device& dev, offload::Stream& stream, DeviceOps& ops,
                                                  size_t bytes);
// Host memory, pinned by `pin`.
StatusOr<std::unique_ptr<ArrayHome>> host_array(size_t bytes, offload::PinMode pin);
// `key` of `store`; synchronous reads and writes use `bounce` (at least bytes long, shared by
// arrays that are never read at the same time); NVMe bytes are counted in stats.
std::unique_ptr<ArrayHome> nvme_array(offload::NvmeStore& store, std::string key, size_t bytes,
                                      offload::AlignedBuffer* bounce, EngineStats* stats);

}  // namespace strata::engine
