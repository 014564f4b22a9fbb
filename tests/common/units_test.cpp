// The number parsers and printers every flag and key goes through: sizes with suffixes, counts and
// rates within their ranges; out of range, overflow, junk and NaN refused with the name and range.
#include <gtest/gtest.h>

#include <cmath>
#include <string>

#include "src/common/units.h"

namespace strata {
namespace {

void expect_error(const Status& s, const std::string& needle) {
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.to_string();
  EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
}

TEST(Units, FormatBytesPicksAUnitThatShowsTheValue) {
  EXPECT_EQ(format_bytes(0), "0 B");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(16384), "16.0 KiB");  // was "0.0 MiB" in the emulated device's name
  EXPECT_EQ(format_bytes(2200 * 1024), "2.1 MiB");
  EXPECT_EQ(format_bytes(uint64_t{3} << 30), "3.00 GiB");
  EXPECT_EQ(format_bytes(uint64_t{1} << 56), "64.00 PiB");
  EXPECT_EQ(format_bytes(UINT64_MAX), "16.00 EiB");
}

TEST(Units, SizesWithSuffixes) {
  EXPECT_EQ(parse_size("4096", "--x").value(), 4096u);
  EXPECT_EQ(parse_size("64K", "--x").value(), 65536u);
  EXPECT_EQ(parse_size("2200k", "--x").value(), 2200u * 1024);
  EXPECT_EQ(parse_size("1.5G", "--x").value(), uint64_t{3} << 29);
  EXPECT_EQ(parse_size("512MiB", "--x").value(), uint64_t{512} << 20);
  EXPECT_EQ(parse_size("2TB", "--x").value(), uint64_t{2} << 40);
  EXPECT_EQ(parse_size("1e3", "--x").value(), 1000u);
}

TEST(Units, SizesOutOfRangeOrMalformedAreRefusedByName) {
  expect_error(parse_size("1e30", "--device-memory").status(),
               "--device-memory 1e30: more than the largest size accepted here, 64.00 PiB");
  expect_error(parse_size("1e400", "--device-memory").status(), "more than the largest size");
  expect_error(parse_size("99999999999999999999G", "--host-memory").status(),
               "--host-memory 99999999999999999999G: more than");
  expect_error(parse_size("-5", "--chunk-size").status(), "--chunk-size -5: a size cannot be negative");
  expect_error(parse_size("1K", "--chunk-size", 4096).status(),
               "--chunk-size 1K: less than the smallest size accepted here, 4.0 KiB");
  for (const char* junk : {"", "x", "64Q", "nan", "inf", "0x10", "+5", "5 M", "1.5.5", "M"})
    expect_error(parse_size(junk, "--x").status(), "expected a size in bytes");
}

TEST(Units, CountsAreWholeAndInRange) {
  EXPECT_EQ(parse_count("7", "--steps", 1, 10).value(), 7);
  EXPECT_EQ(parse_count("+7", "--steps", 1, 10).value(), 7);
  expect_error(parse_count("99999999999999999999", "--steps", 1, 1000).status(),
               "--steps 99999999999999999999: out of range: expected an integer in 1 .. 1000");
  expect_error(parse_count("0", "--batch", 1, 10).status(), "--batch 0: out of range");
  expect_error(parse_count("-3", "--batch", 1, 10).status(), "out of range");
  for (const char* junk : {"", "x", "1.5", "1e3", "3x", " 3"})
    expect_error(parse_count(junk, "--steps", 1, 10).status(), "expected an integer in 1 .. 10");
}

TEST(Units, RatesAreFiniteAndInRange) {
  EXPECT_DOUBLE_EQ(parse_rate("3e-4", "--lr", 0, 1).value(), 3e-4);
  expect_error(parse_rate("1e30", "--lr", 1e-30, 1e6).status(),
               "--lr 1e30: out of range: expected a number in [1.0000000000000001e-30, 1000000]");
  expect_error(parse_rate("nan", "--lr", 0, 1).status(), "expected a number");
  expect_error(parse_rate("1e999", "--lr", 0, 1).status(), "out of range");
  expect_error(parse_rate("0.1.", "--lr", 0, 1).status(), "expected a number");
}

TEST(Units, WholeInRangeForParsedNumbers) {
  EXPECT_EQ(whole_in_range(5e7, "k", "5e7", 0, int64_t{1} << 40).value(), 50000000);
  expect_error(whole_in_range(2.5, "k", "2.5", 0, 10).status(), "k = 2.5: expected an integer in 0 .. 10");
  expect_error(whole_in_range(1e30, "k", "1e30", 0, 10).status(), "k = 1e30");
  expect_error(whole_in_range(NAN, "k", "NaN", 0, 10).status(), "k = NaN");
  EXPECT_EQ(whole_in_range(0x1p63, "k", "2^63", 0, INT64_MAX).value(), INT64_MAX);
}

}  // namespace
}  // namespace strata
