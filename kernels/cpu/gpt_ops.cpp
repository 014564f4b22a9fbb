// GPT layers on the CPU: oneDNN matmuls (primitives cached by oneDNN itself), oneTBB loops over
// rows or heads for the rest. Accumulations that decide the result (LayerNorm moments, softmax
// sums, the loss) run in float per row in a fixed order, or in double, so results do not depend
// on the thread count.
#include "kernels/cpu/gpt_ops.h"

#include <algorithm>
#include <cmath>
#include <dnnl.hpp>
#include <vector>

#include "kernels/cpu/parallel.h"

namespace strata::kernels::gpt {
namespace {

template <class F>
void rows(int n, F&& f) {
  kernels::parallel_for(tbb::blocked_range<int>(0, n, 4), [&](const tbb::blocked_range<int>& r) {
    for (int i = r.begin(); i < r.end(); ++i) f(i);
  });
}

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream{eng};
};
Dnnl& dnnl_ctx() {
  static Dnnl d;
  return d;
}

using dt = dnnl::memory::data_type;
using dims = dnnl::memory::dims;

// dst[M,N] (= or +=) a[M,K] @ b[K,N] (+ bias[N]); each operand given by its strides.
Status gemm(float* dst, const float* a, dims a_strides, const float* b, dims b_strides, const float* bias, int64_t M,
            int64_t K, int64_t N, bool accumulate) {
  try {
    Dnnl& d = dnnl_ctx();
    const dnnl::memory::desc a_md({M, K}, dt::f32, a_strides), b_md({K, N}, dt::f32, b_strides),
        c_md({M, N}, dt::f32, dims{N, 1}), bias_md({1, N}, dt::f32, dims{N, 1});
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    const dnnl::matmul::desc desc =
        bias != nullptr ? dnnl::matmul::desc(a_md, b_md, bias_md, c_md) : dnnl::matmul::desc(a_md, b_md, c_md);
    const dnnl::matmul::primitive_desc pd(desc, attr, d.eng);
    dnnl::memory am(a_md, d.eng, const_cast<float*>(a)), bm(b_md, d.eng, const_cast<float*>(b)), cm(c_md, d.eng, dst);
    std::unordered_map<int, dnnl::memory> args{{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}};
    if (bias != nullptr) args.emplace(DNNL_ARG_BIAS, dnnl::memory(bias_md, d.eng, const_cast<float*>(bias)));
    dnnl::matmul(pd).execute(d.stream, args);
    d.stream.wait();
  } catch (const dnnl::error& e) {
    return internal_error(std::string("oneDNN matmul [") + std::to_string(M) + " x " + std::to_string(K) + "] @ [" +
                          std::to_string(K) + " x " + std::to_string(N) + "]: " + e.what());
  }
  return Status::ok();
}

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2/pi)

}  // namespace

void encoder_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B, int T, int C) {
  rows(B * T, [&](int n) {
    const float* e = wte + static_cast<size_t>(tokens[n]) * C;
    const float* p = wpe + static_cast<size_t>(n % T) * C;
    float* o = out + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
  });
}

void encoder_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B, int T, int C) {
  // Split over channels: each task owns columns [c0, c1) of every row, so no two tasks collide.
  kernels::parallel_for(tbb::blocked_range<int>(0, C, 64), [&](const tbb::blocked_range<int>& r) {
    for (int n = 0; n < B * T; ++n) {
      const float* d = dout + static_cast<size_t>(n) * C;
      float* de = dwte + static_cast<size_t>(tokens[n]) * C;
      float* dp = dwpe + static_cast<size_t>(n % T) * C;
      for (int c = r.begin(); c < r.end(); ++c) {
        de[c] += d[c];
        dp[c] += d[c];
      }
    }
  });
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, int N,
                       int C) {
  rows(N, [&](int n) {
    const float* xn = x + static_cast<size_t>(n) * C;
    float m = 0;
    for (int c = 0; c < C; ++c) m += xn[c];
    m /= static_cast<float>(C);
    float v = 0;
    for (int c = 0; c < C; ++c) v += (xn[c] - m) * (xn[c] - m);
    v /= static_cast<float>(C);
    const float s = 1.0f / std::sqrt(v + 1e-5f);
    float* on = out + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) on[c] = (xn[c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  });
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, int N, int C) {
  rows(N, [&](int n) {
    const float* xn = x + static_cast<size_t>(n) * C;
    const float* dn = dout + static_cast<size_t>(n) * C;
    float* dxn = dx + static_cast<size_t>(n) * C;
    float dnorm_mean = 0, dnorm_norm_mean = 0;
    for (int c = 0; c < C; ++c) {
      const float norm = (xn[c] - mean[n]) * rstd[n];
      const float dnorm = dn[c] * w[c];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
    }
    dnorm_mean /= static_cast<float>(C);
    dnorm_norm_mean /= static_cast<float>(C);
    for (int c = 0; c < C; ++c) {
      const float norm = (xn[c] - mean[n]) * rstd[n];
      dxn[c] = (dn[c] * w[c] - dnorm_mean - norm * dnorm_norm_mean) * rstd[n];
    }
  });
  // Parameter gradients: columns split across tasks, rows summed in order.
  kernels::parallel_for(tbb::blocked_range<int>(0, C, 64), [&](const tbb::blocked_range<int>& r) {
    for (int n = 0; n < N; ++n) {
      const float* xn = x + static_cast<size_t>(n) * C;
      const float* dn = dout + static_cast<size_t>(n) * C;
      for (int c = r.begin(); c < r.end(); ++c) {
        dw[c] += dn[c] * (xn[c] - mean[n]) * rstd[n];
        db[c] += dn[c];
      }
    }
  });
}

Status matmul_forward(float* out, const float* x, const float* w, const float* bias, int N, int C, int OC) {
  // b = w^T: [C, OC] with strides (1, C).
  return gemm(out, x, dims{C, 1}, w, dims{1, C}, bias, N, C, OC, false);
}

Status matmul_backward(float* dx, float* dw, float* dbias, const float* dout, const float* x, const float* w, int N,
                       int C, int OC) {
  STRATA_RETURN_IF_ERROR(gemm(dx, dout, dims{OC, 1}, w, dims{C, 1}, nullptr, N, OC, C, false));
  // dw[OC, C] += dout^T [OC, N] (strides (1, OC)) @ x [N, C]
  STRATA_RETURN_IF_ERROR(gemm(dw, dout, dims{1, OC}, x, dims{C, 1}, nullptr, OC, N, C, true));
  if (dbias != nullptr) {
    kernels::parallel_for(tbb::blocked_range<int>(0, OC, 64), [&](const tbb::blocked_range<int>& r) {
      for (int n = 0; n < N; ++n) {
        const float* d = dout + static_cast<size_t>(n) * OC;
        for (int o = r.begin(); o < r.end(); ++o) dbias[o] += d[o];
      }
    });
  }
  return Status::ok();
}

void attention_forward(float* out, float* att, const float* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  rows(B * NH * T, [&](int i) {
    const int t = i % T, h = (i / T) % NH, b = i / (T * NH);
    const float* q = qkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
    float* a = att + static_cast<size_t>(i) * T;
    float mx = -INFINITY;
    for (int u = 0; u <= t; ++u) {
      const float* k = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
      float s = 0;
      for (int j = 0; j < hs; ++j) s += q[j] * k[j];
      a[u] = s * scale;
      mx = std::max(mx, a[u]);
    }
    float sum = 0;
    for (int u = 0; u <= t; ++u) {
      a[u] = std::exp(a[u] - mx);
      sum += a[u];
    }
    const float inv = 1.0f / sum;
    for (int u = 0; u < T; ++u) a[u] = u <= t ? a[u] * inv : 0.0f;
    float* o = out + (static_cast<size_t>(b) * T + t) * C + h * hs;
    for (int j = 0; j < hs; ++j) o[j] = 0;
    for (int u = 0; u <= t; ++u) {
      const float* v = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
      for (int j = 0; j < hs; ++j) o[j] += a[u] * v[j];
    }
  });
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* att, int B, int T, int C,
                        int NH) {
  const int hs = C / NH;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  // One task per (batch, head): dk and dv of position u gather from every t >= u of that head.
  rows(B * NH, [&](int bh) {
    const int b = bh / NH, h = bh % NH;
    for (int t = 0; t < T; ++t) {
      float* row = dqkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
      for (int j = 0; j < hs; ++j) row[j] = row[C + j] = row[2 * C + j] = 0;
    }
    std::vector<float> datt(T), dpre(T);
    for (int t = 0; t < T; ++t) {
      const float* a = att + (static_cast<size_t>(bh) * T + t) * T;
      const float* d = dout + (static_cast<size_t>(b) * T + t) * C + h * hs;
      for (int u = 0; u <= t; ++u) {
        const float* v = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
        float* dv = dqkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
        float s = 0;
        for (int j = 0; j < hs; ++j) {
          s += d[j] * v[j];
          dv[j] += a[u] * d[j];
        }
        datt[u] = s;
      }
      float dot = 0;
      for (int u = 0; u <= t; ++u) dot += a[u] * datt[u];
      for (int u = 0; u <= t; ++u) dpre[u] = a[u] * (datt[u] - dot) * scale;
      const float* q = qkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
      float* dq = dqkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
      for (int u = 0; u <= t; ++u) {
        const float* k = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
        float* dk = dqkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
        for (int j = 0; j < hs; ++j) {
          dq[j] += dpre[u] * k[j];
          dk[j] += dpre[u] * q[j];
        }
      }
    }
  });
}

void gelu_forward(float* out, const float* x, size_t n) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, n, 4096), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i < r.end(); ++i) {
      // 0.5 x (1 + tanh(u)) = x * sigmoid(2u): one exp, and no cancellation where tanh(u) ~ -1.
      const float v = x[i];
      out[i] = v / (1.0f + std::exp(-2.0f * kGeluC * (v + 0.044715f * v * v * v)));
    }
  });
}

void gelu_backward(float* dx, const float* dout, const float* x, size_t n) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, n, 4096), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i < r.end(); ++i) {
      // With s = sigmoid(2u): gelu = x s, d gelu / dx = s + x s (1 - s) 2 u'.
      const float v = x[i];
      const float sg = 1.0f / (1.0f + std::exp(-2.0f * kGeluC * (v + 0.044715f * v * v * v)));
      const float du = kGeluC * (1.0f + 3.0f * 0.044715f * v * v);
      dx[i] = dout[i] * (sg + v * sg * (1.0f - sg) * 2.0f * du);
    }
  });
}

void residual_forward(float* out, const float* a, const float* b, size_t n) {
  kernels::parallel_for(tbb::blocked_range<size_t>(0, n, 16384), [&](const tbb::blocked_range<size_t>& r) {
    for (size_t i = r.begin(); i < r.end(); ++i) out[i] = a[i] + b[i];
  });
}

double crossentropy_forward(float* probs, const float* logits, const int32_t* targets, int N, int V) {
  std::vector<double> loss(static_cast<size_t>(N));
  rows(N, [&](int n) {
    const float* l = logits + static_cast<size_t>(n) * V;
    float* p = probs + static_cast<size_t>(n) * V;
    float mx = -INFINITY;
    for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    double sum = 0;
    for (int v = 0; v < V; ++v) {
      p[v] = std::exp(l[v] - mx);
      sum += p[v];
    }
    const float inv = static_cast<float>(1.0 / sum);
    for (int v = 0; v < V; ++v) p[v] *= inv;
    loss[static_cast<size_t>(n)] = -(static_cast<double>(l[targets[n]] - mx) - std::log(sum));
  });
  double total = 0;
  for (double x : loss) total += x;  // in order: independent of the thread count
  return total / N;
}

void crossentropy_backward(float* dlogits, const float* probs, const int32_t* targets, float dloss, int N, int V) {
  const float s = dloss / static_cast<float>(N);
  rows(N, [&](int n) {
    const float* p = probs + static_cast<size_t>(n) * V;
    float* d = dlogits + static_cast<size_t>(n) * V;
    for (int v = 0; v < V; ++v) d[v] = (p[v] - (v == targets[n] ? 1.0f : 0.0f)) * s;
  });
}

}  // namespace strata::kernels::gpt
