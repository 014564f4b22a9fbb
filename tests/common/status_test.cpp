// Status / StatusOr and the syscall check macros: codes, messages with call, errno and location.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "src/common/check.h"
#include "src/common/status.h"

namespace strata {
namespace {

Status open_missing(const char* path) {
  STRATA_SYSCALL_CHECK(::open(path, O_RDONLY));
  return Status::ok();
}

Status neg_errno(long rc) {
  STRATA_NEG_ERRNO_CHECK(rc);
  return Status::ok();
}

StatusOr<int> half_of(int x) {
  if (x % 2 != 0) return invalid_argument("odd: " + std::to_string(x));
  return x / 2;
}

Status quarter(int x, int* out) {
  STRATA_ASSIGN_OR_RETURN(int h, half_of(x));
  STRATA_ASSIGN_OR_RETURN(*out, half_of(h));
  return Status::ok();
}

TEST(Status, OkAndErrors) {
  EXPECT_TRUE(Status::ok().is_ok());
  EXPECT_EQ(Status::ok().to_string(), "OK");
  Status s = invalid_argument("lr is -1");
  EXPECT_FALSE(s.is_ok());
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.to_string(), "INVALID_ARGUMENT: lr is -1");
  EXPECT_EQ(std::move(s).annotate("step 3").message(), "step 3: lr is -1");
  EXPECT_TRUE(Status::ok().annotate("ignored").is_ok());
  for (int c = 0; c <= static_cast<int>(StatusCode::kInternal); ++c)
    EXPECT_NE(status_code_name(static_cast<StatusCode>(c)), "UNKNOWN") << c;
}

TEST(StatusOr, ValueOrStatusAndMacros) {
  int out = 0;
  EXPECT_TRUE(quarter(12, &out).is_ok());
  EXPECT_EQ(out, 3);
  Status s = quarter(6, &out);  // 6 -> 3 -> odd
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "odd: 3");
  StatusOr<std::string> v(std::string("x"));
  EXPECT_TRUE(v.is_ok());
  EXPECT_EQ(*v, "x");
  EXPECT_TRUE(v.status().is_ok());
}

TEST(Check, SyscallKeepsCallErrnoAndLocation) {
  Status s = open_missing("/nonexistent/strata/file");
  EXPECT_EQ(s.code(), StatusCode::kNotFound);
  EXPECT_NE(s.message().find("::open(path, O_RDONLY) failed"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("No such file or directory"), std::string::npos);
  EXPECT_NE(s.message().find("ENOENT=2"), std::string::npos);
  EXPECT_NE(s.message().find("tests/common/status_test.cpp:"), std::string::npos) << "relative file:line expected";
}

TEST(Check, NegativeErrnoMapsCodes) {
  EXPECT_TRUE(neg_errno(5).is_ok());
  EXPECT_EQ(neg_errno(-ENOSPC).code(), StatusCode::kNoSpace);
  EXPECT_EQ(neg_errno(-EDQUOT).code(), StatusCode::kNoSpace);
  EXPECT_EQ(neg_errno(-ENOMEM).code(), StatusCode::kOutOfMemory);
  EXPECT_EQ(neg_errno(-EIO).code(), StatusCode::kIo);
  EXPECT_EQ(neg_errno(-EEXIST).code(), StatusCode::kAlreadyExists);
  EXPECT_NE(neg_errno(-EIO).message().find("Input/output error (errno EIO=5)"), std::string::npos);
}

}  // namespace
}  // namespace strata
