/* Links an installed libstrata and runs one CPU Adam step through it. */
#include <stdio.h>

#include "strata.h"

int main(void) {
  if (strata_version() != STRATA_VERSION_CODE) {
    fprintf(stderr, "header %d, library %d\n", STRATA_VERSION_CODE, strata_version());
    return 1;
  }
  strata_cpu_adam_config_t cfg = STRATA_CPU_ADAM_CONFIG_INIT;
  strata_cpu_adam_t* adam = NULL;
  if (strata_cpu_adam_create(&cfg, &adam) != STRATA_OK) {
    fprintf(stderr, "create: %s\n", strata_last_error());
    return 1;
  }
  float p[3] = {1, 2, 3}, m[3] = {0}, v[3] = {0}, g[3] = {1, 1, 1};
  strata_adam_tensor_t t = {p, m, v, g, STRATA_DTYPE_FP32, STRATA_DTYPE_BF16, NULL, 3, {NULL, NULL}};
  strata_adam_step_args_t args = STRATA_ADAM_STEP_ARGS_INIT;
  args.weight_decay = 0.0f;
  const strata_status_t st = strata_cpu_adam_step(adam, &args, &t, 1);
  strata_cpu_adam_destroy(adam);
  /* First Adam step with bias correction moves each param by lr (g/|g| = 1). */
  if (st != STRATA_OK || p[0] > 0.99901f || p[0] < 0.99899f) {
    fprintf(stderr, "step: %s, p[0] = %.7f\n", strata_last_error(), p[0]);
    return 1;
  }
  printf("consumer ok: strata %s\n", strata_version_string());
  return 0;
}
