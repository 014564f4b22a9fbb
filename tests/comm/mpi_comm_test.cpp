// The MPI backend under mpirun (ctest runs it with 1, 2 and 4 ranks): every collective, element
// type and in-place form against its closed form over the ranks' contributions; a collective a
// peer joins too late times out within the communicator's timeout, names itself, and leaves the
// communicator refusing work — and the program able to carry on.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "comm/communicator.h"
#include "kernels/reference/half.h"

namespace strata::comm {
namespace {

std::unique_ptr<Communicator> world(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  CommOptions o;
  o.timeout = timeout;
  auto c = create_mpi(o);
  EXPECT_TRUE(c.is_ok()) << c.status().to_string();
  return std::move(c).value();
}

// Rank r's i-th contribution: small integers, exact in every element type and in their sums.
double contribution(int r, size_t i) { return static_cast<double>((r + 1) * static_cast<int>(i % 7 + 1)); }

std::vector<unsigned char> encode(const std::vector<double>& v, Elem e) {
  std::vector<unsigned char> out(v.size() * elem_size(e));
  for (size_t i = 0; i < v.size(); ++i) {
    unsigned char* p = out.data() + i * elem_size(e);
    if (e == Elem::kF32) {
      const float f = static_cast<float>(v[i]);
      std::memcpy(p, &f, 4);
    } else if (e == Elem::kF64) {
      std::memcpy(p, &v[i], 8);
    } else if (e == Elem::kI32) {
      const int32_t x = static_cast<int32_t>(v[i]);
      std::memcpy(p, &x, 4);
    } else {
      const uint16_t h = e == Elem::kBF16 ? reference::float_to_bf16(static_cast<float>(v[i]))
                                          : reference::float_to_fp16(static_cast<float>(v[i]));
      std::memcpy(p, &h, 2);
    }
  }
  return out;
}

double decode(const unsigned char* p, Elem e) {
  if (e == Elem::kF32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  if (e == Elem::kF64) {
    double d;
    std::memcpy(&d, p, 8);
    return d;
  }
  if (e == Elem::kI32) {
    int32_t x;
    std::memcpy(&x, p, 4);
    return x;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return e == Elem::kBF16 ? reference::bf16_to_float(h) : reference::fp16_to_float(h);
}

const Elem kElems[] = {Elem::kF32, Elem::kF64, Elem::kI32, Elem::kBF16, Elem::kF16};

TEST(MpiComm, RankAndSizeAreMpirunsWorld) {
  auto c = world();
  const char* size = std::getenv("OMPI_COMM_WORLD_SIZE");
  const char* rank = std::getenv("OMPI_COMM_WORLD_RANK");
  EXPECT_EQ(c->size(), size ? std::atoi(size) : 1);
  EXPECT_EQ(c->rank(), rank ? std::atoi(rank) : 0);
  EXPECT_EQ(c->backend(), "mpi");
  EXPECT_EQ(launched_with_several_ranks(), c->size() > 1);
  EXPECT_TRUE(c->barrier().is_ok());
}

TEST(MpiComm, AllReduceSumsAndMaxesEveryElementTypeInAndOutOfPlace) {
  auto c = world();
  const int n = c->size();
  const size_t count = 100003;
  for (Elem e : kElems) {
    std::vector<double> mine(count);
    for (size_t i = 0; i < count; ++i) mine[i] = contribution(c->rank(), i);
    for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kMax}) {
      std::vector<unsigned char> send = encode(mine, e), out(send.size(), 0xAB), inplace = send;
      ASSERT_TRUE(c->all_reduce_sync(send.data(), out.data(), count, e, op).is_ok()) << elem_name(e);
      ASSERT_TRUE(c->all_reduce_sync(inplace.data(), inplace.data(), count, e, op).is_ok()) << elem_name(e);
      for (size_t i = 0; i < count; ++i) {
        const double k = static_cast<double>(i % 7 + 1);
        const double want = op == ReduceOp::kSum ? k * n * (n + 1) / 2 : k * n;
        ASSERT_EQ(decode(out.data() + i * elem_size(e), e), want) << elem_name(e) << " " << i;
        ASSERT_EQ(decode(inplace.data() + i * elem_size(e), e), want) << elem_name(e) << " in place " << i;
      }
    }
  }
}

TEST(MpiComm, ReduceScatterLeavesEachRankItsReducedShard) {
  auto c = world();
  const int n = c->size(), r = c->rank();
  const size_t count = 4099;  // per rank
  for (Elem e : kElems) {
    std::vector<double> mine(count * n);
    for (size_t i = 0; i < mine.size(); ++i) mine[i] = contribution(r, i);
    std::vector<unsigned char> send = encode(mine, e), out(count * elem_size(e), 0xAB), inplace = send;
    ASSERT_TRUE(c->reduce_scatter(send.data(), out.data(), count, e, ReduceOp::kSum).value()->wait().is_ok());
    unsigned char* home = inplace.data() + static_cast<size_t>(r) * count * elem_size(e);
    ASSERT_TRUE(c->reduce_scatter(inplace.data(), home, count, e, ReduceOp::kSum).value()->wait().is_ok());
    for (size_t i = 0; i < count; ++i) {
      const size_t g = static_cast<size_t>(r) * count + i;
      const double want = static_cast<double>(g % 7 + 1) * n * (n + 1) / 2;
      ASSERT_EQ(decode(out.data() + i * elem_size(e), e), want) << elem_name(e) << " " << i;
      ASSERT_EQ(decode(home + i * elem_size(e), e), want) << elem_name(e) << " in place " << i;
    }
  }
}

TEST(MpiComm, AllGatherConcatenatesInRankOrder) {
  auto c = world();
  const int n = c->size(), r = c->rank();
  const size_t count = 1025;
  for (Elem e : kElems) {
    std::vector<double> mine(count);
    for (size_t i = 0; i < count; ++i) mine[i] = contribution(r, i);
    const std::vector<unsigned char> send = encode(mine, e);
    std::vector<unsigned char> out(send.size() * n, 0xAB), inplace(send.size() * n, 0xCD);
    std::memcpy(inplace.data() + static_cast<size_t>(r) * send.size(), send.data(), send.size());
    ASSERT_TRUE(c->all_gather(send.data(), out.data(), count, e).value()->wait().is_ok());
    ASSERT_TRUE(c->all_gather(inplace.data() + static_cast<size_t>(r) * send.size(), inplace.data(), count, e)
                    .value()
                    ->wait()
                    .is_ok());
    for (int from = 0; from < n; ++from)
      for (size_t i = 0; i < count; ++i) {
        const size_t at = (static_cast<size_t>(from) * count + i) * elem_size(e);
        ASSERT_EQ(decode(out.data() + at, e), contribution(from, i)) << elem_name(e) << " from " << from;
        ASSERT_EQ(decode(inplace.data() + at, e), contribution(from, i)) << elem_name(e) << " in place from " << from;
      }
  }
}

TEST(MpiComm, BroadcastFromEveryRoot) {
  auto c = world();
  for (int root = 0; root < c->size(); ++root) {
    std::vector<double> v(777, c->rank() == root ? 1.5 * (root + 1) : -1.0);
    ASSERT_TRUE(c->broadcast_sync(v.data(), v.size(), Elem::kF64, root).is_ok());
    for (double x : v) ASSERT_EQ(x, 1.5 * (root + 1));
  }
  std::vector<double> v(4);
  auto bad = c->broadcast(v.data(), v.size(), Elem::kF64, c->size());
  ASSERT_FALSE(bad.is_ok());
  EXPECT_NE(bad.status().message().find("root"), std::string::npos) << bad.status().to_string();
}

TEST(MpiComm, ACollectiveAPeerJoinsTooLateTimesOutNamingItselfAndBreaksOnlyThatCommunicator) {
  auto other = world();  // coordinates the ranks afterwards
  if (other->size() < 2) GTEST_SKIP() << "needs 2 ranks (run under mpirun -np 2 or more)";
  const auto timeout = std::chrono::milliseconds(300);
  std::vector<float> buf(1000, 1.0f);  // outlives `late`, which settles the timed-out collective
  auto late = world(timeout);
  if (late->rank() == 1) {
    std::this_thread::sleep_for(timeout * 5);  // everyone else has given up by now
    EXPECT_TRUE(late->all_reduce_sync(buf.data(), buf.data(), buf.size(), Elem::kF32, ReduceOp::kSum).is_ok());
  } else {
    const auto t0 = std::chrono::steady_clock::now();
    Status s = late->all_reduce_sync(buf.data(), buf.data(), buf.size(), Elem::kF32, ReduceOp::kSum);
    const auto waited = std::chrono::steady_clock::now() - t0;
    ASSERT_EQ(s.code(), StatusCode::kTimeout) << s.to_string();
    EXPECT_NE(s.message().find("all_reduce of 1000 x fp32 across " + std::to_string(late->size()) + " ranks"),
              std::string::npos)
        << s.message();
    EXPECT_LT(waited, timeout * 3) << "the wait ended near the timeout";
    Status again = late->barrier();
    EXPECT_EQ(again.code(), StatusCode::kComm) << again.to_string();
    EXPECT_NE(again.message().find("takes no more work"), std::string::npos) << again.message();
  }
  EXPECT_TRUE(other->barrier().is_ok()) << "the other communicator still works";
}

}  // namespace
}  // namespace strata::comm
