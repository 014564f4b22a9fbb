// The three ArrayHome tiers: device, pinned host, NVMe.
#include "src/engine/array_home.h"

#include <cstring>
#include <utility>

namespace strata::engine {

StatusOr<offload::IoHandle> ArrayHome::get_async(offload::AlignedBuffer&, std::function<void()>, offload::IoPriority,
                                                 offload::NvmeStore::ReadCheck*) {
  return internal_error("an asynchronous NVMe read of an array that is not on NVMe");
}

StatusOr<offload::IoHandle> ArrayHome::put_async(const offload::AlignedBuffer&, std::function<void()>,
                                                 offload::IoPriority, std::optional<uint64_t>) {
  return internal_error("an asynchronous NVMe write of an array that is not on NVMe");
}

namespace {

class DeviceArray final : public ArrayHome {
 public:
  DeviceArray(offload::Device& dev, offload::Stream& s, DeviceOps& ops, void* p, size_t bytes)
      : ArrayHome(bytes), dev_(dev), s_(s), ops_(ops), p_(p) {}
  ~DeviceArray() override { (void)release(); }
  Tier tier() const override { return Tier::kDevice; }
  void* resident() override { return p_; }
  Status read(size_t off, void* dst, size_t n) override {
    STRATA_RETURN_IF_ERROR(s_.copy(dst, static_cast<const uint8_t*>(p_) + off, n, offload::CopyKind::kDeviceToHost));
    return s_.synchronize();
  }
  Status write(size_t off, const void* src, size_t n) override {
    STRATA_RETURN_IF_ERROR(s_.copy(static_cast<uint8_t*>(p_) + off, src, n, offload::CopyKind::kHostToDevice));
    return s_.synchronize();
  }
  Status zero() override {
    STRATA_RETURN_IF_ERROR(ops_.zero(s_, p_, bytes_));
    return s_.synchronize();
  }
  Status release() override { return dev_.free(std::exchange(p_, nullptr)); }

 private:
  offload::Device& dev_;
  offload::Stream& s_;
  DeviceOps& ops_;
  void* p_;
};

class HostArray final : public ArrayHome {
 public:
  HostArray(offload::AlignedBuffer b, size_t bytes) : ArrayHome(bytes), b_(std::move(b)) {}
  Tier tier() const override { return Tier::kHost; }
  void* resident() override { return b_.data(); }
  Status read(size_t off, void* dst, size_t n) override {
    std::memcpy(dst, b_.bytes() + off, n);
    return Status::ok();
  }
  Status write(size_t off, const void* src, size_t n) override {
    std::memcpy(b_.bytes() + off, src, n);
    return Status::ok();
  }
  Status zero() override {
    std::memset(b_.data(), 0, bytes_);
    return Status::ok();
  }

 private:
  offload::AlignedBuffer b_;
};

class NvmeArray final : public ArrayHome {
 public:
  NvmeArray(offload::NvmeStore& store, std::string key, size_t bytes, offload::AlignedBuffer* bounce, EngineStats* st)
      : ArrayHome(bytes), store_(store), key_(std::move(key)), bounce_(bounce), st_(st) {}
  Tier tier() const override { return Tier::kNvme; }
  void* resident() override { return nullptr; }
  Status read(size_t off, void* dst, size_t n) override {
    STRATA_RETURN_IF_ERROR(store_.get(key_, *bounce_, bytes_).wait());
    st_->bytes_nvme_read += bytes_;
    std::memcpy(dst, bounce_->bytes() + off, n);
    return Status::ok();
  }
  Status write(size_t off, const void* src, size_t n) override {
    if (off != 0 || n != bytes_) {  // a part: the rest as it is
      STRATA_RETURN_IF_ERROR(store_.get(key_, *bounce_, bytes_).wait());
      st_->bytes_nvme_read += bytes_;
    }
    std::memcpy(bounce_->bytes() + off, src, n);
    return put_bounce();
  }
  Status zero() override {
    std::memset(bounce_->data(), 0, bytes_);
    return put_bounce();
  }
  StatusOr<offload::IoHandle> get_async(offload::AlignedBuffer& buf, std::function<void()> done,
                                        offload::IoPriority priority = offload::IoPriority::kDemand,
                                        offload::NvmeStore::ReadCheck* check = nullptr) override {
    st_->bytes_nvme_read += bytes_;
    return store_.get(key_, buf, bytes_, std::move(done), priority, check);
  }
  StatusOr<offload::IoHandle> put_async(const offload::AlignedBuffer& buf, std::function<void()> done,
                                        offload::IoPriority priority = offload::IoPriority::kDemand,
                                        std::optional<uint64_t> checksum = std::nullopt) override {
    st_->bytes_nvme_write += bytes_;
    return store_.put(key_, buf, bytes_, std::move(done), priority, checksum);
  }
  bool checksummed() const override { return store_.checksums(); }

 private:
  Status put_bounce() {
    STRATA_RETURN_IF_ERROR(store_.put(key_, *bounce_, bytes_).wait());
    st_->bytes_nvme_write += bytes_;
    return Status::ok();
  }
  offload::NvmeStore& store_;
  std::string key_;
  offload::AlignedBuffer* bounce_;
  EngineStats* st_;
};

}  // namespace

StatusOr<std::unique_ptr<ArrayHome>> device_array(offload::Device& dev, offload::Stream& stream, DeviceOps& ops,
                                                  size_t bytes) {
  STRATA_ASSIGN_OR_RETURN(void* p, dev.allocate(bytes));
  return std::unique_ptr<ArrayHome>(new DeviceArray(dev, stream, ops, p, bytes));
}

StatusOr<std::unique_ptr<ArrayHome>> host_array(size_t bytes, offload::PinMode pin) {
  STRATA_ASSIGN_OR_RETURN(offload::AlignedBuffer b, offload::AlignedBuffer::create(bytes, pin));
  return std::unique_ptr<ArrayHome>(new HostArray(std::move(b), bytes));
}

std::unique_ptr<ArrayHome> nvme_array(offload::NvmeStore& store, std::string key, size_t bytes,
                                      offload::AlignedBuffer* bounce, EngineStats* stats) {
  return std::unique_ptr<ArrayHome>(new NvmeArray(store, std::move(key), bytes, bounce, stats));
}

StatusOr<std::unique_ptr<ArrayHome>> make_array(Tier tier, const ArraySite& site, std::string nvme_key, size_t bytes) {
  switch (tier) {
    case Tier::kDevice:
      return device_array(*site.dev, *site.stream, *site.ops, bytes);
    case Tier::kHost:
      return host_array(bytes, site.pin);
    case Tier::kNvme:
      if (site.store == nullptr || site.bounce == nullptr) return internal_error("an NVMe array without a store");
      return nvme_array(*site.store, std::move(nvme_key), bytes, site.bounce, site.stats);
  }
  return internal_error("unknown tier");
}

}  // namespace strata::engine
