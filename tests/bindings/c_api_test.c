/* The C API from C: versions, status strings, the thread-local last error, every argument error
 * of the CPU Adam functions (each named in the message, nothing changed), and a few steps checked
 * against a plain double-precision Adam written here. Links only against libstrata.so. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_check.h"
#include "strata.h"

#define N 37

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16); /* finite values only */
}

static void test_version_and_status(void) {
  CHECK(strata_version() == STRATA_VERSION_CODE, "library %d vs header %d", strata_version(), STRATA_VERSION_CODE);
  char want[32];
  snprintf(want, sizeof(want), "%d.%d.%d", STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR, STRATA_VERSION_PATCH);
  CHECK(strcmp(strata_version_string(), want) == 0, "version string %s vs %s", strata_version_string(), want);
  CHECK(strcmp(strata_status_string(STRATA_OK), "success") == 0, "OK string");
  CHECK(strcmp(strata_status_string(STRATA_ERR_NO_SPACE), "no space left on device") == 0, "NO_SPACE string");
  for (int c = 0; c <= STRATA_ERR_CANCELLED; ++c)
    CHECK(strcmp(strata_status_string((strata_status_t)c), "unknown status") != 0, "code %d has a string", c);
  CHECK(strcmp(strata_status_string((strata_status_t)999), "unknown status") == 0, "unknown code");
}

static void test_create_errors(void) {
  strata_cpu_adam_config_t cfg = STRATA_CPU_ADAM_CONFIG_INIT;
  strata_cpu_adam_t* adam = (strata_cpu_adam_t*)&cfg; /* must be reset to NULL on error */
  EXPECT_ERROR(strata_cpu_adam_create(&cfg, NULL), STRATA_ERR_INVALID_ARGUMENT, "out is NULL");
  EXPECT_ERROR(strata_cpu_adam_create(NULL, &adam), STRATA_ERR_INVALID_ARGUMENT, "config is NULL");
  CHECK(adam == NULL, "handle not cleared on error");

  strata_cpu_adam_config_t zero;
  memset(&zero, 0, sizeof(zero));
  EXPECT_ERROR(strata_cpu_adam_create(&zero, &adam), STRATA_ERR_INVALID_ARGUMENT, "STRATA_CPU_ADAM_CONFIG_INIT");
  cfg.struct_size = sizeof(cfg) + 8;
  EXPECT_ERROR(strata_cpu_adam_create(&cfg, &adam), STRATA_ERR_INVALID_ARGUMENT, "struct_size");
  cfg.struct_size = sizeof(cfg);
  cfg.reserved[3] = 1;
  EXPECT_ERROR(strata_cpu_adam_create(&cfg, &adam), STRATA_ERR_INVALID_ARGUMENT, "reserved");
  cfg.reserved[3] = 0;
  cfg.mode = (strata_adam_mode_t)5;
  EXPECT_ERROR(strata_cpu_adam_create(&cfg, &adam), STRATA_ERR_INVALID_ARGUMENT, "mode");
  cfg.mode = STRATA_ADAMW;
  cfg.num_threads = -1;
  EXPECT_ERROR(strata_cpu_adam_create(&cfg, &adam), STRATA_ERR_INVALID_ARGUMENT, "num_threads = -1");
  CHECK(adam == NULL, "no handle on error");
  CHECK(strata_cpu_adam_destroy(NULL) == STRATA_OK, "destroy(NULL)");
}

typedef struct {
  float p[N], m[N], v[N], g[N];
  uint16_t out[N];
} bufs_t;

static void fill(bufs_t* b) {
  for (int i = 0; i < N; ++i) {
    b->p[i] = (float)(i - 18) / 20.0f;
    b->m[i] = 0.0f;
    b->v[i] = 0.0f;
    b->g[i] = (float)((i * 7) % 13 - 6) / 8.0f + 0.01f;
    b->out[i] = 0;
  }
}

static strata_adam_tensor_t tensor_of(bufs_t* b) {
  strata_adam_tensor_t t;
  memset(&t, 0, sizeof(t));
  t.params = b->p;
  t.exp_avg = b->m;
  t.exp_avg_sq = b->v;
  t.grads = b->g;
  t.grad_dtype = STRATA_DTYPE_FP32;
  t.params_out = b->out;
  t.out_dtype = STRATA_DTYPE_BF16;
  t.count = N;
  return t;
}

/* A step that must fail with INVALID_ARGUMENT naming `needle` and leave everything unchanged. */
static void expect_step_rejected(strata_cpu_adam_t* adam, const strata_adam_step_args_t* args,
                                 const strata_adam_tensor_t* ts, size_t n, const char* needle, const bufs_t* b) {
  bufs_t before = *b;
  int64_t step_before = -1, step_after = -2;
  strata_cpu_adam_get_step(adam, &step_before);
  EXPECT_ERROR(strata_cpu_adam_step(adam, args, ts, n), STRATA_ERR_INVALID_ARGUMENT, needle);
  strata_cpu_adam_get_step(adam, &step_after);
  CHECK(step_before == step_after, "counter moved on a rejected step (%s)", needle);
  CHECK(memcmp(&before, b, sizeof(before)) == 0, "buffers changed on a rejected step (%s)", needle);
}

static void test_step_errors(strata_cpu_adam_t* adam) {
  bufs_t b;
  fill(&b);
  strata_adam_step_args_t args = STRATA_ADAM_STEP_ARGS_INIT;
  strata_adam_tensor_t t = tensor_of(&b);

  EXPECT_ERROR(strata_cpu_adam_step(NULL, &args, &t, 1), STRATA_ERR_INVALID_ARGUMENT, "adam is NULL");
  expect_step_rejected(adam, NULL, &t, 1, "args is NULL", &b);
  expect_step_rejected(adam, &args, NULL, 1, "tensors is NULL", &b);
  expect_step_rejected(adam, &args, &t, 0, "num_tensors is 0", &b);

  strata_adam_step_args_t a = args;
  a.struct_size = 0;
  expect_step_rejected(adam, &a, &t, 1, "STRATA_ADAM_STEP_ARGS_INIT", &b);
  a = args;
  a.reserved[0] = 7;
  expect_step_rejected(adam, &a, &t, 1, "args.reserved", &b);

  struct {
    float* field;
    float value;
    const char* needle;
  } bad[] = {{&a.lr, -1.0f, "lr = -1"},
             {&a.lr, NAN, "lr = nan"},
             {&a.beta1, 1.0f, "beta1 = 1"},
             {&a.beta2, -0.5f, "beta2 = -0.5"},
             {&a.eps, 0.0f, "eps = 0"},
             {&a.weight_decay, -0.1f, "weight_decay"},
             {&a.grad_scale, 0.0f, "grad_scale = 0"},
             {&a.grad_scale, INFINITY, "grad_scale = inf"}};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); ++i) {
    a = args;
    *bad[i].field = bad[i].value;
    expect_step_rejected(adam, &a, &t, 1, bad[i].needle, &b);
  }

  strata_adam_tensor_t u = t;
  u.params = NULL;
  expect_step_rejected(adam, &args, &u, 1, "tensor 0: params is NULL", &b);
  u = t;
  u.exp_avg = NULL;
  expect_step_rejected(adam, &args, &u, 1, "exp_avg is NULL", &b);
  u = t;
  u.count = 0;
  expect_step_rejected(adam, &args, &u, 1, "count is 0", &b);
  u = t;
  u.grad_dtype = (strata_dtype_t)9;
  expect_step_rejected(adam, &args, &u, 1, "tensors[0].grad_dtype = 9", &b);
  u = t;
  u.out_dtype = STRATA_DTYPE_FP32;
  expect_step_rejected(adam, &args, &u, 1, "params_out dtype must be bf16 or fp16", &b);
  u = t;
  u.reserved[1] = &b;
  expect_step_rejected(adam, &args, &u, 1, "reserved must be NULL", &b);
  u = t;
  u.exp_avg_sq = b.m; /* the same buffer for both moments */
  expect_step_rejected(adam, &args, &u, 1, "overlap", &b);
  u = t;
  u.grads = b.p + 1;
  expect_step_rejected(adam, &args, &u, 1, "overlap", &b);
  strata_adam_tensor_t two[2] = {t, t};
  two[1].count = 1;
  two[1].params = b.p + N - 1;
  expect_step_rejected(adam, &args, two, 2, "overlap", &b);
}

static void test_steps_match_reference(strata_cpu_adam_t* adam) {
  bufs_t b;
  fill(&b);
  double rp[N], rm[N], rv[N];
  for (int i = 0; i < N; ++i) {
    rp[i] = b.p[i];
    rm[i] = 0.0;
    rv[i] = 0.0;
  }
  strata_adam_step_args_t args = STRATA_ADAM_STEP_ARGS_INIT;
  args.lr = 0.01f;
  args.weight_decay = 0.1f;
  args.grad_scale = 0.5f;
  strata_adam_tensor_t t = tensor_of(&b);
  CHECK(strata_cpu_adam_set_step(adam, 0) == STRATA_OK, "set_step 0");
  for (int s = 1; s <= 5; ++s) {
    CHECK(strata_cpu_adam_step(adam, &args, &t, 1) == STRATA_OK, "step %d: %s", s, strata_last_error());
    CHECK(strata_last_error()[0] == '\0', "last error not cleared after success");
    const double bc1 = 1.0 - pow(args.beta1, s), bc2 = 1.0 - pow(args.beta2, s);
    for (int i = 0; i < N; ++i) { /* AdamW, torch order */
      const double g = (double)b.g[i] * args.grad_scale;
      rp[i] *= 1.0 - (double)args.lr * args.weight_decay;
      rm[i] = args.beta1 * rm[i] + (1.0 - args.beta1) * g;
      rv[i] = args.beta2 * rv[i] + (1.0 - args.beta2) * g * g;
      rp[i] -= (args.lr / bc1) * rm[i] / (sqrt(rv[i]) / sqrt(bc2) + args.eps);
    }
  }
  int64_t step = 0;
  CHECK(strata_cpu_adam_get_step(adam, &step) == STRATA_OK && step == 5, "step count %lld", (long long)step);
  for (int i = 0; i < N; ++i) {
    CHECK(fabs(b.p[i] - rp[i]) <= 1e-6 + 1e-5 * fabs(rp[i]), "p[%d] %.9g vs %.9g", i, b.p[i], rp[i]);
    CHECK(b.out[i] == to_bf16(b.p[i]), "bf16 copy of p[%d]", i);
  }
  EXPECT_ERROR(strata_cpu_adam_set_step(adam, -3), STRATA_ERR_INVALID_ARGUMENT, "step count -3");
  EXPECT_ERROR(strata_cpu_adam_get_step(adam, NULL), STRATA_ERR_INVALID_ARGUMENT, "step is NULL");
}

static void test_grad_norm(strata_cpu_adam_t* adam) {
  float a[100];
  uint16_t h[10];
  double want = 0.0;
  for (int i = 0; i < 100; ++i) {
    a[i] = (float)(i % 9) - 4.0f;
    want += (double)a[i] * a[i];
  }
  for (int i = 0; i < 10; ++i) {
    h[i] = 0x3c00; /* fp16 1.0 */
    want += 1.0;
  }
  const void* grads[2] = {a, h};
  strata_dtype_t dtypes[2] = {STRATA_DTYPE_FP32, STRATA_DTYPE_FP16};
  size_t counts[2] = {100, 10};
  double norm = -1.0;
  int finite = -1;
  CHECK(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, &norm, &finite) == STRATA_OK, "%s",
        strata_last_error());
  CHECK(fabs(norm - sqrt(want)) <= 1e-12 * sqrt(want), "norm %.17g vs %.17g", norm, sqrt(want));
  CHECK(finite == 1, "finite");
  h[7] = 0x7e00; /* fp16 NaN */
  CHECK(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, &norm, &finite) == STRATA_OK, "%s",
        strata_last_error());
  CHECK(finite == 0, "NaN not detected");
  h[7] = 0x3c00;
  a[50] = -INFINITY;
  CHECK(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, &norm, &finite) == STRATA_OK, "%s",
        strata_last_error());
  CHECK(finite == 0, "-inf not detected");
  EXPECT_ERROR(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, NULL, &finite), STRATA_ERR_INVALID_ARGUMENT,
               "norm is NULL");
  EXPECT_ERROR(strata_cpu_adam_grad_norm(adam, NULL, dtypes, counts, 2, &norm, &finite), STRATA_ERR_INVALID_ARGUMENT,
               "must be non-NULL");
  dtypes[1] = (strata_dtype_t)4;
  EXPECT_ERROR(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, &norm, &finite), STRATA_ERR_INVALID_ARGUMENT,
               "dtypes[1] = 4");
  dtypes[1] = STRATA_DTYPE_FP16;
  grads[1] = NULL;
  EXPECT_ERROR(strata_cpu_adam_grad_norm(adam, grads, dtypes, counts, 2, &norm, &finite), STRATA_ERR_INVALID_ARGUMENT,
               "gradient 1: data is NULL");
}

static void* other_thread(void* arg) {
  (void)arg;
  /* A failure on the main thread is not visible here. */
  return (void*)(strata_last_error()[0] == '\0' ? (void*)1 : NULL);
}

static void test_last_error_is_thread_local(void) {
  strata_cpu_adam_t* adam = NULL;
  EXPECT_ERROR(strata_cpu_adam_create(NULL, &adam), STRATA_ERR_INVALID_ARGUMENT, "config is NULL");
  pthread_t th;
  void* clean = NULL;
  CHECK(pthread_create(&th, NULL, other_thread, NULL) == 0, "pthread_create");
  pthread_join(th, &clean);
  CHECK(clean != NULL, "another thread saw this thread's error");
  CHECK(strstr(strata_last_error(), "config is NULL") != NULL, "own error kept: %s", strata_last_error());
}

int main(void) {
  test_version_and_status();
  test_create_errors();
  strata_cpu_adam_config_t cfg = STRATA_CPU_ADAM_CONFIG_INIT;
  cfg.num_threads = 2;
  strata_cpu_adam_t* adam = NULL;
  CHECK(strata_cpu_adam_create(&cfg, &adam) == STRATA_OK && adam != NULL, "create: %s", strata_last_error());
  if (adam != NULL) {
    const char* isa = NULL;
    CHECK(strata_cpu_adam_get_isa(adam, &isa) == STRATA_OK && isa != NULL &&
              (strcmp(isa, "avx2") == 0 || strcmp(isa, "avx512") == 0 || strcmp(isa, "scalar") == 0),
          "isa %s", isa ? isa : "(null)");
    test_step_errors(adam);
    test_steps_match_reference(adam);
    test_grad_norm(adam);
  }
  CHECK(strata_cpu_adam_destroy(adam) == STRATA_OK, "destroy");
  test_last_error_is_thread_local();
  printf("c_api_test: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
