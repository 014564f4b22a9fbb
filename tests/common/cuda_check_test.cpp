// The CUDA and NCCL check macros: a failing call becomes a kCuda / kNccl Status naming the call,
// the error and the location. Uses calls that fail the same way with or without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include "src/common/cuda_check.h"

namespace strata {
namespace {

Status bad_memcpy() {
  // Invalid value: a copy kind that does not exist. Fails before touching any device.
  STRATA_CUDA_CHECK(cudaMemcpy(nullptr, nullptr, 16, static_cast<cudaMemcpyKind>(77)));
  return Status::ok();
}

TEST(CudaCheck, FailingCallBecomesStatus) {
  Status s = bad_memcpy();
  ASSERT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kCuda);
  EXPECT_NE(s.message().find("cudaMemcpy(nullptr, nullptr, 16"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("tests/common/cuda_check_test.cpp:"), std::string::npos) << s.message();
  // With a working driver the error was cleared and the next query reports success. Without one
  // every runtime call keeps answering cudaErrorInsufficientDriver / cudaErrorNoDevice.
  int devices = 0;
  if (cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0) {
    EXPECT_EQ(cudaGetLastError(), cudaSuccess);
  } else {
    EXPECT_NE(s.message().find("cudaError"), std::string::npos) << s.message();
  }
}

#if defined(STRATA_HAVE_NCCL)
Status nccl_fails(ncclResult_t r) {
  STRATA_NCCL_CHECK(r);
  return Status::ok();
}

TEST(NcclCheck, FailingCallBecomesStatus) {
  int version = 0;
  ASSERT_EQ(ncclGetVersion(&version), ncclSuccess);  // works without a GPU
  EXPECT_GT(version, 0);
  Status s = nccl_fails(ncclInvalidArgument);
  EXPECT_EQ(s.code(), StatusCode::kNccl);
  EXPECT_NE(s.message().find("invalid argument"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("ncclResult 4"), std::string::npos) << s.message();
  EXPECT_TRUE(nccl_fails(ncclSuccess).is_ok());
}
#endif

}  // namespace
}  // namespace strata
