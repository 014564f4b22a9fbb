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
 *  7. Using a strata_cpu_adam_t after destroy is undefined behaviour, as with free(). An engine
 *     handle is checked on every call: after strata_engine_destroy it is refused with
 *     STRATA_ERR_FAILED_PRECONDITION ("the engine was destroyed") rather than touched.
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
  STRATA_ERR_OUT_OF_MEMORY = 5, /* allocation failed or a memory budget is exceeded */
  STRATA_ERR_NO_SPACE = 6,      /* the file system is full */
  STRATA_ERR_IO = 7,            /* another I/O error */
  STRATA_ERR_DATA_LOSS = 8,     /* corrupt or truncated data (checksum mismatch) */
  STRATA_ERR_UNSUPPORTED = 9,   /* not available on this machine or in this build */
  STRATA_ERR_CUDA = 10,         /* a CUDA runtime call failed */
  STRATA_ERR_NCCL = 11,         /* an NCCL call failed */
  STRATA_ERR_COMM = 12,         /* another collective-communication failure */
  STRATA_ERR_TIMEOUT = 13,
  STRATA_ERR_INTERNAL = 14,  /* a bug in strata: please report it */
  STRATA_ERR_NONFINITE = 15, /* training diverged: gradients or weights not finite (inf / NaN) */
  STRATA_ERR_CANCELLED = 16  /* stopped on request (a signal) at a safe point */
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

typedef enum strata_dtype { STRATA_DTYPE_FP32 = 0, STRATA_DTYPE_BF16 = 1, STRATA_DTYPE_FP16 = 2 } strata_dtype_t;

/* ---- standalone CPU Adam --------------------------------------------------------------------- */
/* For frameworks that keep their own parameters and only want a fast optimizer step on the CPU:
 * fp32 master params and moments, gradients in fp32 / bf16 / fp16, oneTBB threads, AVX2 or
 * AVX-512 chosen at run time. */

typedef struct strata_cpu_adam strata_cpu_adam_t;

typedef enum strata_adam_mode {
  STRATA_ADAM = 0, /* L2 penalty added to the gradient (torch.optim.Adam) */
  STRATA_ADAMW = 1 /* decoupled weight decay (torch.optim.AdamW) */
} strata_adam_mode_t;

/* The SIMD instruction set of the CPU kernels; BEST picks the widest this CPU supports. */
typedef enum strata_isa {
  STRATA_ISA_BEST = 0,
  STRATA_ISA_SCALAR = 1,
  STRATA_ISA_AVX2 = 2,  /* AVX2 + FMA + F16C */
  STRATA_ISA_AVX512 = 3 /* AVX-512 F/BW/VL/DQ */
} strata_isa_t;

typedef struct strata_cpu_adam_config {
  size_t struct_size;      /* sizeof(strata_cpu_adam_config_t), set by the INIT macro */
  strata_adam_mode_t mode; /* default STRATA_ADAMW */
  int bias_correction;     /* non-zero: divide the moments by 1 - beta^t (default 1) */
  int num_threads;         /* threads for each step; 0 = all cores (default 0) */
  strata_isa_t isa;        /* default STRATA_ISA_BEST; one this CPU lacks: STRATA_ERR_UNSUPPORTED */
  uint64_t reserved[8];    /* must be zero */
} strata_cpu_adam_config_t;

#define STRATA_CPU_ADAM_CONFIG_INIT                                                                   \
  {                                                                                                   \
    sizeof(strata_cpu_adam_config_t), STRATA_ADAMW, 1, 0, STRATA_ISA_BEST, { 0, 0, 0, 0, 0, 0, 0, 0 } \
  }

/* Hyper-parameters of one step; they may change every step. */
typedef struct strata_adam_step_args {
  size_t struct_size;   /* sizeof(strata_adam_step_args_t), set by the INIT macro */
  float lr;             /* >= 0, default 1e-3 */
  float beta1;          /* [0, 1), default 0.9 */
  float beta2;          /* [0, 1), default 0.999 */
  float eps;            /* > 0, default 1e-8 */
  float weight_decay;   /* >= 0, default 0 */
  float grad_scale;     /* > 0: gradients are multiplied by this first (1/loss_scale x clip), default 1 */
  uint64_t reserved[8]; /* must be zero */
} strata_adam_step_args_t;

#define STRATA_ADAM_STEP_ARGS_INIT                                                                      \
  {                                                                                                     \
    sizeof(strata_adam_step_args_t), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, { 0, 0, 0, 0, 0, 0, 0, 0 } \
  }

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
STRATA_API strata_status_t strata_cpu_adam_create(const strata_cpu_adam_config_t* config, strata_cpu_adam_t** out);

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

/* ---- standalone CPU optimizers of any type (0.2) --------------------------------------------- */
/* Adam, AdamW, Lion and Adagrad (the names DeepSpeed configs use, any case) on the CPU, like
 * strata_cpu_adam_* (which stays). An optimizer keeps fp32 params and its own state arrays per
 * element, named by strata_cpu_optimizer_get_state: Adam / AdamW "exp_avg", "exp_avg_sq"; Lion
 * "exp_avg"; Adagrad "sum". */

typedef struct strata_cpu_optimizer strata_cpu_optimizer_t;

typedef struct strata_cpu_optimizer_config {
  size_t struct_size;   /* sizeof(strata_cpu_optimizer_config_t), set by the INIT macro */
  const char* type;     /* "Adam", "AdamW", "Lion" or "Adagrad"; NULL: "AdamW" */
  int bias_correction;  /* Adam / AdamW: non-zero divides the moments by 1 - beta^t (default 1) */
  int num_threads;      /* threads for each step; 0 = all cores (default 0) */
  strata_isa_t isa;     /* default STRATA_ISA_BEST; one this CPU lacks: STRATA_ERR_UNSUPPORTED */
  uint64_t reserved[8]; /* must be zero */
} strata_cpu_optimizer_config_t;

#define STRATA_CPU_OPTIMIZER_CONFIG_INIT                                                           \
  {                                                                                                \
    sizeof(strata_cpu_optimizer_config_t), NULL, 1, 0, STRATA_ISA_BEST, { 0, 0, 0, 0, 0, 0, 0, 0 } \
  }

/* Hyper-parameters of one step; each optimizer reads those it has: Adam / AdamW all; Lion lr,
 * beta1, beta2, weight_decay (DeepSpeed's defaults 1e-3, 0.9, 0.999, 0); Adagrad lr, eps,
 * weight_decay (1e-2, 1e-10, 0). The INIT values are Adam's. */
typedef struct strata_optimizer_step_args {
  size_t struct_size; /* sizeof(strata_optimizer_step_args_t), set by the INIT macro */
  float lr, beta1, beta2, eps, weight_decay;
  float grad_scale;     /* > 0: gradients are multiplied by this first (1/loss_scale x clip), default 1 */
  uint64_t reserved[8]; /* must be zero */
} strata_optimizer_step_args_t;

#define STRATA_OPTIMIZER_STEP_ARGS_INIT                                                                      \
  {                                                                                                          \
    sizeof(strata_optimizer_step_args_t), 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 1.0f, { 0, 0, 0, 0, 0, 0, 0, 0 } \
  }

/* One tensor of a step. params and state[i]: float[count], updated in place; state[i] for the
 * optimizer's i-th state array, NULL past its count. grads, params_out, count and the no-overlap
 * rule as in strata_adam_tensor_t. */
typedef struct strata_optimizer_tensor {
  float* params;
  float* state[2];
  const void* grads;
  strata_dtype_t grad_dtype;
  strata_dtype_t out_dtype;
  void* params_out;
  size_t count;
  void* reserved[2]; /* must be NULL */
} strata_optimizer_tensor_t;

/* An optimizer with its own threads and a step counter at 0; an unknown type is
 * STRATA_ERR_INVALID_ARGUMENT naming the accepted ones. Synchronous; thread-safe. */
STRATA_API strata_status_t strata_cpu_optimizer_create(const strata_cpu_optimizer_config_t* config,
                                                       strata_cpu_optimizer_t** out);
/* NULL is a no-op. Always STRATA_OK. */
STRATA_API strata_status_t strata_cpu_optimizer_destroy(strata_cpu_optimizer_t* opt);
/* One step over num_tensors tensors, as strata_cpu_adam_step: everything is checked first, on
 * error nothing changes and the counter stays. */
STRATA_API strata_status_t strata_cpu_optimizer_step(strata_cpu_optimizer_t* opt,
                                                     const strata_optimizer_step_args_t* args,
                                                     const strata_optimizer_tensor_t* tensors, size_t num_tensors);
/* Global L2 norm and finiteness of the gradients, as strata_cpu_adam_grad_norm. */
STRATA_API strata_status_t strata_cpu_optimizer_grad_norm(strata_cpu_optimizer_t* opt, const void* const* grads,
                                                          const strata_dtype_t* dtypes, const size_t* counts,
                                                          size_t num_grads, double* norm, int* all_finite);
STRATA_API strata_status_t strata_cpu_optimizer_get_step(const strata_cpu_optimizer_t* opt, int64_t* step);
STRATA_API strata_status_t strata_cpu_optimizer_set_step(strata_cpu_optimizer_t* opt, int64_t step);
/* The canonical type name ("AdamW", "Lion", ...), valid while the handle lives. */
STRATA_API strata_status_t strata_cpu_optimizer_get_type(const strata_cpu_optimizer_t* opt, const char** type);
/* *count receives the number of state arrays; when names is not NULL, names[i] for i < min(*count,
 * max_names) receives the i-th array's name, valid while the handle lives. */
STRATA_API strata_status_t strata_cpu_optimizer_get_state(const strata_cpu_optimizer_t* opt, const char** names,
                                                          size_t max_names, size_t* count);
STRATA_API strata_status_t strata_cpu_optimizer_get_isa(const strata_cpu_optimizer_t* opt, const char** isa);

/* ---- training engine ------------------------------------------------------------------------- */
/* strata owns the model state of the parameters registered with it: bit16 working params, fp32
 * gradients, fp32 master weights and Adam moments, each placed on the device, in pinned host
 * memory or on NVMe by the placement plan (see docs/config.md). The host program runs forward and
 * backward only: it fetches a param's bit16 values on the device when a layer needs them, releases
 * them after, hands over the gradient, and calls step after every micro-batch.
 *
 * Life cycle: create -> register every param -> (prepare) -> per micro-batch: fetch / release /
 * grad ..., step -> destroy. prepare builds the layout, plans, prints the plan and allocates; the
 * first fetch or step does it implicitly. A plan that does not fit is refused there with
 * STRATA_ERR_OUT_OF_MEMORY and a message saying which tier is short, by how much, and what to
 * change.
 *
 * Device pointers: on a CUDA device, fetched params and handed-over gradients are GPU memory and
 * `stream` arguments are cudaStream_t (NULL: synchronous with the host). On the host-emulated
 * device (config "strata": {"device": "host"}) they are ordinary host memory and `stream` must be
 * NULL. One thread at a time per engine; distinct engines are independent. */
typedef struct strata_engine strata_engine_t;

/* Receives log lines (device choice, placement plan, skipped steps); NULL lines never. */
typedef void (*strata_log_fn)(void* user, const char* line);

/* ---- Ranks -------------------------------------------------------------------------------
 * A communicator joins the ranks of data-parallel training. MPI: the world of mpirun (a plain
 * process is a world of one). NCCL: rank 0 calls strata_comm_make_nccl_id, the host program sends
 * the 128 bytes to every rank its own way, and each rank calls strata_comm_create_nccl with
 * them. A collective that does not complete within timeout_ms (<= 0: 5 minutes) fails with
 * STRATA_ERR_TIMEOUT naming it, and the communicator takes no more work. Destroy it after every
 * engine that uses it. Builds without MPI / NCCL return STRATA_ERR_UNSUPPORTED. */
typedef struct strata_comm strata_comm_t;
STRATA_API strata_status_t strata_comm_create_mpi(int64_t timeout_ms, strata_comm_t** out);
STRATA_API strata_status_t strata_comm_make_nccl_id(unsigned char id[128]);
STRATA_API strata_status_t strata_comm_create_nccl(const unsigned char id[128], int rank, int world_size,
                                                   int cuda_device, int64_t timeout_ms, strata_comm_t** out);
/* rank and world_size may be NULL. */
STRATA_API strata_status_t strata_comm_get_rank(const strata_comm_t* comm, int* rank, int* world_size);
/* NULL is a no-op. */
STRATA_API strata_status_t strata_comm_destroy(strata_comm_t* comm);

typedef struct strata_engine_options {
  size_t struct_size;      /* sizeof(strata_engine_options_t), set by the INIT macro */
  const char* config_json; /* the JSON config (DeepSpeed keys + "strata" section); required */
  strata_log_fn log;       /* NULL: lines go to stderr prefixed "strata: " */
  void* log_user;          /* passed to log */
  strata_comm_t* comm;     /* NULL: one rank. Otherwise data-parallel training over its ranks:
                            * DDP at ZeRO stage 0, shards of the state at stages 1-3 (CPU ranks
                            * over MPI with the host-emulated device, GPU ranks over NCCL);
                            * not owned, must outlive the engine */
  uint64_t reserved[7];    /* must be zero */
} strata_engine_options_t;
#define STRATA_ENGINE_OPTIONS_INIT                                                   \
  {                                                                                  \
    sizeof(strata_engine_options_t), NULL, NULL, NULL, NULL, { 0, 0, 0, 0, 0, 0, 0 } \
  }

typedef struct strata_engine_step_args {
  size_t struct_size;   /* sizeof(strata_engine_step_args_t), set by the INIT macro */
  double lr;            /* learning rate of this step; < 0 (default -1): the config's optimizer.params.lr */
  uint64_t reserved[8]; /* must be zero */
} strata_engine_step_args_t;
#define STRATA_ENGINE_STEP_ARGS_INIT                                    \
  {                                                                     \
    sizeof(strata_engine_step_args_t), -1.0, { 0, 0, 0, 0, 0, 0, 0, 0 } \
  }

typedef struct strata_engine_step_result {
  size_t struct_size;     /* sizeof(strata_engine_step_result_t): set it (the INIT macro) before the call */
  int boundary;           /* 1: this call ended an accumulation cycle (gradient_accumulation_steps) */
  int applied;            /* 1: the optimizer ran */
  int overflow;           /* 1: the gradients held inf / NaN and the step was skipped */
  double grad_norm;       /* global L2 norm of the averaged, unscaled gradients (before clipping) */
  double clip_coef;       /* factor gradient_clipping applied (1: none) */
  double loss_scale;      /* multiply the next micro-batch's loss by this (1 with bf16) */
  int64_t optimizer_step; /* optimizer steps applied so far */
  /* The update during backward (strata.speculate): chunks updated as their gradients became final,
   * and of those the ones restored and updated again at the step (clipping, another lr, overflow). */
  int64_t chunks_speculated;
  int64_t chunks_redone;
  uint64_t reserved[6];
} strata_engine_step_result_t;
#define STRATA_ENGINE_STEP_RESULT_INIT                                                         \
  {                                                                                            \
    sizeof(strata_engine_step_result_t), 0, 0, 0, 0.0, 1.0, 1.0, 0, 0, 0, { 0, 0, 0, 0, 0, 0 } \
  }

typedef struct strata_engine_stats {
  size_t struct_size;    /* sizeof(strata_engine_stats_t): set it (the INIT macro) before the call */
  uint64_t device_bytes; /* bytes the plan holds on each tier */
  uint64_t host_bytes;
  uint64_t nvme_bytes;
  uint64_t device_peak_bytes; /* high-water mark of the device arena */
  uint64_t bytes_h2d;         /* moved host -> device and device -> host */
  uint64_t bytes_d2h;
  uint64_t bytes_nvme_read; /* read from and written to NVMe during training */
  uint64_t bytes_nvme_write;
  double stall_fetch_seconds; /* the host blocked in fetch waiting for params */
  double stall_grad_seconds;  /* the host blocked waiting for gradient copies */
  double step_seconds;        /* in optimizer steps, of which: */
  double step_update_seconds; /*   the optimizer's update of host-resident state */
  double step_nvme_seconds;   /*   NVMe reads and writes */
  int64_t micro_steps, optimizer_steps, skipped_steps;
  double loss_scale;
  double last_grad_norm;
  int64_t prefetches;    /* chunk loads started ahead of need, following the recorded fetch order */
  int64_t prefetch_hits; /*   of which were fetched before being evicted */
  int64_t demand_loads;  /* chunk loads started by a fetch that found its chunk absent */
  int64_t order_changes; /* micro-batches whose fetch order left the recorded one */
  /* Added in 0.2 (a struct_size of the first release's layout, which ends here with 4 reserved
   * words, is still accepted and filled up to here): */
  uint64_t bytes_allreduce;  /* gradient buffers all-reduced across ranks (whole spans) */
  uint64_t bytes_allgather;  /* bit16 params all-gathered across ranks */
  double allreduce_seconds;  /* blocked in gradient all-reduces and the step's gathers */
  double allgather_seconds;  /* blocked in stage-3 gathers of params for fetches */
  int64_t allreduce_early;   /* chunk all-reduces started during backward (DDP) */
  int64_t bucket_flushes;    /* gradient buckets moved off the device */
  int64_t early_flushes;     /*   of which before their chunk's gradients were complete */
  uint64_t bytes_checkpoint; /* written by save */
  uint64_t reserved[16];
} strata_engine_stats_t;
#define STRATA_ENGINE_STATS_INIT                                                                                      \
  {                                                                                                                   \
    sizeof(strata_engine_stats_t), 0, 0, 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0.0, 0.0, 0, 0, 0, 0, 0, \
        0, 0.0, 0.0, 0, 0, 0, 0, {                                                                                    \
      0                                                                                                               \
    }                                                                                                                 \
  }

/* Parses the config, opens the device (a GPU when usable and not forbidden, else the emulated
 * one; "device": "cuda" without a usable GPU is an error that says why) and logs which. *out
 * receives the handle (NULL on error), owned by the caller. Synchronous; thread-safe. */
STRATA_API strata_status_t strata_engine_create(const strata_engine_options_t* options, strata_engine_t** out);
/* Waits for outstanding work, frees every tier (NVMe files included) and marks the handle dead:
 * later calls with it fail with STRATA_ERR_FAILED_PRECONDITION. NULL is a no-op. Returns the first
 * error met while tearing down (the handle is dead either way). */
STRATA_API strata_status_t strata_engine_destroy(strata_engine_t* engine);
/* Registers a parameter of `ndim` (0..8) dimensions, each >= 1. init: host memory holding its
 * values as init_dtype ([product of shape] elements, copied during the call), or NULL for strata's
 * own N(0, 0.02^2) initialisation from "strata": {"seed"} and the name. Before prepare only;
 * a name registered twice is STRATA_ERR_ALREADY_EXISTS. */
STRATA_API strata_status_t strata_engine_register_param(strata_engine_t* engine, const char* name, const int64_t* shape,
                                                        int ndim, strata_dtype_t init_dtype, const void* init);
/* Builds the layout, plans, logs the plan table and allocates every tier, writing the initial
 * values. Idempotent. Synchronous. */
STRATA_API strata_status_t strata_engine_prepare(strata_engine_t* engine);
/* Copies the plan table (after prepare) as a NUL-terminated string into buf[capacity]; *length
 * receives its length without the NUL. A too-small buffer fails with INVALID_ARGUMENT, *length set. */
STRATA_API strata_status_t strata_engine_get_plan(strata_engine_t* engine, char* buf, size_t capacity, size_t* length);
/* *device_ptr receives the param's full bit16 values on the device, valid until the matching
 * release. stream NULL: the values are there when this returns. Otherwise (CUDA) returns at once
 * and `stream` waits for them. Nested fetches need as many releases. Fails with NOT_FOUND for an
 * unregistered name, FAILED_PRECONDITION when every working buffer holds fetched params. */
STRATA_API strata_status_t strata_engine_fetch(strata_engine_t* engine, const char* name, void* stream,
                                               void** device_ptr);
/* Undoes one fetch. FAILED_PRECONDITION when the param is not fetched (double release). */
STRATA_API strata_status_t strata_engine_release(strata_engine_t* engine, const char* name);
/* Hands over the gradient of `name`: numel elements of dtype (the engine's bit16 dtype) at grad,
 * for a param fetched in this micro-batch, once per micro-batch. Gradients add up over the
 * micro-batches of an accumulation cycle; a bucket moves off the device when its chunk's gradients
 * are complete. stream NULL: grad may be reused on return; otherwise the copy follows the work on
 * `stream` so far, and later work on `stream` follows the copy. */
STRATA_API strata_status_t strata_engine_grad(strata_engine_t* engine, const char* name, const void* grad,
                                              strata_dtype_t dtype, size_t numel, void* stream);
/* Bracket one evaluation pass (forward only: fetch / release; grad and step are refused inside).
 * Prefetch records the fetch order of evaluation passes apart from training micro-batches, so
 * interleaved validation keeps both prefetched. No param may be fetched at either call. */
STRATA_API strata_status_t strata_engine_begin_eval(strata_engine_t* engine);
STRATA_API strata_status_t strata_engine_end_eval(strata_engine_t* engine);
/* Ends a micro-batch. Every gradient_accumulation_steps calls: overflow check, loss-scale update,
 * global-norm clipping, Adam on every chunk where its state lives, bit16 params refreshed where
 * they rest; synchronous. No param may be fetched. args may be NULL (defaults); result may be
 * NULL. */
STRATA_API strata_status_t strata_engine_step(strata_engine_t* engine, const strata_engine_step_args_t* args,
                                              strata_engine_step_result_t* result);
/* The learning rate the next optimizer step will be given (< 0: the config's), for the chunks
 * updated during backward; without it they use the last step's lr. A step given another lr redoes
 * them (exact either way, slower). Call before the cycle's last backward when the lr changes. */
STRATA_API strata_status_t strata_engine_set_lr(strata_engine_t* engine, double lr);
/* Waits until every copy and device operation strata started has finished. */
STRATA_API strata_status_t strata_engine_synchronize(strata_engine_t* engine);
/* The fp32 master values of `name` into host memory dst[numel] (numel must equal the param's). */
STRATA_API strata_status_t strata_engine_read_param(strata_engine_t* engine, const char* name, float* dst,
                                                    size_t numel);
/* The loss scale to multiply the next micro-batch's loss by (1 with bf16). */
STRATA_API strata_status_t strata_engine_get_loss_scale(strata_engine_t* engine, double* scale);
/* Counters since create (bytes, stall and step times, steps, prefetch). */
STRATA_API strata_status_t strata_engine_get_stats(strata_engine_t* engine, strata_engine_stats_t* stats);

/* Writes a checkpoint <dir>/<tag> (tag NULL or "": "step<N>"): fp32 masters, Adam moments, bit16
 * params, step counters, loss-scaler state, the param layout, with a checksum per array. Written
 * to <dir>/<tag>.tmp, fsync'd, renamed into place (replacing an older <dir>/<tag> atomically),
 * then <dir>/latest names it: a crash at any moment leaves the previous checkpoint loadable.
 * Only at the end of an accumulation cycle with no param fetched. Synchronous. Format:
 * docs/checkpoint.md. */
STRATA_API strata_status_t strata_engine_save(strata_engine_t* engine, const char* dir, const char* tag);
/* Loads <dir>/<tag>; tag NULL or "": `dir` itself if it is a checkpoint, else the one <dir>/latest
 * names. Every registered param must be in it with the same shape (chunk size and placement may
 * differ), the bit16 dtype must match, and every checksum must verify — checked before anything
 * changes; a refused load leaves the engine as it was. Synchronous. */
STRATA_API strata_status_t strata_engine_load(strata_engine_t* engine, const char* dir, const char* tag);
/* Writes the consolidated weights (dtype STRATA_DTYPE_FP32, _BF16 or _FP16, rounded from the fp32
 * masters) as <dir>/index.json + <dir>/weights.bin, published atomically. <dir> must be new, an
 * empty directory or an earlier export (ALREADY_EXISTS otherwise: nothing is touched). Across
 * ranks every rank calls it and rank 0 writes. Synchronous. */
STRATA_API strata_status_t strata_engine_export_weights(strata_engine_t* engine, const char* dir, strata_dtype_t dtype);

typedef enum strata_export_format {
  STRATA_EXPORT_STRATA = 0,     /* index.json + weights.bin (docs/checkpoint.md) */
  STRATA_EXPORT_SAFETENSORS = 1 /* model.safetensors: the safetensors package, Hugging Face from_pretrained */
} strata_export_format_t;

typedef struct strata_export_options {
  size_t struct_size;            /* sizeof(strata_export_options_t), set by the INIT macro */
  strata_dtype_t dtype;          /* default STRATA_DTYPE_FP32 */
  strata_export_format_t format; /* default STRATA_EXPORT_STRATA */
  const char* config_json;       /* NULL, or a JSON object written beside the weights as config.json
                                  * (a Hugging Face model config); copied during the call */
  uint64_t reserved[6];          /* must be zero */
} strata_export_options_t;
#define STRATA_EXPORT_OPTIONS_INIT                                                                       \
  {                                                                                                      \
    sizeof(strata_export_options_t), STRATA_DTYPE_FP32, STRATA_EXPORT_STRATA, NULL, { 0, 0, 0, 0, 0, 0 } \
  }

/* strata_engine_export_weights with a format and a model config (options NULL: the defaults). */
STRATA_API strata_status_t strata_engine_export(strata_engine_t* engine, const char* dir,
                                                const strata_export_options_t* options);

/* The device pointer to a param's bit16 values when they rest on the device for good (params not
 * offloaded, not a ZeRO-3 shard across ranks): valid until the engine is destroyed; every step and
 * load rewrite the values in place, so a framework can use the memory as the param's own storage.
 * Implies prepare. FAILED_PRECONDITION for a param that lives in working buffers: fetch it. */
STRATA_API strata_status_t strata_engine_map_param(strata_engine_t* engine, const char* name, void** device_ptr);

/* ---- earlier names -----------------------------------------------------------------------------
 * The first release's names for four functions that broke rule 1 (strata_<object>_<verb>). They
 * remain exported and do exactly what their new names do; new code should use the new names. */
STRATA_API strata_status_t strata_comm_nccl_id(unsigned char id[128]); /* = strata_comm_make_nccl_id */
STRATA_API strata_status_t strata_comm_rank(const strata_comm_t* comm, int* rank, int* world_size); /* = _get_rank */
STRATA_API strata_status_t strata_engine_plan(strata_engine_t* engine, char* buf, size_t capacity,
                                              size_t* length); /* = strata_engine_get_plan */
STRATA_API strata_status_t strata_engine_loss_scale(strata_engine_t* engine, double* scale); /* = _get_loss_scale */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* STRATA_H_ */
