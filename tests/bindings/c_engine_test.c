/* The engine's C API from C: every misuse named in its contract (unknown param, grad before
 * fetch, register after prepare, shape and dtype mismatches, double release, grad twice, step while
 * fetched, native streams on the emulated device, a plan that does not fit, working buffers
 * exhausted, use after destroy, a handle that never was) returns the documented code with a message
 * naming the param and the rule, and leaves the engine usable; then one Adam step checked against
 * its closed form, and a step with lr = 0 that must change nothing. Links only libstrata.so. */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c_check.h"
#include "strata.h"

#define EXPECT_OK(call)                                            \
  do {                                                             \
    strata_status_t st_ = (call);                                  \
    CHECK(st_ == STRATA_OK, "%s: %s", #call, strata_last_error()); \
  } while (0)

static int g_plan_logged = 0;
static void on_log(void* user, const char* line) {
  (void)user;
  if (strstr(line, "placement plan") != NULL) ++g_plan_logged;
}

static const char* kConfig =
    "{\"bf16\": {\"enabled\": true},"
    " \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}},"
    " \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 4096}}";

static strata_engine_t* make_engine(const char* json) {
  strata_engine_options_t o = STRATA_ENGINE_OPTIONS_INIT;
  o.config_json = json;
  o.log = on_log;
  strata_engine_t* e = NULL;
  EXPECT_OK(strata_engine_create(&o, &e));
  return e;
}

static uint16_t to_bf16(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static float from_bf16(uint16_t h) {
  uint32_t u = (uint32_t)h << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

static void test_create_errors(void) {
  strata_engine_options_t o = STRATA_ENGINE_OPTIONS_INIT;
  strata_engine_t* e = (strata_engine_t*)&o; /* reset to NULL on error */
  EXPECT_ERROR(strata_engine_create(&o, NULL), STRATA_ERR_INVALID_ARGUMENT, "out is NULL");
  EXPECT_ERROR(strata_engine_create(NULL, &e), STRATA_ERR_INVALID_ARGUMENT, "options is NULL");
  CHECK(e == NULL, "out reset");
  EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "options.config_json is NULL");
  o.struct_size = 0;
  EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "STRATA_ENGINE_OPTIONS_INIT");
  o.struct_size = sizeof(o);
  o.config_json = "{\"strata\": {";
  EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "config: line 1, column 12: syntax error");
  o.config_json = "{\"strata\": {\"device\": \"host\", \"device_bytes\": 4096, \"chunk_byte\": 1}}";
  EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "strata.chunk_byte");
  o.config_json = "{\"strata\": {\"device\": \"host\"}}";
  EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "strata.device_bytes");
  CHECK(e == NULL, "out stays NULL");
}

static void test_misuse(void) {
  strata_engine_t* e = make_engine(kConfig);
  const int64_t shape_w[2] = {16, 8}, shape_b[1] = {16}, bad[2] = {16, 0};
  EXPECT_ERROR(strata_engine_register_param(e, NULL, shape_w, 2, STRATA_DTYPE_FP32, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "name is NULL");
  EXPECT_ERROR(strata_engine_register_param(e, "w", shape_w, 9, STRATA_DTYPE_FP32, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "ndim = 9");
  EXPECT_ERROR(strata_engine_register_param(e, "w", NULL, 2, STRATA_DTYPE_FP32, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "shape is NULL");
  EXPECT_ERROR(strata_engine_register_param(e, "w", bad, 2, STRATA_DTYPE_FP32, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "register of 'w': shape [16, 0] has a dimension < 1");
  EXPECT_ERROR(strata_engine_register_param(e, "w", shape_w, 2, (strata_dtype_t)7, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "init_dtype = 7");
  EXPECT_ERROR(strata_engine_prepare(e), STRATA_ERR_FAILED_PRECONDITION, "no param was registered");
  EXPECT_OK(strata_engine_register_param(e, "w", shape_w, 2, STRATA_DTYPE_FP32, NULL));
  EXPECT_ERROR(strata_engine_register_param(e, "w", shape_b, 1, STRATA_DTYPE_FP32, NULL), STRATA_ERR_ALREADY_EXISTS,
               "register of 'w': already registered with shape [16, 8]");
  EXPECT_OK(strata_engine_register_param(e, "b", shape_b, 1, STRATA_DTYPE_FP32, NULL));
  size_t len = 0;
  char plan[4096];
  EXPECT_ERROR(strata_engine_get_plan(e, plan, sizeof(plan), &len), STRATA_ERR_FAILED_PRECONDITION,
               "plan before prepare");

  void* p = NULL;
  EXPECT_ERROR(strata_engine_fetch(e, "nope", NULL, &p), STRATA_ERR_NOT_FOUND,
               "fetch of unknown param 'nope': it was never registered");
  CHECK(p == NULL, "no pointer on error");
  CHECK(g_plan_logged == 1, "the first fetch prepared and logged the plan once (%d)", g_plan_logged);
  EXPECT_OK(strata_engine_get_plan(e, plan, sizeof(plan), &len));
  CHECK(len == strlen(plan) && strstr(plan, "bit16 params") != NULL, "plan text: %s", plan);
  EXPECT_ERROR(strata_engine_get_plan(e, plan, 10, &len), STRATA_ERR_INVALID_ARGUMENT, "buf holds 10 bytes");
  EXPECT_ERROR(strata_engine_register_param(e, "late", shape_b, 1, STRATA_DTYPE_FP32, NULL),
               STRATA_ERR_FAILED_PRECONDITION, "register of 'late' after prepare");

  uint16_t g[128];
  for (int i = 0; i < 128; ++i) g[i] = to_bf16(0.01f);
  EXPECT_ERROR(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 128, NULL), STRATA_ERR_FAILED_PRECONDITION,
               "grad of 'w' before fetch");
  EXPECT_ERROR(strata_engine_release(e, "w"), STRATA_ERR_FAILED_PRECONDITION, "release of 'w': not fetched");
  EXPECT_OK(strata_engine_fetch(e, "w", NULL, &p));
  CHECK(p != NULL, "fetched pointer");
  EXPECT_ERROR(strata_engine_fetch(e, "w", (void*)0x1, &p), STRATA_ERR_INVALID_ARGUMENT, "no native streams");
  EXPECT_ERROR(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 127, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "grad of 'w': 127 elements given, the param has 128");
  EXPECT_ERROR(strata_engine_grad(e, "w", g, STRATA_DTYPE_FP32, 128, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "grad of 'w': dtype fp32");
  EXPECT_ERROR(strata_engine_grad(e, "w", NULL, STRATA_DTYPE_BF16, 128, NULL), STRATA_ERR_INVALID_ARGUMENT,
               "gradient pointer is NULL");
  EXPECT_ERROR(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 128, (void*)0x1), STRATA_ERR_INVALID_ARGUMENT,
               "no native streams");
  EXPECT_OK(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 128, NULL));
  EXPECT_ERROR(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 128, NULL), STRATA_ERR_FAILED_PRECONDITION,
               "grad of 'w': given twice in one micro-batch");
  EXPECT_ERROR(strata_engine_step(e, NULL, NULL), STRATA_ERR_FAILED_PRECONDITION, "step while 'w' is fetched");
  EXPECT_OK(strata_engine_release(e, "w"));
  EXPECT_ERROR(strata_engine_release(e, "w"), STRATA_ERR_FAILED_PRECONDITION, "double release");
  strata_engine_step_args_t args = STRATA_ENGINE_STEP_ARGS_INIT;
  args.lr = NAN;
  EXPECT_ERROR(strata_engine_step(e, &args, NULL), STRATA_ERR_INVALID_ARGUMENT, "args.lr is NaN");
  args.lr = -1.0;
  args.reserved[0] = 1;
  EXPECT_ERROR(strata_engine_step(e, &args, NULL), STRATA_ERR_INVALID_ARGUMENT, "args.reserved is not zero");
  strata_engine_step_result_t r = STRATA_ENGINE_STEP_RESULT_INIT;
  EXPECT_OK(strata_engine_step(e, NULL, &r));
  CHECK(r.boundary == 1 && r.applied == 1 && r.optimizer_step == 1, "step applied (%d %d %lld)", r.boundary, r.applied,
        (long long)r.optimizer_step);
  /* After all this the engine still trains: the grad given before the step was taken. */
  CHECK(fabs(r.grad_norm - from_bf16(to_bf16(0.01f)) * sqrt(128.0)) < 1e-9, "norm of 128 x bf16(0.01): %g",
        r.grad_norm);

  EXPECT_OK(strata_engine_destroy(e));
  EXPECT_ERROR(strata_engine_fetch(e, "w", NULL, &p), STRATA_ERR_FAILED_PRECONDITION, "the engine was destroyed");
  EXPECT_ERROR(strata_engine_step(e, NULL, NULL), STRATA_ERR_FAILED_PRECONDITION, "used after strata_engine_destroy");
  EXPECT_ERROR(strata_engine_destroy(e), STRATA_ERR_FAILED_PRECONDITION, "the engine was destroyed");
  int not_a_handle = 0;
  EXPECT_ERROR(strata_engine_prepare((strata_engine_t*)&not_a_handle), STRATA_ERR_INVALID_ARGUMENT,
               "not a handle returned by strata_engine_create");
  EXPECT_OK(strata_engine_destroy(NULL));
}

static void test_plan_refused_and_buffers_exhausted(void) {
  strata_engine_t* e =
      make_engine("{\"strata\": {\"device\": \"host\", \"device_bytes\": 20000, \"chunk_bytes\": 4096}}");
  const int64_t shape[1] = {20000};
  EXPECT_OK(strata_engine_register_param(e, "big", shape, 1, STRATA_DTYPE_FP32, NULL));
  EXPECT_ERROR(strata_engine_prepare(e), STRATA_ERR_OUT_OF_MEMORY, "the model does not fit: the device needs");
  EXPECT_ERROR(strata_engine_prepare(e), STRATA_ERR_OUT_OF_MEMORY, "short");
  EXPECT_OK(strata_engine_destroy(e));

  e = make_engine(
      "{\"zero_optimization\": {\"stage\": 3, \"offload_optimizer\": {\"device\": \"cpu\"},"
      " \"offload_param\": {\"device\": \"cpu\"}},"
      " \"strata\": {\"device\": \"host\", \"device_bytes\": 65536, \"chunk_bytes\": 4096, \"live_chunks\": 1}}");
  const int64_t s[1] = {2048};
  EXPECT_OK(strata_engine_register_param(e, "a", s, 1, STRATA_DTYPE_FP32, NULL));
  EXPECT_OK(strata_engine_register_param(e, "b", s, 1, STRATA_DTYPE_FP32, NULL));
  void* p = NULL;
  EXPECT_OK(strata_engine_fetch(e, "a", NULL, &p));
  EXPECT_ERROR(strata_engine_fetch(e, "b", NULL, &p), STRATA_ERR_FAILED_PRECONDITION,
               "fetch of 'b': all 1 device working buffers (strata.live_chunks) hold fetched params ('a')");
  EXPECT_OK(strata_engine_release(e, "a"));
  EXPECT_OK(strata_engine_fetch(e, "b", NULL, &p));
  EXPECT_OK(strata_engine_release(e, "b"));
  EXPECT_OK(strata_engine_destroy(e));
}

/* One AdamW step from known values: m = (1-b1) g, v = (1-b2) g^2, bias-corrected, so
 * p1 = p0 - lr * g / (|g| + eps) exactly in real arithmetic. lr = 0 changes nothing. */
static void test_adam_closed_form(void) {
  strata_engine_t* e = make_engine(kConfig);
  enum { kN = 300 };
  float init[kN], got[kN];
  uint16_t g[kN];
  for (int i = 0; i < kN; ++i) {
    init[i] = from_bf16(to_bf16(0.5f - (float)i / kN));
    g[i] = to_bf16((i % 7 - 3) * 0.125f + 0.0625f);
  }
  const int64_t shape[1] = {kN};
  EXPECT_OK(strata_engine_register_param(e, "p", shape, 1, STRATA_DTYPE_FP32, init));
  for (int step = 0; step < 2; ++step) {
    void* dp = NULL;
    EXPECT_OK(strata_engine_fetch(e, "p", NULL, &dp));
    const uint16_t* w = (const uint16_t*)dp;
    int same = 1;
    for (int i = 0; i < kN; ++i) same &= w[i] == to_bf16(init[i]);
    CHECK(same, "fetched bit16 values are the initial ones (step %d)", step);
    EXPECT_OK(strata_engine_grad(e, "p", g, STRATA_DTYPE_BF16, kN, NULL));
    EXPECT_OK(strata_engine_release(e, "p"));
    strata_engine_step_args_t args = STRATA_ENGINE_STEP_ARGS_INIT;
    args.lr = 0.0; /* the first step: lr 0 must leave everything as it was */
    EXPECT_OK(strata_engine_step(e, step == 0 ? &args : NULL, NULL));
    EXPECT_OK(strata_engine_read_param(e, "p", got, kN));
    if (step == 0) {
      CHECK(memcmp(got, init, sizeof(got)) == 0, "lr = 0 changed the master");
    }
  }
  /* The second step is Adam step 2 with the same gradient: m = (1-b1^2) g, v = (1-b2^2) g^2, and the
   * bias corrections cancel: p = p0 - lr * g / (|g| + eps). */
  double worst = 0.0;
  for (int i = 0; i < kN; ++i) {
    const double gi = from_bf16(g[i]);
    const double want = init[i] - 0.01 * gi / (fabs(gi) + 1e-8);
    worst = fmax(worst, fabs(got[i] - want));
  }
  CHECK(worst < 1e-6, "largest difference from the closed form: %g", worst);
  strata_engine_stats_t st = STRATA_ENGINE_STATS_INIT;
  EXPECT_OK(strata_engine_get_stats(e, &st));
  CHECK(st.optimizer_steps == 2 && st.micro_steps == 2 && st.skipped_steps == 0, "steps %lld %lld",
        (long long)st.optimizer_steps, (long long)st.micro_steps);
  CHECK(st.device_bytes > 0 && st.device_peak_bytes <= 1048576, "device bytes %llu peak %llu",
        (unsigned long long)st.device_bytes, (unsigned long long)st.device_peak_bytes);
  double scale = 0;
  EXPECT_OK(strata_engine_get_loss_scale(e, &scale));
  double old_name = 0.0;
  EXPECT_OK(strata_engine_loss_scale(e, &old_name)); /* the first release's name still works */
  CHECK(old_name == scale, "the earlier name answers the same");
  CHECK(scale == 1.0, "bf16 trains unscaled: %g", scale);
  CHECK(st.bytes_allreduce == 0 && st.bytes_allgather == 0 && st.bucket_flushes >= 1,
        "one rank reduces nothing; gradients left the device (flushes %lld)", (long long)st.bucket_flushes);
  /* A caller built against the first release passes its smaller struct: filled up to its end. */
  const size_t v0_size = offsetof(strata_engine_stats_t, bytes_allreduce) + 4 * sizeof(uint64_t);
  strata_engine_stats_t v0;
  memset(&v0, 0xAB, sizeof(v0));
  memset(&v0, 0, v0_size);
  v0.struct_size = v0_size;
  EXPECT_OK(strata_engine_get_stats(e, &v0));
  CHECK(v0.optimizer_steps == 2 && v0.order_changes == st.order_changes, "first-release layout filled");
  CHECK(v0.early_flushes == (int64_t)0xABABABABABABABABull && v0.bytes_checkpoint == 0xABABABABABABABABull,
        "nothing written past the first-release layout");
  st.struct_size = 8;
  EXPECT_ERROR(strata_engine_get_stats(e, &st), STRATA_ERR_INVALID_ARGUMENT, "stats.struct_size is 8");
  EXPECT_OK(strata_engine_destroy(e));
}

/* One optimizer step of param "p" with gradient g. */
/* Offloaded params live in working buffers: map_param refuses them. */
static void test_map_refuses_offloaded_params(void) {
  strata_engine_t* e = make_engine(
      "{\"zero_optimization\": {\"stage\": 3, \"offload_param\": {\"device\": \"cpu\"}, \"offload_optimizer\": "
      "{\"device\": \"cpu\"}},"
      " \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 4096}}");
  const int64_t shape[1] = {100};
  EXPECT_OK(strata_engine_register_param(e, "w", shape, 1, STRATA_DTYPE_FP32, NULL));
  void* p = (void*)1;
  EXPECT_ERROR(strata_engine_map_param(e, "w", &p), STRATA_ERR_FAILED_PRECONDITION,
               "do not rest on the device (offload_param)");
  CHECK(p == NULL, "out reset on error");
  EXPECT_ERROR(strata_engine_map_param(e, "w", NULL), STRATA_ERR_INVALID_ARGUMENT, "device_ptr is NULL");
  EXPECT_OK(strata_engine_destroy(e));
}

static void train_step(strata_engine_t* e, const uint16_t* g, size_t n) {
  void* dp = NULL;
  EXPECT_OK(strata_engine_fetch(e, "p", NULL, &dp));
  EXPECT_OK(strata_engine_grad(e, "p", g, STRATA_DTYPE_BF16, n, NULL));
  EXPECT_OK(strata_engine_release(e, "p"));
  EXPECT_OK(strata_engine_step(e, NULL, NULL));
}

/* Save after one step, load into a second engine, one more step on each: the same masters. */
static void test_checkpoint_round_trip(void) {
  enum { kN = 200 };
  char root[64] = "/tmp/strata_c_ckpt_";
  memset(root + strlen(root), 'X', 6); /* mkdtemp's template: six X */
  CHECK(mkdtemp(root) != NULL, "mkdtemp");
  float init[kN], a[kN], b[kN];
  uint16_t g[kN];
  for (int i = 0; i < kN; ++i) {
    init[i] = (float)i / kN;
    g[i] = to_bf16((i % 5 - 2) * 0.25f);
  }
  const int64_t shape[1] = {kN};
  strata_engine_t* e = make_engine(kConfig);
  strata_engine_t* f = make_engine(kConfig);
  EXPECT_OK(strata_engine_register_param(e, "p", shape, 1, STRATA_DTYPE_FP32, init));
  EXPECT_OK(strata_engine_register_param(f, "p", shape, 1, STRATA_DTYPE_FP32, NULL));
  train_step(e, g, kN);
  /* An evaluation pass: fetch / release only. */
  EXPECT_ERROR(strata_engine_end_eval(e), STRATA_ERR_FAILED_PRECONDITION, "end_eval without begin_eval");
  EXPECT_OK(strata_engine_begin_eval(e));
  void* ev = NULL;
  EXPECT_OK(strata_engine_fetch(e, "p", NULL, &ev));
  EXPECT_ERROR(strata_engine_grad(e, "p", g, STRATA_DTYPE_BF16, kN, NULL), STRATA_ERR_FAILED_PRECONDITION,
               "evaluation pass");
  EXPECT_OK(strata_engine_release(e, "p"));
  EXPECT_OK(strata_engine_end_eval(e));
  EXPECT_ERROR(strata_engine_save(e, NULL, NULL), STRATA_ERR_INVALID_ARGUMENT, "dir");
  EXPECT_ERROR(strata_engine_save(e, root, "bad/tag"), STRATA_ERR_INVALID_ARGUMENT, "tag \"bad/tag\"");
  EXPECT_OK(strata_engine_save(e, root, NULL));
  EXPECT_ERROR(strata_engine_load(f, root, "step9"), STRATA_ERR_NOT_FOUND, "step9");
  EXPECT_OK(strata_engine_load(f, root, NULL));
  train_step(e, g, kN);
  train_step(f, g, kN);
  EXPECT_OK(strata_engine_read_param(e, "p", a, kN));
  EXPECT_OK(strata_engine_read_param(f, "p", b, kN));
  CHECK(memcmp(a, b, sizeof(a)) == 0, "the resumed engine trained to other weights");
  char out[512];
  snprintf(out, sizeof(out), "%s/weights", root);
  EXPECT_OK(strata_engine_export_weights(f, out, STRATA_DTYPE_FP32));
  EXPECT_ERROR(strata_engine_export_weights(f, out, (strata_dtype_t)42), STRATA_ERR_INVALID_ARGUMENT, "export dtype");

  /* safetensors with a model config beside it: the header names the param, its dtype, shape and
   * byte range; the data is the fp32 masters read back by strata_engine_read_param. */
  strata_export_options_t xo = STRATA_EXPORT_OPTIONS_INIT;
  xo.format = STRATA_EXPORT_SAFETENSORS;
  xo.config_json = "{\"model_type\": \"mlp\"}";
  snprintf(out, sizeof(out), "%s/st", root);
  EXPECT_OK(strata_engine_export(f, out, &xo));
  char path[600];
  snprintf(path, sizeof(path), "%s/st/model.safetensors", root);
  FILE* st = fopen(path, "rb");
  CHECK(st != NULL, "%s", path);
  if (st != NULL) {
    uint8_t len8[8];
    CHECK(fread(len8, 1, 8, st) == 8, "header length");
    uint64_t hlen = 0;
    for (int i = 0; i < 8; ++i) hlen |= (uint64_t)len8[i] << (8 * i);
    char header[512] = {0};
    CHECK(hlen < sizeof(header) && fread(header, 1, hlen, st) == hlen, "header of %llu bytes",
          (unsigned long long)hlen);
    CHECK(strstr(header, "\"p\":{\"data_offsets\":[0,800],\"dtype\":\"F32\",\"shape\":[200]}") != NULL, "header: %s",
          header);
    CHECK(hlen % 8 == 0, "the data is 8-byte aligned");
    float back[kN];
    CHECK(fread(back, 4, kN, st) == kN && memcmp(back, b, sizeof(back)) == 0, "the exported values are the masters");
    fclose(st);
  }
  snprintf(path, sizeof(path), "%s/st/config.json", root);
  FILE* cfg = fopen(path, "rb");
  CHECK(cfg != NULL, "config.json beside the weights");
  if (cfg != NULL) fclose(cfg);
  xo.format = (strata_export_format_t)7;
  EXPECT_ERROR(strata_engine_export(f, out, &xo), STRATA_ERR_INVALID_ARGUMENT, "options.format = 7");
  xo.format = STRATA_EXPORT_SAFETENSORS;
  xo.config_json = "[1, 2";
  EXPECT_ERROR(strata_engine_export(f, out, &xo), STRATA_ERR_INVALID_ARGUMENT, "the model config: line 1");

  /* map_param: a param resting on the device is the engine's own memory, rewritten in place. */
  void* mapped = NULL;
  EXPECT_ERROR(strata_engine_map_param(f, "nope", &mapped), STRATA_ERR_NOT_FOUND, "unknown param 'nope'");
  EXPECT_OK(strata_engine_map_param(f, "p", &mapped));
  void* fetched = NULL;
  EXPECT_OK(strata_engine_fetch(f, "p", NULL, &fetched));
  EXPECT_OK(strata_engine_release(f, "p"));
  CHECK(mapped == fetched, "the mapped and the fetched pointer differ");
  CHECK(from_bf16(((const uint16_t*)mapped)[3]) == from_bf16(to_bf16(b[3])),
        "the mapped values are the masters in bf16");
  train_step(f, g, kN);
  EXPECT_OK(strata_engine_read_param(f, "p", b, kN));
  CHECK(((const uint16_t*)mapped)[3] == to_bf16(b[3]), "a step rewrites the mapped values in place");
  EXPECT_OK(strata_engine_destroy(e));
  EXPECT_OK(strata_engine_destroy(f));
  char cmd[600];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
  CHECK(system(cmd) == 0, "%s", cmd);
}

/* One micro-batch of w's gradient (all 0.01), then a step with lr (< 0: none given). */
static strata_engine_step_result_t micro_and_step(strata_engine_t* e, double lr) {
  void* p = NULL;
  uint16_t g[128];
  for (int i = 0; i < 128; ++i) g[i] = to_bf16(0.01f);
  EXPECT_OK(strata_engine_fetch(e, "w", NULL, &p));
  EXPECT_OK(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 128, NULL));
  EXPECT_OK(strata_engine_release(e, "w"));
  strata_engine_step_args_t a = STRATA_ENGINE_STEP_ARGS_INIT;
  a.lr = lr;
  strata_engine_step_result_t r = STRATA_ENGINE_STEP_RESULT_INIT;
  EXPECT_OK(strata_engine_step(e, &a, &r));
  return r;
}

/* The update during backward: a chunk with host-side state is updated when its gradient is final
 * and committed when the step's lr is the one set_lr announced, redone when it is not. */
static void test_set_lr_and_speculation(void) {
  strata_engine_t* e = make_engine(
      "{\"bf16\": {\"enabled\": true}, \"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}},"
      " \"zero_optimization\": {\"stage\": 2, \"offload_optimizer\": {\"device\": \"cpu\"}},"
      " \"strata\": {\"device\": \"host\", \"device_bytes\": 1048576, \"chunk_bytes\": 4096}}");
  const int64_t shape[1] = {128};
  EXPECT_OK(strata_engine_register_param(e, "w", shape, 1, STRATA_DTYPE_FP32, NULL));
  EXPECT_ERROR(strata_engine_set_lr(e, NAN), STRATA_ERR_INVALID_ARGUMENT, "set_lr: the learning rate is not finite");
  EXPECT_OK(strata_engine_set_lr(e, 0.02));
  strata_engine_step_result_t r = micro_and_step(e, 0.02);
  CHECK(r.applied == 1 && r.chunks_speculated == 1 && r.chunks_redone == 0, "announced lr: committed (%lld %lld)",
        (long long)r.chunks_speculated, (long long)r.chunks_redone);
  r = micro_and_step(e, 0.03); /* the last step's lr (0.02) was used during backward */
  CHECK(r.applied == 1 && r.chunks_speculated == 1 && r.chunks_redone == 1, "another lr: redone (%lld %lld)",
        (long long)r.chunks_speculated, (long long)r.chunks_redone);
  r = micro_and_step(e, 0.03);
  CHECK(r.chunks_speculated == 0, "a step after a redo waits for the norm (%lld)", (long long)r.chunks_speculated);
  r = micro_and_step(e, 0.03);
  CHECK(r.chunks_speculated == 1 && r.chunks_redone == 0, "the same lr again: committed (%lld %lld)",
        (long long)r.chunks_speculated, (long long)r.chunks_redone);
  EXPECT_OK(strata_engine_destroy(e));
}

int main(void) {
  test_create_errors();
  test_misuse();
  test_plan_refused_and_buffers_exhausted();
  test_adam_closed_form();
  test_set_lr_and_speculation();
  test_checkpoint_round_trip();
  test_map_refuses_offloaded_params();
  printf("%d checks passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
