// The GPT model's forward and backward against the same network composed from the double
// reference layers (kernels/reference/gpt_ref.h, themselves checked by finite differences): the
// loss and every param's gradient; activation checkpointing changes nothing; every param is
// fetched and released in pairs and its gradient handed over exactly once.
#include "src/train/gpt.h"

#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "kernels/reference/gpt_ref.h"

namespace strata::train {
namespace {

namespace ref = strata::reference;

const GptShape kShape{2, 2, 16, 37, 8};
constexpr int B = 2, T = 7;

// fp32 params in memory; records fetch / release balance and the gradients.
class Memory final : public ParamSource {
 public:
  explicit Memory(const GptShape& s) {
    for (const ParamInfo& p : gpt_params(s)) {
      std::vector<float> v(p.numel());
      gpt_init(s, p, 5, v.data());
      // Non-trivial LayerNorm affine parts and biases, so their gradients are exercised.
      if (p.shape.size() == 1) {
        std::mt19937 g(static_cast<uint32_t>(p.name.size() * 131 + p.name[0]));
        std::normal_distribution<float> d(0.0f, 0.1f);
        for (float& x : v) x += d(g);
      }
      values[p.name] = std::move(v);
    }
  }
  StatusOr<const void*> fetch(const std::string& n) override {
    ++fetched[n];
    ++outstanding;
    return static_cast<const void*>(values.at(n).data());
  }
  Status release(const std::string&) override {
    --outstanding;
    return Status::ok();
  }
  Status grad(const std::string& n, const float* g, size_t count) override {
    EXPECT_EQ(grads.count(n), 0u) << n << " handed twice";
    EXPECT_EQ(count, values.at(n).size()) << n;
    grads[n].assign(g, g + count);
    order.push_back(n);
    return Status::ok();
  }
  DType dtype() const override { return DType::kF32; }

  std::map<std::string, std::vector<float>> values, grads;
  std::map<std::string, int> fetched;
  std::vector<std::string> order;
  int outstanding = 0;
};

std::vector<double> as_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// The network from reference layers, in double: returns the loss and fills the gradients.
double reference_run(const std::map<std::string, std::vector<float>>& pf, const std::vector<int32_t>& in,
                     const std::vector<int32_t>& tgt, float scale, std::map<std::string, std::vector<double>>* grads) {
  const int C = kShape.channels, NH = kShape.heads, V = kShape.vocab, L = kShape.layers, N = B * T;
  std::map<std::string, std::vector<double>> p;
  for (const auto& [n, v] : pf) {
    p[n] = as_double(v);
    (*grads)[n].assign(v.size(), 0.0);
  }
  auto P = [&](int l, const char* part) { return p.at("h" + std::to_string(l) + "." + part).data(); };
  auto G = [&](int l, const char* part) { return (*grads).at("h" + std::to_string(l) + "." + part).data(); };
  struct Acts {
    std::vector<double> ln1, m1, r1, qkv, att, atty, proj, res2, ln2, m2, r2, fch, gelu, fcproj;
  };
  std::vector<std::vector<double>> xs(L + 1, std::vector<double>(N * C));
  std::vector<Acts> acts(L);
  ref::encoder_forward(xs[0].data(), in.data(), p.at("wte").data(), p.at("wpe").data(), B, T, C);
  for (int l = 0; l < L; ++l) {
    Acts& a = acts[l];
    a.ln1.resize(N * C), a.m1.resize(N), a.r1.resize(N), a.qkv.resize(N * 3 * C), a.att.resize(B * NH * T * T);
    a.atty.resize(N * C), a.proj.resize(N * C), a.res2.resize(N * C), a.ln2.resize(N * C), a.m2.resize(N),
        a.r2.resize(N);
    a.fch.resize(N * 4 * C), a.gelu.resize(N * 4 * C), a.fcproj.resize(N * C);
    ref::layernorm_forward(a.ln1.data(), a.m1.data(), a.r1.data(), xs[l].data(), P(l, "ln1.w"), P(l, "ln1.b"), N, C);
    ref::matmul_forward(a.qkv.data(), a.ln1.data(), P(l, "qkv.w"), P(l, "qkv.b"), N, C, 3 * C);
    ref::attention_forward(a.atty.data(), a.att.data(), a.qkv.data(), B, T, C, NH);
    ref::matmul_forward(a.proj.data(), a.atty.data(), P(l, "proj.w"), P(l, "proj.b"), N, C, C);
    for (int i = 0; i < N * C; ++i) a.res2[i] = xs[l][i] + a.proj[i];
    ref::layernorm_forward(a.ln2.data(), a.m2.data(), a.r2.data(), a.res2.data(), P(l, "ln2.w"), P(l, "ln2.b"), N, C);
    ref::matmul_forward(a.fch.data(), a.ln2.data(), P(l, "fc.w"), P(l, "fc.b"), N, C, 4 * C);
    ref::gelu_forward(a.gelu.data(), a.fch.data(), a.fch.size());
    ref::matmul_forward(a.fcproj.data(), a.gelu.data(), P(l, "fcproj.w"), P(l, "fcproj.b"), N, 4 * C, C);
    for (int i = 0; i < N * C; ++i) xs[l + 1][i] = a.res2[i] + a.fcproj[i];
  }
  std::vector<double> lnf(N * C), mf(N), rf(N), logits(N * V), probs(N * V);
  ref::layernorm_forward(lnf.data(), mf.data(), rf.data(), xs[L].data(), p.at("lnf.w").data(), p.at("lnf.b").data(), N,
                         C);
  ref::matmul_forward(logits.data(), lnf.data(), p.at("wte").data(), nullptr, N, C, V);
  const double loss = ref::crossentropy_forward(probs.data(), logits.data(), tgt.data(), N, V);

  std::vector<double> dlogits(N * V), dlnf(N * C), dx(N * C), dres2(N * C), dtmp(N * C), d4(N * 4 * C), d4b(N * 4 * C),
      dln(N * C), datty(N * C), dqkv(N * 3 * C);
  ref::crossentropy_backward(dlogits.data(), probs.data(), tgt.data(), scale, N, V);
  ref::matmul_backward(dlnf.data(), (*grads)["wte"].data(), nullptr, dlogits.data(), lnf.data(), p.at("wte").data(), N,
                       C, V);
  ref::layernorm_backward(dx.data(), (*grads)["lnf.w"].data(), (*grads)["lnf.b"].data(), dlnf.data(), xs[L].data(),
                          p.at("lnf.w").data(), mf.data(), rf.data(), N, C);
  for (int l = L - 1; l >= 0; --l) {
    const Acts& a = acts[l];
    dres2 = dx;
    ref::matmul_backward(d4.data(), G(l, "fcproj.w"), G(l, "fcproj.b"), dx.data(), a.gelu.data(), P(l, "fcproj.w"), N,
                         4 * C, C);
    ref::gelu_backward(d4b.data(), d4.data(), a.fch.data(), d4.size());
    ref::matmul_backward(dln.data(), G(l, "fc.w"), G(l, "fc.b"), d4b.data(), a.ln2.data(), P(l, "fc.w"), N, C, 4 * C);
    ref::layernorm_backward(dtmp.data(), G(l, "ln2.w"), G(l, "ln2.b"), dln.data(), a.res2.data(), P(l, "ln2.w"),
                            a.m2.data(), a.r2.data(), N, C);
    for (int i = 0; i < N * C; ++i) dres2[i] += dtmp[i];
    ref::matmul_backward(datty.data(), G(l, "proj.w"), G(l, "proj.b"), dres2.data(), a.atty.data(), P(l, "proj.w"), N,
                         C, C);
    ref::attention_backward(dqkv.data(), datty.data(), a.qkv.data(), a.att.data(), B, T, C, NH);
    ref::matmul_backward(dln.data(), G(l, "qkv.w"), G(l, "qkv.b"), dqkv.data(), a.ln1.data(), P(l, "qkv.w"), N, C,
                         3 * C);
    ref::layernorm_backward(dtmp.data(), G(l, "ln1.w"), G(l, "ln1.b"), dln.data(), xs[l].data(), P(l, "ln1.w"),
                            a.m1.data(), a.r1.data(), N, C);
    for (int i = 0; i < N * C; ++i) dx[i] = dres2[i] + dtmp[i];
  }
  ref::encoder_backward((*grads)["wte"].data(), (*grads)["wpe"].data(), dx.data(), in.data(), B, T, C);
  return loss;
}

std::vector<int32_t> tokens(uint32_t seed) {
  std::mt19937 g(seed);
  std::vector<int32_t> t(B * T);
  for (auto& x : t) x = static_cast<int32_t>(g() % kShape.vocab);
  return t;
}

TEST(GptModel, LossAndEveryGradientMatchTheReferenceNetwork) {
  for (bool ckpt : {false, true}) {
    auto m = GptModel::create(kShape, B, T, ckpt);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    Memory src(kShape);
    const auto in = tokens(1), tgt = tokens(2);
    const float scale = 8.0f;
    auto loss = m.value()->train_micro(src, in.data(), tgt.data(), scale);
    ASSERT_TRUE(loss.is_ok()) << loss.status().to_string();
    std::map<std::string, std::vector<double>> want;
    const double want_loss = reference_run(src.values, in, tgt, scale, &want);
    EXPECT_NEAR(loss.value(), want_loss, 1e-5 * want_loss);
    EXPECT_GT(want_loss, 0.5 * std::log(static_cast<double>(kShape.vocab)));  // an untrained model is near uniform
    EXPECT_EQ(src.outstanding, 0) << "every fetch released";
    ASSERT_EQ(src.grads.size(), src.values.size()) << "a gradient for every param";
    for (const auto& [n, g] : src.grads) {
      double gmax = 0;
      for (double x : want.at(n)) gmax = std::max(gmax, std::abs(x));
      ASSERT_GT(gmax, 0.0) << n << ": a zero reference gradient tests nothing";
      for (size_t i = 0; i < g.size(); ++i)
        ASSERT_TRUE(std::abs(g[i] - want.at(n)[i]) <= 1e-4 * gmax + 1e-3 * std::abs(want.at(n)[i]))
            << n << "[" << i << "]: " << g[i] << " vs " << want.at(n)[i] << " (checkpointing " << ckpt << ")";
    }
    // Fetched in forward and again in backward (blocks); gradients from the output back.
    EXPECT_EQ(src.fetched.at("h0.qkv.w"), 2);
    EXPECT_EQ(src.fetched.at("wte"), 1);
    EXPECT_EQ(src.order.front(), "lnf.w");
    EXPECT_EQ(src.order.back(), "wpe");
  }
}

TEST(GptModel, CheckpointingGivesIdenticalGradients) {
  const auto in = tokens(3), tgt = tokens(4);
  Memory a(kShape), b(kShape);
  auto plain = GptModel::create(kShape, B, T, false), ckpt = GptModel::create(kShape, B, T, true);
  ASSERT_TRUE(plain.is_ok() && ckpt.is_ok());
  ASSERT_TRUE(plain.value()->train_micro(a, in.data(), tgt.data(), 1.0f).is_ok());
  ASSERT_TRUE(ckpt.value()->train_micro(b, in.data(), tgt.data(), 1.0f).is_ok());
  EXPECT_EQ(a.grads, b.grads);
  EXPECT_LT(ckpt.value()->activation_bytes(), plain.value()->activation_bytes());
}

// The memory a run of the CPU path will hold, computed before anything is allocated (to refuse a
// run that cannot fit), equals what the model holds once it has trained a micro-batch.
TEST(GptModel, CpuMemoryIsKnownBeforeAllocating) {
  const auto in = tokens(3), tgt = tokens(4);
  for (const GptShape& s : {kShape, GptShape{3, 4, 32, 256, 8}})
    for (bool ckpt : {false, true})
      for (int b : {1, 2}) {
        auto m = GptModel::create(s, b, T, ckpt);
        ASSERT_TRUE(m.is_ok());
        Memory src(s);
        std::vector<int32_t> i(in.begin(), in.begin() + b * T), t(tgt.begin(), tgt.begin() + b * T);
        for (auto& x : i) x %= s.vocab;
        for (auto& x : t) x %= s.vocab;
        ASSERT_TRUE(m.value()->train_micro(src, i.data(), t.data(), 1.0f).is_ok());
        EXPECT_EQ(gpt_cpu_model_bytes(s, b, T, ckpt), m.value()->activation_bytes())
            << s.layers << " layers, " << s.channels << " channels, batch " << b << (ckpt ? ", checkpointed" : "");
      }
  // A shape far beyond any machine comes out as a number to refuse, not a wrapped one.
  EXPECT_EQ(gpt_cpu_model_bytes(GptShape{4096, 4096, 65536, 256, 1 << 20}, 1 << 20, 1 << 20, false), SIZE_MAX);
}

TEST(GptModel, BadShapesAndTokensAreRefused) {
  EXPECT_EQ(GptModel::create(GptShape{2, 3, 16, 37, 8}, 1, 4, false).status().code(), StatusCode::kInvalidArgument);
  auto m = GptModel::create(kShape, B, T, false);
  ASSERT_TRUE(m.is_ok());
  EXPECT_NE(GptModel::create(kShape, 1, 9, false).status().to_string().find("exceeds the model's max_seq 8"),
            std::string::npos);
  Memory src(kShape);
  auto in = tokens(5);
  in[3] = kShape.vocab;
  auto r = m.value()->eval_loss(src, in.data(), in.data());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(gpt_preset("gpt-9").status().to_string().find("choose tiny, gpt2-124m"), std::string::npos);
  auto g = gpt_preset("gpt2-124m");
  ASSERT_TRUE(g.is_ok());
  // 124 M in GPT-2 with its 50257-token vocabulary; with bytes (256) the embedding is small.
  EXPECT_NEAR(static_cast<double>(g.value().num_params()), 85.9e6, 0.2e6);
  // The ~7B preset of issue 17: 32 layers x 4096 channels, 12 C^2 per layer plus small terms.
  auto big = gpt_preset("gpt-7b");
  ASSERT_TRUE(big.is_ok());
  EXPECT_NEAR(static_cast<double>(big.value().num_params()), 12.0 * 4096 * 4096 * 32, 0.01e9);
}

}  // namespace
}  // namespace strata::train
