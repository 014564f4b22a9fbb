// The reference GPT layers against finite differences: for a random projection R, the backward
// of loss = sum(out * R) must equal the central difference of that loss in every input and
// parameter element (double precision, tiny shapes).
#include "kernels/reference/gpt_ref.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

namespace strata::reference {
namespace {

constexpr int B = 2, T = 5, C = 8, NH = 2, V = 11, N = B * T;
constexpr double kH = 1e-6;

std::vector<double> randn(size_t n, uint32_t seed, double scale = 1.0) {
  std::mt19937 g(seed);
  std::normal_distribution<double> d(0.0, scale);
  std::vector<double> v(n);
  for (double& x : v) x = d(g);
  return v;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Checks grad (analytic, d loss / d x) against central differences of loss() in every x[i].
void expect_grad(std::vector<double>& x, const std::vector<double>& grad, const std::function<double()>& loss,
                 const char* what) {
  ASSERT_EQ(x.size(), grad.size());
  double worst = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + kH;
    const double up = loss();
    x[i] = keep - kH;
    const double down = loss();
    x[i] = keep;
    const double num = (up - down) / (2 * kH);
    const double err = std::abs(num - grad[i]) / (1e-6 + std::abs(num));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
  }
  EXPECT_LT(worst, 1e-5) << what;
}

TEST(GptReference, EncoderGradients) {
  std::vector<int32_t> tok = {1, 4, 4, 0, 10, 3, 3, 7, 2, 1};
  auto wte = randn(V * C, 1), wpe = randn(T * C, 2), R = randn(N * C, 3);
  std::vector<double> out(N * C);
  auto loss = [&] {
    encoder_forward(out.data(), tok.data(), wte.data(), wpe.data(), B, T, C);
    return dot(out, R);
  };
  std::vector<double> dwte(V * C, 0.0), dwpe(T * C, 0.0);
  encoder_backward(dwte.data(), dwpe.data(), R.data(), tok.data(), B, T, C);
  expect_grad(wte, dwte, loss, "wte");
  expect_grad(wpe, dwpe, loss, "wpe");
}

TEST(GptReference, LayerNormGradients) {
  auto x = randn(N * C, 4, 2.0), w = randn(C, 5), b = randn(C, 6), R = randn(N * C, 7);
  std::vector<double> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), N, C);
    return dot(out, R);
  };
  (void)loss();
  std::vector<double> dx(N * C), dw(C, 0.0), db(C, 0.0);
  layernorm_backward(dx.data(), dw.data(), db.data(), R.data(), x.data(), w.data(), mean.data(), rstd.data(), N, C);
  expect_grad(x, dx, loss, "x");
  expect_grad(w, dw, loss, "w");
  expect_grad(b, db, loss, "b");
  // Each output row is normalised: mean 0, variance 1 before the affine part (w = 1, b = 0).
  std::vector<double> ones(C, 1.0), zeros(C, 0.0);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(), N, C);
  double m = 0, v = 0;
  for (int c = 0; c < C; ++c) m += out[c];
  for (int c = 0; c < C; ++c) v += out[c] * out[c];
  EXPECT_NEAR(m / C, 0.0, 1e-12);
  EXPECT_NEAR(v / C, 1.0, 1e-4);  // eps 1e-5 in the variance
}

TEST(GptReference, MatmulGradients) {
  const int OC = 6;
  auto x = randn(N * C, 8), w = randn(OC * C, 9), bias = randn(OC, 10), R = randn(N * OC, 11);
  std::vector<double> out(N * OC);
  auto loss = [&] {
    matmul_forward(out.data(), x.data(), w.data(), bias.data(), N, C, OC);
    return dot(out, R);
  };
  std::vector<double> dx(N * C), dw(OC * C, 0.0), dbias(OC, 0.0);
  matmul_backward(dx.data(), dw.data(), dbias.data(), R.data(), x.data(), w.data(), N, C, OC);
  expect_grad(x, dx, loss, "x");
  expect_grad(w, dw, loss, "w");
  expect_grad(bias, dbias, loss, "bias");
}

TEST(GptReference, AttentionGradientsAndCausality) {
  auto qkv = randn(N * 3 * C, 12), R = randn(N * C, 13);
  std::vector<double> out(N * C), att(static_cast<size_t>(B) * NH * T * T);
  auto loss = [&] {
    attention_forward(out.data(), att.data(), qkv.data(), B, T, C, NH);
    return dot(out, R);
  };
  (void)loss();
  std::vector<double> dqkv(N * 3 * C);
  attention_backward(dqkv.data(), R.data(), qkv.data(), att.data(), B, T, C, NH);
  expect_grad(qkv, dqkv, loss, "qkv");
  // Causal: changing the last position's k / v leaves every earlier output unchanged.
  const std::vector<double> before = out;
  for (int i = C; i < 3 * C; ++i) qkv[(static_cast<size_t>(0) * T + T - 1) * 3 * C + i] += 1.0;
  (void)loss();
  for (int t = 0; t < T - 1; ++t)
    for (int c = 0; c < C; ++c) EXPECT_EQ(out[static_cast<size_t>(t) * C + c], before[static_cast<size_t>(t) * C + c]);
}

TEST(GptReference, GeluGradientsAndValues) {
  auto x = randn(64, 14, 2.0), R = randn(64, 15);
  std::vector<double> out(64);
  auto loss = [&] {
    gelu_forward(out.data(), x.data(), x.size());
    return dot(out, R);
  };
  std::vector<double> dx(64);
  gelu_backward(dx.data(), R.data(), x.data(), x.size());
  expect_grad(x, dx, loss, "x");
  double o = 0, z = 0;
  const double one = 1.0, zero = 0.0;
  gelu_forward(&o, &one, 1);
  gelu_forward(&z, &zero, 1);
  EXPECT_NEAR(o, 0.8411919906082768, 1e-12);  // GPT-2's tanh GELU at 1
  EXPECT_EQ(z, 0.0);
}

TEST(GptReference, CrossEntropyGradientsAndUniformLoss) {
  auto logits = randn(N * V, 16);
  std::vector<int32_t> tgt = {0, 3, 10, 2, 2, 9, 1, 5, 7, 4};
  std::vector<double> probs(N * V);
  auto loss = [&] { return crossentropy_forward(probs.data(), logits.data(), tgt.data(), N, V); };
  (void)loss();
  std::vector<double> dl(N * V);
  crossentropy_backward(dl.data(), probs.data(), tgt.data(), 1.0, N, V);
  expect_grad(logits, dl, loss, "logits");
  std::vector<double> flat(N * V, 0.25);
  EXPECT_NEAR(crossentropy_forward(probs.data(), flat.data(), tgt.data(), N, V), std::log(static_cast<double>(V)),
              1e-12);
}

}  // namespace
}  // namespace strata::reference
