// The CPU GPT layers (fp32, oneDNN matmuls, oneTBB loops) against the double reference layers
// of kernels/reference/gpt_ref.h on the same inputs: forward outputs, saved statistics and every
// gradient, within fp32 rounding. A comparison fails on NaN.
#include "kernels/cpu/gpt_ops.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/reference/gpt_ref.h"

namespace strata::kernels::gpt {
namespace {

constexpr int B = 2, T = 16, C = 64, NH = 4, V = 256, N = B * T;

struct Both {
  std::vector<float> f;
  std::vector<double> d;
};
Both randn(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 g(seed);
  std::normal_distribution<float> dist(0.0f, static_cast<float>(scale));
  Both r{std::vector<float>(n), std::vector<double>(n)};
  for (size_t i = 0; i < n; ++i) r.d[i] = r.f[i] = dist(g);
  return r;
}
Both zeros(size_t n) { return Both{std::vector<float>(n, 0.0f), std::vector<double>(n, 0.0)}; }

// |got - want| <= atol + rtol * |want| everywhere; written so that NaN fails.
void expect_close(const std::vector<float>& got, const std::vector<double>& want, double atol, double rtol,
                  const char* what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!(std::abs(got[i] - want[i]) <= atol + rtol * std::abs(want[i]))) {
      if (bad++ == 0) first = i;
    }
  }
  EXPECT_EQ(bad, 0u) << what << ": first at " << first << ": " << got[first] << " vs " << want[first];
}

std::vector<int32_t> tokens(uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(N);
  for (auto& x : t) x = static_cast<int32_t>(g() % V);
  return t;
}

TEST(GptOps, Encoder) {
  auto tok = tokens(1);
  tok[3] = tok[20] = 7;  // two positions share a token row: its gradient sums both
  auto wte = randn(V * C, 2), wpe = randn(T * C, 3), dout = randn(N * C, 4);
  auto out = zeros(N * C), dwte = zeros(V * C), dwpe = zeros(T * C);
  encoder_forward(out.f.data(), tok.data(), wte.f.data(), wpe.f.data(), B, T, C);
  reference::encoder_forward(out.d.data(), tok.data(), wte.d.data(), wpe.d.data(), B, T, C);
  expect_close(out.f, out.d, 0, 1e-6, "out");
  encoder_backward(dwte.f.data(), dwpe.f.data(), dout.f.data(), tok.data(), B, T, C);
  reference::encoder_backward(dwte.d.data(), dwpe.d.data(), dout.d.data(), tok.data(), B, T, C);
  expect_close(dwte.f, dwte.d, 1e-6, 1e-6, "dwte");
  expect_close(dwpe.f, dwpe.d, 1e-6, 1e-6, "dwpe");
}

TEST(GptOps, LayerNorm) {
  auto x = randn(N * C, 5, 3.0), w = randn(C, 6), b = randn(C, 7), dout = randn(N * C, 8);
  auto out = zeros(N * C), mean = zeros(N), rstd = zeros(N), dx = zeros(N * C), dw = zeros(C), db = zeros(C);
  layernorm_forward(out.f.data(), mean.f.data(), rstd.f.data(), x.f.data(), w.f.data(), b.f.data(), N, C);
  reference::layernorm_forward(out.d.data(), mean.d.data(), rstd.d.data(), x.d.data(), w.d.data(), b.d.data(), N, C);
  expect_close(out.f, out.d, 1e-5, 1e-4, "out");
  expect_close(rstd.f, rstd.d, 0, 1e-5, "rstd");
  layernorm_backward(dx.f.data(), dw.f.data(), db.f.data(), dout.f.data(), x.f.data(), w.f.data(), mean.f.data(),
                     rstd.f.data(), N, C);
  reference::layernorm_backward(dx.d.data(), dw.d.data(), db.d.data(), dout.d.data(), x.d.data(), w.d.data(),
                                mean.d.data(), rstd.d.data(), N, C);
  expect_close(dx.f, dx.d, 1e-5, 1e-3, "dx");
  expect_close(dw.f, dw.d, 1e-4, 1e-4, "dw");
  expect_close(db.f, db.d, 1e-5, 1e-5, "db");
}

TEST(GptOps, MatmulWithAndWithoutBias) {
  for (bool with_bias : {true, false}) {
    const int OC = 3 * C;
    auto x = randn(N * C, 9), w = randn(OC * C, 10, 0.1), bias = randn(OC, 11), dout = randn(N * OC, 12);
    auto out = zeros(N * OC), dx = zeros(N * C), dw = randn(OC * C, 13), dbias = zeros(OC);  // dw: adds on top
    ASSERT_TRUE(
        matmul_forward(out.f.data(), x.f.data(), w.f.data(), with_bias ? bias.f.data() : nullptr, N, C, OC).is_ok());
    reference::matmul_forward(out.d.data(), x.d.data(), w.d.data(), with_bias ? bias.d.data() : nullptr, N, C, OC);
    expect_close(out.f, out.d, 1e-4, 1e-4, "out");
    ASSERT_TRUE(matmul_backward(dx.f.data(), dw.f.data(), with_bias ? dbias.f.data() : nullptr, dout.f.data(),
                                x.f.data(), w.f.data(), N, C, OC)
                    .is_ok());
    reference::matmul_backward(dx.d.data(), dw.d.data(), with_bias ? dbias.d.data() : nullptr, dout.d.data(),
                               x.d.data(), w.d.data(), N, C, OC);
    expect_close(dx.f, dx.d, 1e-4, 1e-4, "dx");
    expect_close(dw.f, dw.d, 1e-4, 1e-4, "dw (accumulated)");
    expect_close(dbias.f, dbias.d, 1e-5, 1e-5, "dbias");
  }
}

TEST(GptOps, Attention) {
  auto qkv = randn(N * 3 * C, 14), dout = randn(N * C, 15);
  auto out = zeros(N * C), att = zeros(static_cast<size_t>(B) * NH * T * T), dqkv = zeros(N * 3 * C);
  attention_forward(out.f.data(), att.f.data(), qkv.f.data(), B, T, C, NH);
  reference::attention_forward(out.d.data(), att.d.data(), qkv.d.data(), B, T, C, NH);
  expect_close(out.f, out.d, 1e-5, 1e-4, "out");
  expect_close(att.f, att.d, 1e-6, 1e-4, "att");
  attention_backward(dqkv.f.data(), dout.f.data(), qkv.f.data(), att.f.data(), B, T, C, NH);
  reference::attention_backward(dqkv.d.data(), dout.d.data(), qkv.d.data(), att.d.data(), B, T, C, NH);
  expect_close(dqkv.f, dqkv.d, 1e-5, 1e-3, "dqkv");
}

TEST(GptOps, GeluAndResidual) {
  const size_t n = 10000;
  auto x = randn(n, 16, 3.0), y = randn(n, 17), dout = randn(n, 18);
  auto out = zeros(n), dx = zeros(n), sum = zeros(n);
  gelu_forward(out.f.data(), x.f.data(), n);
  reference::gelu_forward(out.d.data(), x.d.data(), n);
  expect_close(out.f, out.d, 1e-6, 1e-5, "gelu");
  gelu_backward(dx.f.data(), dout.f.data(), x.f.data(), n);
  reference::gelu_backward(dx.d.data(), dout.d.data(), x.d.data(), n);
  expect_close(dx.f, dx.d, 1e-6, 1e-5, "dgelu");
  residual_forward(sum.f.data(), x.f.data(), y.f.data(), n);
  for (size_t i = 0; i < n; ++i) sum.d[i] = x.d[i] + y.d[i];
  expect_close(sum.f, sum.d, 0, 1e-7, "residual");
}

TEST(GptOps, CrossEntropy) {
  auto logits = randn(N * V, 19, 2.0);
  const auto tgt = tokens(20);
  auto probs = zeros(N * V), dl = zeros(N * V);
  const double loss = crossentropy_forward(probs.f.data(), logits.f.data(), tgt.data(), N, V);
  const double want = reference::crossentropy_forward(probs.d.data(), logits.d.data(), tgt.data(), N, V);
  EXPECT_NEAR(loss, want, 1e-5 * want);
  expect_close(probs.f, probs.d, 1e-8, 1e-4, "probs");
  crossentropy_backward(dl.f.data(), probs.f.data(), tgt.data(), 1.0f, N, V);
  reference::crossentropy_backward(dl.d.data(), probs.d.data(), tgt.data(), 1.0, N, V);
  expect_close(dl.f, dl.d, 1e-8, 1e-4, "dlogits");
}

}  // namespace
}  // namespace strata::kernels::gpt
