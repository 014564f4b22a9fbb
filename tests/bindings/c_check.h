/* CHECK / EXPECT_ERROR for the C API tests: count passes and failures, print the failing
 * condition with the last error. Included by one translation unit per test program. */
#ifndef STRATA_TESTS_C_CHECK_H_
#define STRATA_TESTS_C_CHECK_H_

#include <stdio.h>
#include <string.h>

#include "strata.h"

static int g_failed = 0;
static int g_passed = 0;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (cond) {                                                                \
      ++g_passed;                                                              \
    } else {                                                                   \
      ++g_failed;                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
      fprintf(stderr, __VA_ARGS__);                                            \
      fprintf(stderr, "\n");                                                   \
    }                                                                          \
  } while (0)

/* The call returns `code` and strata_last_error() contains `needle`. */
#define EXPECT_ERROR(call, code, needle)                                                                             \
  do {                                                                                                               \
    strata_status_t st_ = (call);                                                                                    \
    CHECK(st_ == (code), "%s returned %d (%s), want %d; last error: %s", #call, (int)st_, strata_status_string(st_), \
          (int)(code), strata_last_error());                                                                         \
    CHECK(strstr(strata_last_error(), (needle)) != NULL, "%s: message '%s' lacks '%s'", #call, strata_last_error(),  \
          (needle));                                                                                                 \
  } while (0)

#endif /* STRATA_TESTS_C_CHECK_H_ */
