// A small multi-layer perceptron (tanh hidden layers, linear output, mean squared error) with
// forward and backward in plain loops over bit16 parameters, for training-equivalence tests and
// the engine benchmark. It reads parameters and hands gradients through ParamAccess, so the same
// model runs on the engine (fetch / grad / release) or on plain in-memory arrays.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/reference/half.h"
#include "src/common/dtype.h"

namespace strata::testing {

class ParamAccess {
 public:
  virtual ~ParamAccess() = default;
  // bit16 values of the param, valid until release.
  virtual const uint16_t* fetch(const std::string& name) = 0;
  virtual void release(const std::string& name) = 0;
  // The param's gradient, in the same bit16 dtype.
  virtual void grad(const std::string& name, const uint16_t* g, size_t n) = 0;
};

inline float widen(uint16_t h, DType dt) {
  return dt == DType::kF16 ? reference::fp16_to_float(h) : reference::bf16_to_float(h);
}
inline uint16_t narrow(float f, DType dt) {
  return dt == DType::kF16 ? reference::float_to_fp16(f) : reference::float_to_bf16(f);
}

struct MlpShape {
  int in = 32, hidden = 64, out = 8;
  int hidden_layers = 5;  // hidden -> hidden layers after the first
  int batch = 16;
};

class Mlp {
 public:
  struct Layer {
    std::string w, b;
    int fan_in, fan_out;
  };

  explicit Mlp(const MlpShape& s) : s_(s) {
    int fan_in = s.in;
    for (int l = 0; l <= s.hidden_layers + 1; ++l) {
      const int fan_out = l == s.hidden_layers + 1 ? s.out : s.hidden;
      layers_.push_back(
          {"layer" + std::to_string(l) + ".weight", "layer" + std::to_string(l) + ".bias", fan_in, fan_out});
      fan_in = fan_out;
    }
  }
  const std::vector<Layer>& layers() const { return layers_; }
  const MlpShape& shape() const { return s_; }
  size_t numel() const {
    size_t n = 0;
    for (const Layer& l : layers_) n += static_cast<size_t>(l.fan_in + 1) * l.fan_out;
    return n;
  }

  // Initial values: weights U(-1/sqrt(fan_in), 1/sqrt(fan_in)), biases U(-0.1, 0.1).
  std::vector<float> init(const Layer& l, bool weight, uint32_t seed) const {
    std::mt19937 rng(seed * 7919u + static_cast<uint32_t>(l.fan_in * 31 + l.fan_out) + (weight ? 0u : 1u));
    const float r = weight ? 1.0f / std::sqrt(static_cast<float>(l.fan_in)) : 0.1f;
    std::uniform_real_distribution<float> u(-r, r);
    std::vector<float> v(static_cast<size_t>(weight ? l.fan_in * l.fan_out : l.fan_out));
    for (float& x : v) x = u(rng);
    return v;
  }

  // A batch: x uniform in [-1, 1], target y_j = sin(1.5 x_j + 0.5 x_{j+1}).
  void batch(uint32_t seed, std::vector<float>* x, std::vector<float>* y) const {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    x->resize(static_cast<size_t>(s_.batch * s_.in));
    y->resize(static_cast<size_t>(s_.batch * s_.out));
    for (float& v : *x) v = u(rng);
    for (int b = 0; b < s_.batch; ++b)
      for (int j = 0; j < s_.out; ++j)
        (*y)[static_cast<size_t>(b * s_.out + j)] = std::sin(1.5f * (*x)[static_cast<size_t>(b * s_.in + j)] +
                                                             0.5f * (*x)[static_cast<size_t>(b * s_.in + j + 1)]);
  }

  // One micro-batch: forward (fetch, use, release each layer), loss, backward (fetch again, hand
  // over dW and db rounded to bit16, release). Gradients are of loss * loss_scale. Returns the
  // (unscaled) loss. `poison` >= 0 replaces gradient element 0 of that layer's weight by inf.
  double train_micro(ParamAccess& a, const std::vector<float>& x, const std::vector<float>& y, DType dt,
                     double loss_scale, int poison = -1) const {
    const int B = s_.batch;
    const size_t L = layers_.size();
    std::vector<std::vector<float>> act(L + 1);
    act[0] = x;
    for (size_t l = 0; l < L; ++l) {
      const Layer& ly = layers_[l];
      const uint16_t* w = a.fetch(ly.w);
      const uint16_t* bias = a.fetch(ly.b);
      std::vector<float>& o = act[l + 1];
      o.assign(static_cast<size_t>(B * ly.fan_out), 0.0f);
      for (int b = 0; b < B; ++b)
        for (int j = 0; j < ly.fan_out; ++j) {
          float z = widen(bias[j], dt);
          for (int i = 0; i < ly.fan_in; ++i)
            z += widen(w[j * ly.fan_in + i], dt) * act[l][static_cast<size_t>(b * ly.fan_in + i)];
          o[static_cast<size_t>(b * ly.fan_out + j)] = l + 1 < L ? std::tanh(z) : z;
        }
      a.release(ly.b);
      a.release(ly.w);
    }
    double loss = 0.0;
    const std::vector<float>& out = act[L];
    std::vector<float> dz(out.size());
    const double norm = 1.0 / (static_cast<double>(B) * s_.out);
    for (size_t i = 0; i < out.size(); ++i) {
      const double d = static_cast<double>(out[i]) - y[i];
      loss += 0.5 * d * d * norm;
      dz[i] = static_cast<float>(d * norm * loss_scale);
    }
    for (size_t l = L; l-- > 0;) {
      const Layer& ly = layers_[l];
      const uint16_t* w = a.fetch(ly.w);
      a.fetch(ly.b);
      std::vector<uint16_t> gw(static_cast<size_t>(ly.fan_in * ly.fan_out)), gb(static_cast<size_t>(ly.fan_out));
      for (int j = 0; j < ly.fan_out; ++j) {
        float sb = 0.0f;
        for (int b = 0; b < B; ++b) sb += dz[static_cast<size_t>(b * ly.fan_out + j)];
        gb[static_cast<size_t>(j)] = narrow(sb, dt);
        for (int i = 0; i < ly.fan_in; ++i) {
          float s = 0.0f;
          for (int b = 0; b < B; ++b)
            s += dz[static_cast<size_t>(b * ly.fan_out + j)] * act[l][static_cast<size_t>(b * ly.fan_in + i)];
          gw[static_cast<size_t>(j * ly.fan_in + i)] = narrow(s, dt);
        }
      }
      if (poison == static_cast<int>(l)) gw[0] = dt == DType::kF16 ? 0x7C00 : 0x7F80;  // +inf
      if (l > 0) {
        std::vector<float> da(static_cast<size_t>(B * ly.fan_in), 0.0f);
        for (int b = 0; b < B; ++b)
          for (int i = 0; i < ly.fan_in; ++i) {
            float s = 0.0f;
            for (int j = 0; j < ly.fan_out; ++j)
              s += widen(w[j * ly.fan_in + i], dt) * dz[static_cast<size_t>(b * ly.fan_out + j)];
            const float av = act[l][static_cast<size_t>(b * ly.fan_in + i)];
            da[static_cast<size_t>(b * ly.fan_in + i)] = s * (1.0f - av * av);
          }
        dz.swap(da);
      }
      a.grad(ly.w, gw.data(), gw.size());
      a.grad(ly.b, gb.data(), gb.size());
      a.release(ly.b);
      a.release(ly.w);
    }
    return loss;
  }

 private:
  MlpShape s_;
  std::vector<Layer> layers_;
};

}  // namespace strata::testing
