/* The standalone optimizers of any type from C: Lion, Adagrad and AdamW stepped through
 * strata_cpu_optimizer_* and checked against plain double-precision updates written here; the
 * state names; argument errors named and nothing changed. Links only against libstrata.so. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "c_check.h"
#include "strata.h"

#define N 53
#define STEPS 5

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* finite values only */
}

static float grad_at(int step, int i) { return (float)sin(0.7 * i + 1.9 * step) * 0.8f + 0.05f; }

/* One optimizer run of STEPS steps against the double reference; wd 0.01, grad_scale 0.5. */
static void run_against_reference(const char* type, int nstate, const char* state0) {
  strata_cpu_optimizer_config_t cfg = STRATA_CPU_OPTIMIZER_CONFIG_INIT;
  cfg.type = type;
  cfg.num_threads = 2;
  strata_cpu_optimizer_t* opt = NULL;
  CHECK(strata_cpu_optimizer_create(&cfg, &opt) == STRATA_OK && opt != NULL, "%s create: %s", type,
        strata_last_error());
  if (opt == NULL) return;
  size_t count = 99;
  const char* names[2] = {NULL, NULL};
  CHECK(strata_cpu_optimizer_get_state(opt, names, 2, &count) == STRATA_OK && count == (size_t)nstate, "%s states %zu",
        type, count);
  CHECK(names[0] != NULL && strcmp(names[0], state0) == 0, "%s first state %s", type, names[0] ? names[0] : "(null)");
  const char* canon = NULL;
  CHECK(strata_cpu_optimizer_get_type(opt, &canon) == STRATA_OK && canon != NULL, "get_type");

  float p[N], s0[N], s1[N], g[N];
  uint16_t out[N];
  double rp[N], r0[N], r1[N];
  for (int i = 0; i < N; ++i) {
    p[i] = (float)cos(0.3 * i);
    s0[i] = s1[i] = 0.0f;
    rp[i] = p[i];
    r0[i] = r1[i] = 0.0;
  }
  const double lr = strcmp(type, "lion") == 0 ? 1e-3 : 1e-2, b1 = 0.9, b2 = 0.99, eps = 1e-8, wd = 0.01, scale = 0.5;
  for (int step = 1; step <= STEPS; ++step) {
    for (int i = 0; i < N; ++i) g[i] = grad_at(step, i);
    strata_optimizer_step_args_t a = STRATA_OPTIMIZER_STEP_ARGS_INIT;
    a.lr = (float)lr;
    a.beta1 = (float)b1;
    a.beta2 = (float)b2;
    a.eps = (float)eps;
    a.weight_decay = (float)wd;
    a.grad_scale = (float)scale;
    strata_optimizer_tensor_t t = {
        p, {s0, nstate > 1 ? s1 : NULL}, g, STRATA_DTYPE_FP32, STRATA_DTYPE_BF16, out, N, {NULL, NULL}};
    CHECK(strata_cpu_optimizer_step(opt, &a, &t, 1) == STRATA_OK, "%s step %d: %s", type, step, strata_last_error());
    for (int i = 0; i < N; ++i) {
      const double gi = (double)g[i] * scale;
      if (strcmp(type, "lion") == 0) {
        const double c = b1 * r0[i] + (1 - b1) * gi;
        rp[i] = rp[i] * (1 - lr * wd) - lr * (c > 0 ? 1.0 : c < 0 ? -1.0 : 0.0);
        r0[i] = b2 * r0[i] + (1 - b2) * gi;
      } else if (strcmp(type, "ADAGRAD") == 0) {
        const double gg = gi + wd * rp[i];
        r0[i] += gg * gg;
        rp[i] -= lr * gg / (sqrt(r0[i]) + eps);
      } else { /* AdamW with bias correction */
        rp[i] *= 1 - lr * wd;
        r0[i] = b1 * r0[i] + (1 - b1) * gi;
        r1[i] = b2 * r1[i] + (1 - b2) * gi * gi;
        const double bc1 = 1 - pow(b1, step), bc2 = 1 - pow(b2, step);
        rp[i] -= (lr / bc1) * r0[i] / (sqrt(r1[i]) / sqrt(bc2) + eps);
      }
    }
  }
  int bad = 0;
  for (int i = 0; i < N; ++i) {
    if (fabs(p[i] - rp[i]) > 2e-6 + 1e-5 * fabs(rp[i]) || fabs(s0[i] - r0[i]) > 1e-7 + 1e-5 * fabs(r0[i])) ++bad;
    if (out[i] != to_bf16(p[i])) ++bad;
  }
  CHECK(bad == 0, "%s: %d elements differ from the reference", type, bad);
  int64_t steps = 0;
  CHECK(strata_cpu_optimizer_get_step(opt, &steps) == STRATA_OK && steps == STEPS, "%s step count", type);

  /* Errors: nothing changes, the counter stays. */
  float before[N];
  memcpy(before, p, sizeof(p));
  strata_optimizer_step_args_t a = STRATA_OPTIMIZER_STEP_ARGS_INIT;
  strata_optimizer_tensor_t t = {p, {s0, s1}, g, STRATA_DTYPE_FP32, STRATA_DTYPE_BF16, NULL, N, {NULL, NULL}};
  if (nstate == 1) EXPECT_ERROR(strata_cpu_optimizer_step(opt, &a, &t, 1), STRATA_ERR_INVALID_ARGUMENT, "must be NULL");
  t.state[1] = nstate > 1 ? s1 : NULL;
  t.state[0] = p + 3;
  EXPECT_ERROR(strata_cpu_optimizer_step(opt, &a, &t, 1), STRATA_ERR_INVALID_ARGUMENT,
               "buffers overlap: tensor 0 params and tensor 0 ");
  t.state[0] = s0;
  a.beta1 = 1.5f;
  if (nstate == 1 && strcmp(type, "lion") == 0)
    EXPECT_ERROR(strata_cpu_optimizer_step(opt, &a, &t, 1), STRATA_ERR_INVALID_ARGUMENT,
                 "Lion hyper-parameter beta1 = 1.5");
  a.beta1 = 0.9f;
  a.eps = 0.0f;
  if (strcmp(type, "ADAGRAD") == 0)
    EXPECT_ERROR(strata_cpu_optimizer_step(opt, &a, &t, 1), STRATA_ERR_INVALID_ARGUMENT,
                 "Adagrad hyper-parameter eps = 0");
  CHECK(memcmp(before, p, sizeof(p)) == 0, "%s: a refused step changed the params", type);
  CHECK(strata_cpu_optimizer_get_step(opt, &steps) == STRATA_OK && steps == STEPS,
        "%s: a refused step moved the counter", type);
  CHECK(strata_cpu_optimizer_destroy(opt) == STRATA_OK, "destroy");
}

int main(void) {
  run_against_reference("lion", 1, "exp_avg");
  run_against_reference("ADAGRAD", 1, "sum");
  run_against_reference("AdamW", 2, "exp_avg");
  strata_cpu_optimizer_config_t cfg = STRATA_CPU_OPTIMIZER_CONFIG_INIT;
  cfg.type = "Sophia";
  strata_cpu_optimizer_t* opt = (strata_cpu_optimizer_t*)&cfg;
  EXPECT_ERROR(strata_cpu_optimizer_create(&cfg, &opt), STRATA_ERR_INVALID_ARGUMENT,
               "accepted: Adam, AdamW, Lion, Adagrad");
  CHECK(opt == NULL, "handle not cleared on error");
  CHECK(strata_cpu_optimizer_destroy(NULL) == STRATA_OK, "destroy(NULL)");
  printf("c_optimizer_test: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
