// Reference GPT layers in double (see gpt_ref.h). Straight loops after the math; no tricks.
#include "kernels/reference/gpt_ref.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace strata::reference {

void encoder_forward(double* out, const int32_t* tokens, const double* wte, const double* wpe, int B, int T, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      double* o = out + (static_cast<size_t>(b) * T + t) * C;
      const double* e = wte + static_cast<size_t>(tokens[b * T + t]) * C;
      const double* p = wpe + static_cast<size_t>(t) * C;
      for (int c = 0; c < C; ++c) o[c] = e[c] + p[c];
    }
}

void encoder_backward(double* dwte, double* dwpe, const double* dout, const int32_t* tokens, int B, int T, int C) {
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) {
      const double* d = dout + (static_cast<size_t>(b) * T + t) * C;
      double* de = dwte + static_cast<size_t>(tokens[b * T + t]) * C;
      double* dp = dwpe + static_cast<size_t>(t) * C;
      for (int c = 0; c < C; ++c) {
        de[c] += d[c];
        dp[c] += d[c];
      }
    }
}

void layernorm_forward(double* out, double* mean, double* rstd, const double* x, const double* w, const double* b,
                       int N, int C) {
  for (int n = 0; n < N; ++n) {
    const double* xn = x + static_cast<size_t>(n) * C;
    double m = 0;
    for (int c = 0; c < C; ++c) m += xn[c];
    m /= C;
    double v = 0;
    for (int c = 0; c < C; ++c) v += (xn[c] - m) * (xn[c] - m);
    v /= C;
    const double s = 1.0 / std::sqrt(v + 1e-5);
    double* on = out + static_cast<size_t>(n) * C;
    for (int c = 0; c < C; ++c) on[c] = (xn[c] - m) * s * w[c] + b[c];
    mean[n] = m;
    rstd[n] = s;
  }
}

void layernorm_backward(double* dx, double* dw, double* db, const double* dout, const double* x, const double* w,
                        const double* mean, const double* rstd, int N, int C) {
  for (int n = 0; n < N; ++n) {
    const double* xn = x + static_cast<size_t>(n) * C;
    const double* dn = dout + static_cast<size_t>(n) * C;
    double* dxn = dx + static_cast<size_t>(n) * C;
    // dnorm = dout * w; dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
    double dnorm_mean = 0, dnorm_norm_mean = 0;
    for (int c = 0; c < C; ++c) {
      const double norm = (xn[c] - mean[n]) * rstd[n];
      const double dnorm = dn[c] * w[c];
      dnorm_mean += dnorm;
      dnorm_norm_mean += dnorm * norm;
      dw[c] += dn[c] * norm;
      db[c] += dn[c];
    }
    dnorm_mean /= C;
    dnorm_norm_mean /= C;
    for (int c = 0; c < C; ++c) {
      const double norm = (xn[c] - mean[n]) * rstd[n];
      dxn[c] = (dn[c] * w[c] - dnorm_mean - norm * dnorm_norm_mean) * rstd[n];
    }
  }
}

void matmul_forward(double* out, const double* x, const double* w, const double* bias, int N, int C, int OC) {
  for (int n = 0; n < N; ++n)
    for (int o = 0; o < OC; ++o) {
      double s = bias != nullptr ? bias[o] : 0.0;
      for (int c = 0; c < C; ++c) s += x[static_cast<size_t>(n) * C + c] * w[static_cast<size_t>(o) * C + c];
      out[static_cast<size_t>(n) * OC + o] = s;
    }
}

void matmul_backward(double* dx, double* dw, double* dbias, const double* dout, const double* x, const double* w, int N,
                     int C, int OC) {
  for (int n = 0; n < N; ++n)
    for (int c = 0; c < C; ++c) {
      double s = 0;
      for (int o = 0; o < OC; ++o) s += dout[static_cast<size_t>(n) * OC + o] * w[static_cast<size_t>(o) * C + c];
      dx[static_cast<size_t>(n) * C + c] = s;
    }
  for (int o = 0; o < OC; ++o) {
    for (int n = 0; n < N; ++n) {
      const double d = dout[static_cast<size_t>(n) * OC + o];
      for (int c = 0; c < C; ++c) dw[static_cast<size_t>(o) * C + c] += d * x[static_cast<size_t>(n) * C + c];
      if (dbias != nullptr) dbias[o] += d;
    }
  }
}

void attention_forward(double* out, double* att, const double* qkv, int B, int T, int C, int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const double* q = qkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
        double* a = att + ((static_cast<size_t>(b) * NH + h) * T + t) * T;
        double mx = -INFINITY;
        for (int u = 0; u <= t; ++u) {
          const double* k = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
          double s = 0;
          for (int i = 0; i < hs; ++i) s += q[i] * k[i];
          a[u] = s * scale;
          mx = std::max(mx, a[u]);
        }
        double sum = 0;
        for (int u = 0; u <= t; ++u) {
          a[u] = std::exp(a[u] - mx);
          sum += a[u];
        }
        for (int u = 0; u < T; ++u) a[u] = u <= t ? a[u] / sum : 0.0;
        double* o = out + (static_cast<size_t>(b) * T + t) * C + h * hs;
        for (int i = 0; i < hs; ++i) o[i] = 0;
        for (int u = 0; u <= t; ++u) {
          const double* v = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
          for (int i = 0; i < hs; ++i) o[i] += a[u] * v[i];
        }
      }
}

void attention_backward(double* dqkv, const double* dout, const double* qkv, const double* att, int B, int T, int C,
                        int NH) {
  const int hs = C / NH;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hs));
  for (size_t i = 0; i < static_cast<size_t>(B) * T * 3 * C; ++i) dqkv[i] = 0;
  std::vector<double> datt(T), dpre(T);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < NH; ++h)
      for (int t = 0; t < T; ++t) {
        const double* a = att + ((static_cast<size_t>(b) * NH + h) * T + t) * T;
        const double* d = dout + (static_cast<size_t>(b) * T + t) * C + h * hs;
        // out = sum_u a[u] v[u]: datt[u] = d . v[u]; dv[u] += a[u] d
        for (int u = 0; u <= t; ++u) {
          const double* v = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
          double* dv = dqkv + (static_cast<size_t>(b) * T + u) * 3 * C + 2 * C + h * hs;
          double s = 0;
          for (int i = 0; i < hs; ++i) {
            s += d[i] * v[i];
            dv[i] += a[u] * d[i];
          }
          datt[u] = s;
        }
        // softmax: dpre[u] = a[u] (datt[u] - sum_w a[w] datt[w])
        double dot = 0;
        for (int u = 0; u <= t; ++u) dot += a[u] * datt[u];
        for (int u = 0; u <= t; ++u) dpre[u] = a[u] * (datt[u] - dot) * scale;
        const double* q = qkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
        double* dq = dqkv + (static_cast<size_t>(b) * T + t) * 3 * C + h * hs;
        for (int u = 0; u <= t; ++u) {
          const double* k = qkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
          double* dk = dqkv + (static_cast<size_t>(b) * T + u) * 3 * C + C + h * hs;
          for (int i = 0; i < hs; ++i) {
            dq[i] += dpre[u] * k[i];
            dk[i] += dpre[u] * q[i];
          }
        }
      }
}

namespace {
constexpr double kGeluC = 0.7978845608028654;  // sqrt(2/pi)
}

void gelu_forward(double* out, const double* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double v = x[i];
    out[i] = 0.5 * v * (1.0 + std::tanh(kGeluC * (v + 0.044715 * v * v * v)));
  }
}

void gelu_backward(double* dx, const double* dout, const double* x, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double v = x[i];
    const double u = kGeluC * (v + 0.044715 * v * v * v);
    const double th = std::tanh(u);
    const double du = kGeluC * (1.0 + 3.0 * 0.044715 * v * v);
    dx[i] = dout[i] * (0.5 * (1.0 + th) + 0.5 * v * (1.0 - th * th) * du);
  }
}

double crossentropy_forward(double* probs, const double* logits, const int32_t* targets, int N, int V) {
  double loss = 0;
  for (int n = 0; n < N; ++n) {
    const double* l = logits + static_cast<size_t>(n) * V;
    double* p = probs + static_cast<size_t>(n) * V;
    double mx = -INFINITY;
    for (int v = 0; v < V; ++v) mx = std::max(mx, l[v]);
    double sum = 0;
    for (int v = 0; v < V; ++v) {
      p[v] = std::exp(l[v] - mx);
      sum += p[v];
    }
    for (int v = 0; v < V; ++v) p[v] /= sum;
    loss -= std::log(p[targets[n]]);
  }
  return loss / N;
}

void crossentropy_backward(double* dlogits, const double* probs, const int32_t* targets, double dloss, int N, int V) {
  for (int n = 0; n < N; ++n)
    for (int v = 0; v < V; ++v) {
      const size_t i = static_cast<size_t>(n) * V + v;
      dlogits[i] = (probs[i] - (v == targets[n] ? 1.0 : 0.0)) * dloss / N;
    }
}

}  // namespace strata::reference
