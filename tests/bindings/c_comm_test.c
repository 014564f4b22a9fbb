/* The C API's communicators, compiled as C, under mpirun with 1 and 2 ranks: the world of
 * mpirun; a data-parallel engine whose step reports the global norm of the ranks' averaged
 * gradients (closed form: rank r hands r + 1 everywhere, so the mean is (N + 1) / 2), at ZeRO
 * stage 0 and stage 3; bad arguments refused. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "c_check.h"

static void log_quietly(void* user, const char* line) {
  (void)user;
  (void)line;
}

int main(void) {
  strata_comm_t* comm = NULL;
  CHECK(strata_comm_create_mpi(60000, &comm) == STRATA_OK, "%s", strata_last_error());
  int rank = -1, size = -1;
  CHECK(strata_comm_get_rank(comm, &rank, &size) == STRATA_OK, "%s", strata_last_error());
  const char* env = getenv("OMPI_COMM_WORLD_SIZE");
  CHECK(size == (env ? atoi(env) : 1), "size %d", size);
  EXPECT_ERROR(strata_comm_get_rank(NULL, &rank, &size), STRATA_ERR_INVALID_ARGUMENT, "comm is NULL");
  EXPECT_ERROR(strata_comm_create_mpi(0, NULL), STRATA_ERR_INVALID_ARGUMENT, "out is NULL");

  /* Comm handles are checked like engine handles: a pointer strata never returned is refused (not
   * dereferenced), by strata_comm_get_rank and as options.comm; a comm in use by an engine cannot be
   * destroyed; after destroy the handle is refused. */
  uint64_t garbage[8] = {0xdeadbeef, 1, 2, 3, 4, 5, 6, 7};
  strata_comm_t* bogus = (strata_comm_t*)garbage;
  EXPECT_ERROR(strata_comm_get_rank(bogus, &rank, &size), STRATA_ERR_INVALID_ARGUMENT,
               "not a handle returned by strata_comm_create");
  EXPECT_ERROR(strata_comm_destroy(bogus), STRATA_ERR_INVALID_ARGUMENT, "not a handle returned by strata_comm_create");
  {
    strata_engine_options_t o = STRATA_ENGINE_OPTIONS_INIT;
    o.config_json = "{\"strata\": {\"device\": \"host\", \"device_bytes\": 1048576}}";
    o.log = log_quietly;
    o.comm = bogus;
    strata_engine_t* e = NULL;
    EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_INVALID_ARGUMENT, "options.comm: comm is not a handle");
    CHECK(e == NULL, "no engine from a bogus comm");
    strata_comm_t* other = NULL;
    CHECK(strata_comm_create_mpi(60000, &other) == STRATA_OK, "%s", strata_last_error());
    o.comm = other;
    CHECK(strata_engine_create(&o, &e) == STRATA_OK, "%s", strata_last_error());
    EXPECT_ERROR(strata_comm_destroy(other), STRATA_ERR_FAILED_PRECONDITION, "1 engine(s) created with this comm");
    CHECK(strata_engine_destroy(e) == STRATA_OK, "%s", strata_last_error());
    CHECK(strata_comm_destroy(other) == STRATA_OK, "%s", strata_last_error());
    EXPECT_ERROR(strata_comm_get_rank(other, &rank, &size), STRATA_ERR_FAILED_PRECONDITION,
                 "used after strata_comm_destroy");
    EXPECT_ERROR(strata_comm_destroy(other), STRATA_ERR_FAILED_PRECONDITION, "used after strata_comm_destroy");
    o.comm = other;
    EXPECT_ERROR(strata_engine_create(&o, &e), STRATA_ERR_FAILED_PRECONDITION, "options.comm: the comm was destroyed");
  }

  /* Stage 0 (DDP) and stage 3 (params, gradients and optimizer state sharded per rank): the same
   * global norm. */
  const char* configs[2] = {
      "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}, \"zero_optimization\": {\"stage\": 0}, "
      "\"strata\": {\"device\": \"host\", \"device_bytes\": 1048576}}",
      "{\"optimizer\": {\"type\": \"AdamW\", \"params\": {\"lr\": 0.01}}, \"zero_optimization\": {\"stage\": 3}, "
      "\"strata\": {\"device\": \"host\", \"device_bytes\": 1048576}}"};
  for (int k = 0; k < 2; ++k) {
    strata_engine_options_t o = STRATA_ENGINE_OPTIONS_INIT;
    o.config_json = configs[k];
    o.log = log_quietly;
    o.comm = comm;
    strata_engine_t* e = NULL;
    CHECK(strata_engine_create(&o, &e) == STRATA_OK, "%s", strata_last_error());
    const int64_t shape[1] = {1000};
    CHECK(strata_engine_register_param(e, "w", shape, 1, STRATA_DTYPE_FP32, NULL) == STRATA_OK, "%s",
          strata_last_error());
    void* p = NULL;
    CHECK(strata_engine_fetch(e, "w", NULL, &p) == STRATA_OK, "%s", strata_last_error());
    uint16_t g[1000];
    const float value = (float)(rank + 1); /* small integers are exact in bf16 */
    uint32_t bits;
    memcpy(&bits, &value, 4);
    for (int i = 0; i < 1000; ++i) g[i] = (uint16_t)(bits >> 16);
    CHECK(strata_engine_grad(e, "w", g, STRATA_DTYPE_BF16, 1000, NULL) == STRATA_OK, "%s", strata_last_error());
    CHECK(strata_engine_release(e, "w") == STRATA_OK, "%s", strata_last_error());
    strata_engine_step_args_t a = STRATA_ENGINE_STEP_ARGS_INIT;
    strata_engine_step_result_t r = STRATA_ENGINE_STEP_RESULT_INIT;
    CHECK(strata_engine_step(e, &a, &r) == STRATA_OK, "%s", strata_last_error());
    const double want = sqrt(1000.0) * (size + 1) / 2.0;
    CHECK(fabs(r.grad_norm - want) <= 1e-9 * want, "stage %d: grad norm %.12g, want %.12g", k * 3, r.grad_norm, want);
    CHECK(strata_engine_destroy(e) == STRATA_OK, "%s", strata_last_error());
  }
  CHECK(strata_comm_destroy(comm) == STRATA_OK, "%s", strata_last_error());
  CHECK(strata_comm_destroy(NULL) == STRATA_OK, "%s", strata_last_error());
  printf("c_comm_test rank %d of %d: %d passed, %d failed\n", rank, size, g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
