/* strata.h — the C API of strata, the only public surface of libstrata.so.
 *
 * Rules that hold for every function below:
 *  1. Names are strata_<object>_<verb>. Objects are opaque handles created by
 *     strata_<object>_create() and freed by strata_<object>_destroy(); destroy(NULL) is a no-op.
 *  2. Every function that can fail returns strata_status_t (STRATA_OK == 0). On failure,
 *     strata_last_error() returns a message for the calling thread that names the problem (which
 *     argument, which field, which tensor). A successful call clears it to "". Plain getters
 *     (strata_version, strata_status_string, strata_last_error) cannot fail and return values.
 *  3. No C++ exception, abort or exit crosses this API: bad input returns
 *     STRATA_ERR_INVALID_ARGUMENT and changes nothing; allocation failure returns
 *     STRATA_ERR_OUT_OF_MEMORY.
 *  4. Config and argument structs are versioned: declare them with their *_INIT macro, which sets
 *     struct_size and the defaults, then change the fields you need. A struct whose struct_size is
 *     0 (not initialised) or whose reserved fields are not zero is rejected. Public structs carry
 *     reserved padding so that fields can be added without breaking the ABI.
 *  5. Ownership: strata never takes ownership of memory passed in (buffers, structs, strings);
 *     it only reads or writes it during the call, unless a function says otherwise. Handles are
 *     owned by the caller until destroyed.
 *  6. Each function says whether it is synchronous (all work finished when it returns) and what
 *     may be called concurrently. Unless stated, distinct handles may be used from different
 *     threads at once and one handle from one thread at a time.
 *  7. Using a handle after destroy is undefined behaviour, as with free().
 * The ABI follows the soname (libstrata.so.<major>); symbols are versioned STRATA_<major>.
 */
#ifndef STRATA_H_
#define STRATA_H_

#include <stddef.h>
#include <stdint.h>

#include "strata_version.h"

#if defined(STRATA_BUILDING_LIBRARY)
#define STRATA_API __attribute__((visibility("default")))
#else
#define STRATA_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- status ---------------------------------------------------------------------------------- */

typedef enum strata_status {
  STRATA_OK = 0,
  STRATA_ERR_INVALID_ARGUMENT = 1,    /* an argument is wrong: value, pointer, size, struct */
  STRATA_ERR_FAILED_PRECONDITION = 2, /* not allowed in the current state (order of calls) */
  STRATA_ERR_NOT_FOUND = 3,           /* a named thing (key, file, parameter) does not exist */
  STRATA_ERR_ALREADY_EXISTS = 4,
  STRATA_ERR_OUT_OF_MEMORY = 5,       /* allocation failed or a memory budget is exceeded */
  STRATA_ERR_NO_SPACE = 6,            /* the file system is full */
  STRATA_ERR_IO = 7,                  /* another I/O error */
  STRATA_ERR_DATA_LOSS = 8,           /* corrupt or truncated data (checksum mismatch) */
  STRATA_ERR_UNSUPPORTED = 9,         /* not available on this machine or in this build */
  STRATA_ERR_CUDA = 10,               /* a CUDA runtime call failed */
  STRATA_ERR_NCCL = 11,               /* an NCCL call failed */
  STRATA_ERR_COMM = 12,               /* another collective-communication failure */
  STRATA_ERR_TIMEOUT = 13,
  STRATA_ERR_INTERNAL = 14            /* a bug in strata: please report it */
} strata_status_t;

/* A short description of `status` ("invalid argument"); never NULL. Thread-safe. */
STRATA_API const char* strata_status_string(strata_status_t status);

/* The message of the last failed call on this thread, "" after a successful one. The pointer
 * stays valid until the next strata call on this thread. Never NULL. */
STRATA_API const char* strata_last_error(void);

/* STRATA_VERSION_CODE of the library actually loaded (compare with the header's). */
STRATA_API int strata_version(void);
/* "0.1.0"; static storage. */
STRATA_API const char* strata_version_string(void);

/* ---- data types ------------------------------------------------------------------------------ */

typedef enum strata_dtype {
  STRATA_DTYPE_FP32 = 0,
  STRATA_DTYPE_BF16 = 1,
  STRATA_DTYPE_FP16 = 2
} strata_dtype_t;

/* ---- standalone CPU Adam --------------------------------------------------------------------- */
/* For frameworks that keep their own parameters and only want a fast optimizer step on the CPU:
 * fp32 master params and moments, gradients in fp32 / bf16 / fp16, oneTBB threads, AVX2 or
 * AVX-512 chosen at run time. */

typedef struct strata_cpu_adam strata_cpu_adam_t;

typedef enum strata_adam_mode {
  STRATA_ADAM = 0, /* L2 penalty added to the gradient (torch.optim.Adam) */
  STRATA_ADAMW = 1 /* decoupled weight decay (torch.optim.AdamW) */
} strata_adam_mode_t;

typedef struct strata_cpu_adam_config {
  size_t struct_size;      /* sizeof(strata_cpu_adam_config_t), set by the INIT macro */
  strata_adam_mode_t mode; /* default STRATA_ADAMW */
  int bias_correction;     /* non-zero: divide the moments by 1 - beta^t (default 1) */
  int num_threads;         /* threads for each step; 0 = all cores (default 0) */
  uint64_t reserved[8];    /* must be zero */
} strata_cpu_adam_config_t;

#define STRATA_CPU_ADAM_CONFIG_INIT \
  { sizeof(strata_cpu_adam_config_t), STRATA_ADAMW, 1, 0, { 0, 0, 0, 0, 0, 0, 0, 0 } }

/* Hyper-parameters of one step; they may change every step. */
typedef struct strata_adam_step_args {
  size_t struct_size;  /* sizeof(strata_adam_step_args_t), set by the INIT macro */
  float lr;            /* >= 0, default 1e-3 */
  float beta1;         /* [0, 1), default 0.9 */
  float beta2;         /* [0, 1), default 0.999 */
  float eps;           /* > 0, default 1e-8 */
  float weight_decay;  /* >= 0, default 0 */
  float grad_scale;    /* > 0: gradients are multiplied by this first (1/loss_scale x clip), default 1 */
  uint64_t reserved[8]; /* must be zero */
} strata_adam_step_args_t;

#define STRATA_ADAM_STEP_ARGS_INIT \
  { sizeof(strata_adam_step_args_t), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, { 0, 0, 0, 0, 0, 0, 0, 0 } }

/* One tensor of a step. params, exp_avg, exp_avg_sq: float[count], updated in place.
 * grads: [count] of grad_dtype, read only. params_out: optional [count] of out_dtype (BF16 or
 * FP16) that receives the updated params rounded to nearest even (the copy for the GPU); NULL for
 * none. count > 0. No buffer may overlap another, in this tensor or any other of the same step. */
typedef struct strata_adam_tensor {
  float* params;
  float* exp_avg;
  float* exp_avg_sq;
  const void* grads;
  strata_dtype_t grad_dtype;
  strata_dtype_t out_dtype;
  void* params_out;
  size_t count;
  void* reserved[2]; /* must be NULL */
} strata_adam_tensor_t;

/* Creates an optimizer with its own thread pool and a step counter at 0. *out receives the handle,
 * owned by the caller (strata_cpu_adam_destroy). Synchronous; thread-safe. */
STRATA_API strata_status_t strata_cpu_adam_create(const strata_cpu_adam_config_t* config,
                                                  strata_cpu_adam_t** out);

/* Frees the optimizer; NULL is a no-op. Always STRATA_OK. Must not run concurrently with a call on
 * the same handle. */
STRATA_API strata_status_t strata_cpu_adam_destroy(strata_cpu_adam_t* adam);

/* One optimizer step over num_tensors tensors: increments the step counter t, then updates every
 * tensor with bias corrections for t. All arguments are checked before anything is written: on
 * error nothing changes and the counter stays. Synchronous (returns when all threads are done);
 * one call at a time per handle. */
STRATA_API strata_status_t strata_cpu_adam_step(strata_cpu_adam_t* adam, const strata_adam_step_args_t* args,
                                                const strata_adam_tensor_t* tensors, size_t num_tensors);

/* Global L2 norm of the gradients and whether all are finite (no inf / NaN), for clipping and
 * dynamic loss scaling. grads[i] is [counts[i]] of dtypes[i]; *norm and *all_finite are written.
 * Uses the optimizer's threads; deterministic for any thread count. Synchronous. */
STRATA_API strata_status_t strata_cpu_adam_grad_norm(strata_cpu_adam_t* adam, const void* const* grads,
                                                     const strata_dtype_t* dtypes, const size_t* counts,
                                                     size_t num_grads, double* norm, int* all_finite);

/* The number of completed steps. Synchronous. */
STRATA_API strata_status_t strata_cpu_adam_get_step(const strata_cpu_adam_t* adam, int64_t* step);
/* Sets the number of completed steps (>= 0), e.g. when resuming from a checkpoint. */
STRATA_API strata_status_t strata_cpu_adam_set_step(strata_cpu_adam_t* adam, int64_t step);

/* The SIMD instruction set the optimizer's kernels use: "avx512", "avx2" or "scalar". */
STRATA_API strata_status_t strata_cpu_adam_get_isa(const strata_cpu_adam_t* adam, const char** isa);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STRATA_H_ */
