// offload::Device: the host-emulated device's budget, in-order streams, events across streams,
// error parking and range checks; device selection; and the copy / event semantics shared with
// CudaDevice, run on a GPU where one is present (skipped elsewhere).
#include "offload/device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

namespace strata::offload {
namespace {

using namespace std::chrono_literals;

TEST(HostDevice, BudgetIsHardAndAccounted) {
  auto dev = make_host_device(1 << 20);
  EXPECT_NE(dev->name().find("host-emulated device (budget 1.0 MiB)"), std::string::npos);
  auto a = dev->allocate(600 << 10);
  ASSERT_TRUE(a.is_ok());
  auto b = dev->allocate(500 << 10);
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kOutOfMemory);
  EXPECT_NE(b.status().message().find("allocation of 512000 bytes exceeds the device budget: 614400 of 1048576"),
            std::string::npos)
      << b.status().message();
  EXPECT_EQ(dev->used_bytes(), size_t{600} << 10);
  ASSERT_TRUE(dev->free(a.value()).is_ok());
  EXPECT_EQ(dev->used_bytes(), 0u);
  EXPECT_EQ(dev->peak_bytes(), size_t{600} << 10);
  EXPECT_TRUE(dev->allocate(1 << 20).is_ok());
  int x = 0;
  EXPECT_EQ(dev->free(&x).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(dev->free(nullptr).is_ok());
}

TEST(HostDevice, StreamRunsInOrderAndComputesOnDeviceMemory) {
  auto dev = make_host_device(1 << 20);
  auto s = dev->create_stream().value();
  float* d = static_cast<float*>(dev->allocate(1024 * sizeof(float)).value());
  std::vector<float> h(1024), back(1024, 0.0f);
  for (int i = 0; i < 1024; ++i) h[i] = static_cast<float>(i);
  ASSERT_TRUE(s->launch_host([] {
                 std::this_thread::sleep_for(30ms);  // later work must wait for this
                 return Status::ok();
               }).is_ok());
  ASSERT_TRUE(s->copy(d, h.data(), 1024 * sizeof(float), CopyKind::kHostToDevice).is_ok());
  ASSERT_TRUE(s->launch_host([d] {
                 for (int i = 0; i < 1024; ++i) d[i] *= 2.0f;
                 return Status::ok();
               }).is_ok());
  ASSERT_TRUE(s->copy(back.data(), d, 1024 * sizeof(float), CopyKind::kDeviceToHost).is_ok());
  EXPECT_EQ(back[5], 0.0f) << "copies are asynchronous: nothing happened yet";
  ASSERT_TRUE(s->synchronize().is_ok());
  for (int i = 0; i < 1024; ++i) ASSERT_EQ(back[i], 2.0f * i);
}

TEST(HostDevice, CopiesMustStayInsideLiveAllocations) {
  auto dev = make_host_device(1 << 20);
  auto s = dev->create_stream().value();
  char* d = static_cast<char*>(dev->allocate(4096).value());
  std::vector<char> h(8192);
  Status st = s->copy(d, h.data(), 8192, CopyKind::kHostToDevice);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("device destination range of 8192 bytes is not inside a live device allocation"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(s->copy(h.data(), h.data() + 4096, 16, CopyKind::kDeviceToHost).code(), StatusCode::kInvalidArgument);
  ASSERT_TRUE(dev->free(d).is_ok());
  EXPECT_EQ(s->copy(d, h.data(), 16, CopyKind::kHostToDevice).code(), StatusCode::kInvalidArgument)
      << "use after free is caught";
  EXPECT_EQ(s->copy(nullptr, h.data(), 16, CopyKind::kHostToDevice).code(), StatusCode::kInvalidArgument);
}

TEST(HostDevice, EventsOrderWorkAcrossStreams) {
  auto dev = make_host_device(1 << 20);
  auto a = dev->create_stream().value();
  auto b = dev->create_stream().value();
  auto e = dev->create_event().value();
  EXPECT_TRUE(e->query()) << "never recorded";
  int* d = static_cast<int*>(dev->allocate(sizeof(int)).value());
  *d = 0;
  std::atomic<int> seen{-1};
  ASSERT_TRUE(a->launch_host([d] {
                 std::this_thread::sleep_for(50ms);
                 *d = 42;
                 return Status::ok();
               }).is_ok());
  ASSERT_TRUE(a->record(*e).is_ok());
  ASSERT_TRUE(b->wait(*e).is_ok());
  ASSERT_TRUE(b->launch_host([d, &seen] {
                 seen = *d;
                 return Status::ok();
               }).is_ok());
  EXPECT_FALSE(e->query()) << "stream a is still sleeping";
  ASSERT_TRUE(b->synchronize().is_ok());
  EXPECT_EQ(seen.load(), 42) << "b ran before the event it waited for";
  EXPECT_TRUE(e->query());
  ASSERT_TRUE(e->synchronize().is_ok());
}

TEST(HostDevice, ErrorsAreParkedUntilSynchronize) {
  auto dev = make_host_device(1 << 20);
  auto s = dev->create_stream().value();
  std::atomic<bool> later_ran{false};
  ASSERT_TRUE(s->launch_host([] { return Status(StatusCode::kIo, "emulated kernel failed"); }).is_ok());
  ASSERT_TRUE(s->launch_host([&] {
                 later_ran = true;
                 return Status::ok();
               }).is_ok());
  Status st = s->synchronize();
  EXPECT_EQ(st.code(), StatusCode::kIo);
  EXPECT_EQ(st.message(), "emulated kernel failed");
  EXPECT_TRUE(later_ran.load()) << "later work still runs, so waiting streams cannot hang";
  EXPECT_TRUE(s->synchronize().is_ok()) << "the error is reported once";
  EXPECT_EQ(s->launch_host({}).code(), StatusCode::kInvalidArgument);
}

TEST(HostDevice, DestroyingAStreamFinishesItsWork) {
  auto dev = make_host_device(1 << 20);
  std::atomic<int> done{0};
  {
    auto s = dev->create_stream().value();
    for (int i = 0; i < 5; ++i)
      ASSERT_TRUE(s->launch_host([&] {
                     std::this_thread::sleep_for(5ms);
                     ++done;
                     return Status::ok();
                   }).is_ok());
  }
  EXPECT_EQ(done.load(), 5);
}

TEST(DeviceChoice, ParsesAndSaysWhichDevice) {
  EXPECT_EQ(parse_device_choice("host").value(), DeviceChoice::kHost);
  EXPECT_EQ(parse_device_choice("cuda").value(), DeviceChoice::kCuda);
  auto bad = parse_device_choice("tpu");
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("expected auto, host or cuda"), std::string::npos);

  std::string line;
  auto host = open_device(DeviceChoice::kHost, 1 << 20, [&](const std::string& m) { line = m; });
  ASSERT_TRUE(host.is_ok());
  EXPECT_FALSE(host.value()->is_cuda());
  EXPECT_NE(line.find("using the host-emulated device"), std::string::npos) << line;
  EXPECT_EQ(open_device(DeviceChoice::kHost, 0).status().code(), StatusCode::kInvalidArgument);

  auto cuda = open_device(DeviceChoice::kCuda, 0);
  if (cuda.is_ok()) {
    EXPECT_TRUE(cuda.value()->is_cuda());
  } else {
    EXPECT_EQ(cuda.status().code(), StatusCode::kUnsupported);
    EXPECT_NE(cuda.status().message().find("device 'cuda' was asked for, but no CUDA device is usable: "),
              std::string::npos)
        << cuda.status().message();
  }
  line.clear();
  auto any = open_device(DeviceChoice::kAuto, 1 << 20, [&](const std::string& m) { line = m; });
  ASSERT_TRUE(any.is_ok()) << any.status().to_string();
  EXPECT_EQ(any.value()->is_cuda(), cuda.is_ok());
  EXPECT_NE(line.find(cuda.is_ok() ? "using CUDA device 0" : "no usable CUDA device"), std::string::npos) << line;
}

// Semantics every device shares: copies in order through device memory, events across streams.
class AnyDevice : public ::testing::TestWithParam<DeviceChoice> {};

TEST_P(AnyDevice, CopiesAndEventsAcrossStreams) {
  auto opened = open_device(GetParam(), 64 << 20);
  if (!opened.is_ok() && GetParam() == DeviceChoice::kCuda) GTEST_SKIP() << opened.status().message();
  ASSERT_TRUE(opened.is_ok()) << opened.status().to_string();
  Device& dev = *opened.value();
  auto copy_s = dev.create_stream().value();
  auto other = dev.create_stream().value();
  auto ready = dev.create_event().value();
  const size_t n = size_t{8} << 20;
  std::vector<uint8_t> h(n), back(n, 0);
  for (size_t i = 0; i < n; ++i) h[i] = static_cast<uint8_t>(i * 31 + 7);
  void* d1 = dev.allocate(n).value();
  void* d2 = dev.allocate(n).value();
  ASSERT_TRUE(copy_s->copy(d1, h.data(), n, CopyKind::kHostToDevice).is_ok());
  ASSERT_TRUE(copy_s->record(*ready).is_ok());
  ASSERT_TRUE(other->wait(*ready).is_ok());
  ASSERT_TRUE(other->copy(d2, d1, n, CopyKind::kDeviceToDevice).is_ok());
  ASSERT_TRUE(other->copy(back.data(), d2, n, CopyKind::kDeviceToHost).is_ok());
  ASSERT_TRUE(other->synchronize().is_ok());
  EXPECT_EQ(std::memcmp(back.data(), h.data(), n), 0);
  EXPECT_TRUE(ready->query());
  ASSERT_TRUE(dev.free(d1).is_ok());
  ASSERT_TRUE(dev.free(d2).is_ok());
  EXPECT_EQ(dev.used_bytes(), 0u);
}

INSTANTIATE_TEST_SUITE_P(HostAndCuda, AnyDevice, ::testing::Values(DeviceChoice::kHost, DeviceChoice::kCuda),
                         [](const auto& p) { return std::string(p.param == DeviceChoice::kHost ? "host" : "cuda"); });

}  // namespace
}  // namespace strata::offload
