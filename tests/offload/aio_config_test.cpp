// The "aio" config section: DeepSpeed keys, defaults, and errors that name the key.
#include "offload/aio_config.h"

#include <gtest/gtest.h>

namespace strata::offload {
namespace {

void expect_error(const char* json, const char* needle) {
  auto r = parse_aio_config_text(json);
  ASSERT_FALSE(r.is_ok()) << json;
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(needle), std::string::npos) << r.status().message();
}

TEST(AioConfig, DeepSpeedKeysAndDefaults) {
  auto d = parse_aio_config_text("{}");
  ASSERT_TRUE(d.is_ok());
  EXPECT_EQ(d.value().block_size, size_t{1} << 20);
  auto r = parse_aio_config_text(
      R"({"block_size": 262144, "queue_depth": 8, "intra_op_parallelism": 2, "single_submit": true,
          "overlap_events": false, "allow_buffered_io": true})");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r.value().block_size, 262144u);
  EXPECT_EQ(r.value().queue_depth, 8);
  EXPECT_EQ(r.value().intra_op_parallelism, 2);
  EXPECT_TRUE(r.value().single_submit);
  EXPECT_FALSE(r.value().overlap_events);
  EXPECT_TRUE(r.value().allow_buffered_io);
}

TEST(AioConfig, BadValuesNameTheKey) {
  expect_error(R"({"use_gds": true})", "aio.use_gds: unknown key");
  expect_error(R"({"block_size": 1000})", "aio.block_size = 1000: expected an integer in 4096 .. 67108864");
  expect_error(R"({"block_size": 5000})", "aio.block_size: 5000: must be a power of two");
  expect_error(R"({"block_size": 1e30})", "aio.block_size = 1e+30: expected an integer in 4096 .. 67108864");
  expect_error(R"({"block_size": 99999999999999999999})", "aio.block_size = 1e+20: expected an integer");
  expect_error(R"({"block_size": "1M"})", "aio.block_size: expected an integer, got \"1M\"");
  expect_error(R"({"queue_depth": 0})", "aio.queue_depth = 0: expected an integer in 1 .. 1024");
  expect_error(R"({"intra_op_parallelism": 65})", "aio.intra_op_parallelism = 65: expected an integer in 1 .. 64");
  expect_error(R"({"single_submit": 1})", "aio.single_submit: expected true or false");
  expect_error(R"([1, 2])", "aio: expected an object");
  expect_error(R"({"queue_depth": )", "aio: line 1, column 16: syntax error");
  expect_error(R"({"queue_depth": 1e999})", "aio: number overflow");
}

}  // namespace
}  // namespace strata::offload
