// ChunkLayout against brute-force checks: every parameter inside its chunk, in registration order,
// aligned and disjoint; chunks padded to the world size; shards that partition every chunk and
// give each rank exactly 1/N; the errors that name the parameter.
#include "src/engine/chunk_layout.h"

#include <gtest/gtest.h>

#include <vector>

namespace strata::engine {
namespace {

std::vector<ParamSpec> model(uint32_t seed, int n) {
  std::vector<ParamSpec> ps;
  uint32_t x = seed;
  for (int i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    const int64_t a = 1 + (x >> 8) % 300, b = 1 + (x >> 20) % 97;
    ps.push_back(ParamSpec{"layer" + std::to_string(i) + (i % 2 ? ".weight" : ".bias"),
                           i % 2 ? std::vector<int64_t>{a, b} : std::vector<int64_t>{a}});
  }
  ps.push_back(ParamSpec{"huge.embedding", {5000, 13}});  // larger than a chunk
  ps.push_back(ParamSpec{"scalar", {}});
  return ps;
}

void check_invariants(const ChunkLayout& l, const std::vector<ParamSpec>& ps, size_t chunk_elems) {
  ASSERT_EQ(l.params().size(), ps.size());
  size_t sum = 0;
  uint32_t prev_chunk = 0;
  size_t prev_end = 0;
  for (size_t i = 0; i < ps.size(); ++i) {
    const ParamSlot& s = l.params()[i];
    size_t numel = 1;
    for (int64_t d : ps[i].shape) numel *= static_cast<size_t>(d);
    EXPECT_EQ(s.name, ps[i].name);
    EXPECT_EQ(s.numel, numel);
    EXPECT_EQ(s.offset % kParamAlignElems, 0u);
    ASSERT_LT(s.chunk, l.chunks().size());
    EXPECT_LE(s.offset + s.numel, l.chunks()[s.chunk].numel) << s.name << " runs past its chunk";
    // Registration order, no overlap: same chunk after the previous one, or a later chunk.
    if (i > 0) {
      EXPECT_GE(s.chunk, prev_chunk);
      if (s.chunk == prev_chunk) {
        EXPECT_GE(s.offset, prev_end) << s.name << " overlaps its predecessor";
      } else {
        EXPECT_EQ(s.chunk, prev_chunk + 1) << "an empty chunk in between";
      }
    }
    prev_chunk = s.chunk;
    prev_end = s.offset + s.numel;
    EXPECT_EQ(l.find(s.name), &s);
    sum += numel;
  }
  EXPECT_EQ(l.param_numel(), sum);
  size_t total = 0;
  const size_t w = static_cast<size_t>(l.world());
  for (size_t c = 0; c < l.chunks().size(); ++c) {
    const ChunkInfo& ch = l.chunks()[c];
    EXPECT_EQ(ch.numel % w, 0u);
    EXPECT_EQ(ch.shard_numel * w, ch.numel);
    EXPECT_GE(ch.numel, ch.numel_used);
    EXPECT_FALSE(ch.params.empty());
    const size_t aligned = (ch.numel_used + 63) / 64 * 64;
    EXPECT_EQ(ch.numel, (aligned + w - 1) / w * w) << "a chunk shrinks to what it holds, aligned, padded to the world";
    if (c + 1 < l.chunks().size()) {
      const ParamSlot& next = l.params()[l.chunks()[c + 1].params.front()];
      EXPECT_GT(aligned + next.numel, std::max(chunk_elems, ch.numel_used))
          << "chunk " << c << " closed though " << next.name << " fit";
    }
    // The shards partition the chunk: consecutive, equal, covering [0, numel).
    for (int r = 0; r < l.world(); ++r) EXPECT_EQ(l.shard_begin(static_cast<uint32_t>(c), r), ch.shard_numel * r);
    total += ch.numel;
  }
  EXPECT_EQ(l.total_numel(), total);
  EXPECT_EQ(l.owned_numel() * w, total) << "each rank owns exactly 1/N";
}

class Layouts : public ::testing::TestWithParam<std::tuple<int, size_t>> {};

TEST_P(Layouts, PackShardAndAccount) {
  const auto [world, chunk_elems] = GetParam();
  const std::vector<ParamSpec> ps = model(static_cast<uint32_t>(world * 7 + chunk_elems), 60);
  for (int rank = 0; rank < world; ++rank) {
    auto l = ChunkLayout::build(ps, chunk_elems, world, rank);
    ASSERT_TRUE(l.is_ok()) << l.status().to_string();
    EXPECT_EQ(l.value().rank(), rank);
    check_invariants(l.value(), ps, chunk_elems);
  }
  // Rank does not change the layout, only which shard is owned.
  auto l0 = ChunkLayout::build(ps, chunk_elems, world, 0).value();
  auto ln = ChunkLayout::build(ps, chunk_elems, world, world - 1).value();
  ASSERT_EQ(l0.chunks().size(), ln.chunks().size());
  for (size_t c = 0; c < l0.chunks().size(); ++c) EXPECT_EQ(l0.chunks()[c].numel, ln.chunks()[c].numel);
}

INSTANTIATE_TEST_SUITE_P(WorldsAndChunkSizes, Layouts,
                         ::testing::Combine(::testing::Values(1, 2, 3, 4, 8),
                                            ::testing::Values(size_t{64}, size_t{4096}, size_t{1} << 16)));

TEST(ChunkLayout, OversizedParameterGetsItsOwnChunkAndChunksShrink) {
  std::vector<ParamSpec> ps = {{"a", {100}}, {"big", {10000}}, {"b", {10}}};
  auto l = ChunkLayout::build(ps, 1024, 4, 1).value();
  ASSERT_EQ(l.chunks().size(), 3u);
  EXPECT_EQ(l.chunks()[0].numel, 128u);    // 100 elements, aligned to 64
  EXPECT_EQ(l.chunks()[1].numel, 10048u);  // its own size, aligned to 64
  EXPECT_EQ(l.find("big")->chunk, 1u);
  EXPECT_EQ(l.chunks()[2].numel, 64u);  // 10 elements, aligned, padded to 4 ranks
  EXPECT_EQ(l.owned_numel(), (128u + 10048u + 64u) / 4);
  EXPECT_EQ(l.find("nope"), nullptr);
}

TEST(ChunkLayout, ErrorsNameTheProblem) {
  auto expect = [](std::vector<ParamSpec> ps, size_t chunk, int world, int rank, const char* needle) {
    auto l = ChunkLayout::build(ps, chunk, world, rank);
    ASSERT_FALSE(l.is_ok()) << needle;
    EXPECT_EQ(l.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(l.status().message().find(needle), std::string::npos) << l.status().message();
  };
  expect({{"w", {4}}, {"w", {5}}}, 1024, 1, 0, "parameter 'w' is registered twice");
  expect({{"w", {4, 0}}}, 1024, 1, 0, "parameter 'w': dimension 0 must be >= 1");
  expect({{"w", {-3}}}, 1024, 1, 0, "dimension -3");
  expect({{"", {4}}}, 1024, 1, 0, "parameter 0 has an empty name");
  expect({{"w", {1LL << 40, 1LL << 40}}}, 1024, 1, 0, "element count overflows");
  expect({{"w", {4}}}, 16, 1, 0, "chunk size of 16 elements");
  expect({{"w", {4}}}, 1024, 0, 0, "world size 0");
  expect({{"w", {4}}}, 1024, 2, 2, "rank 2: must be in 0 .. 1");
  auto empty = ChunkLayout::build({}, 1024, 2, 0);
  ASSERT_TRUE(empty.is_ok());
  EXPECT_EQ(empty.value().total_numel(), 0u);
}

}  // namespace
}  // namespace strata::engine
