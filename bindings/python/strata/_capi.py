"""The C API of libstrata (bindings/c/strata.h) through ctypes: the library, its structs, its
functions, and every non-OK status turned into a Python exception carrying strata_last_error().

Nothing here knows about torch; strata.torch builds on it. ctypes (not a compiled module) keeps
the package independent of any Python or torch ABI: docs/adr/0002-python-over-ctypes.md.
"""
from __future__ import annotations

import ctypes
import os
from ctypes import (POINTER, Structure, c_char, c_char_p, c_double, c_int, c_int64, c_size_t, c_uint64, c_void_p)
from pathlib import Path

# ---- errors --------------------------------------------------------------------------------------


class StrataError(RuntimeError):
    """A strata call failed. `code` is the strata_status_t value, `message` strata_last_error()."""

    code = -1

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(StrataError, ValueError):
    code = 1


class FailedPrecondition(StrataError):
    code = 2


class NotFound(StrataError, LookupError):
    code = 3


class AlreadyExists(StrataError, FileExistsError):
    code = 4


class OutOfMemory(StrataError, MemoryError):
    code = 5


class NoSpace(StrataError, OSError):
    code = 6


class IOFailure(StrataError, OSError):
    code = 7


class DataLoss(StrataError):
    code = 8


class Unsupported(StrataError, NotImplementedError):
    code = 9


class CudaError(StrataError):
    code = 10


class NcclError(StrataError):
    code = 11


class CommError(StrataError):
    code = 12


class Timeout(StrataError, TimeoutError):
    code = 13


class InternalError(StrataError):
    code = 14


class NonFinite(StrataError, FloatingPointError):
    code = 15


class Cancelled(StrataError):
    code = 16


_BY_CODE = {cls.code: cls for cls in (InvalidArgument, FailedPrecondition, NotFound, AlreadyExists, OutOfMemory,
                                       NoSpace, IOFailure, DataLoss, Unsupported, CudaError, NcclError, CommError,
                                       Timeout, InternalError, NonFinite, Cancelled)}

# ---- enums ---------------------------------------------------------------------------------------

DTYPE_FP32, DTYPE_BF16, DTYPE_FP16 = 0, 1, 2
ADAM, ADAMW = 0, 1
ISA_BEST, ISA_SCALAR, ISA_AVX2, ISA_AVX512 = 0, 1, 2, 3
EXPORT_STRATA, EXPORT_SAFETENSORS = 0, 1

# ---- structs (each begins with struct_size; reserved words stay zero) ----------------------------


class CpuAdamConfig(Structure):
    _fields_ = [("struct_size", c_size_t), ("mode", c_int), ("bias_correction", c_int), ("num_threads", c_int),
                ("isa", c_int), ("reserved", c_uint64 * 8)]


class AdamStepArgs(Structure):
    _fields_ = [("struct_size", c_size_t), ("lr", ctypes.c_float), ("beta1", ctypes.c_float),
                ("beta2", ctypes.c_float), ("eps", ctypes.c_float), ("weight_decay", ctypes.c_float),
                ("grad_scale", ctypes.c_float), ("reserved", c_uint64 * 8)]


class AdamTensor(Structure):
    _fields_ = [("params", c_void_p), ("exp_avg", c_void_p), ("exp_avg_sq", c_void_p), ("grads", c_void_p),
                ("grad_dtype", c_int), ("out_dtype", c_int), ("params_out", c_void_p), ("count", c_size_t),
                ("reserved", c_void_p * 2)]


class CpuOptimizerConfig(Structure):
    _fields_ = [("struct_size", c_size_t), ("type", c_char_p), ("bias_correction", c_int), ("num_threads", c_int),
                ("isa", c_int), ("reserved", c_uint64 * 8)]


class OptimizerStepArgs(Structure):
    _fields_ = [("struct_size", c_size_t), ("lr", ctypes.c_float), ("beta1", ctypes.c_float),
                ("beta2", ctypes.c_float), ("eps", ctypes.c_float), ("weight_decay", ctypes.c_float),
                ("grad_scale", ctypes.c_float), ("reserved", c_uint64 * 8)]


class OptimizerTensor(Structure):
    _fields_ = [("params", c_void_p), ("state", c_void_p * 2), ("grads", c_void_p), ("grad_dtype", c_int),
                ("out_dtype", c_int), ("params_out", c_void_p), ("count", c_size_t), ("reserved", c_void_p * 2)]


LOG_FN = ctypes.CFUNCTYPE(None, c_void_p, c_char_p)


class EngineOptions(Structure):
    _fields_ = [("struct_size", c_size_t), ("config_json", c_char_p), ("log", LOG_FN), ("log_user", c_void_p),
                ("comm", c_void_p), ("reserved", c_uint64 * 7)]


class EngineStepArgs(Structure):
    _fields_ = [("struct_size", c_size_t), ("lr", c_double), ("reserved", c_uint64 * 8)]


class EngineStepResult(Structure):
    _fields_ = [("struct_size", c_size_t), ("boundary", c_int), ("applied", c_int), ("overflow", c_int),
                ("grad_norm", c_double), ("clip_coef", c_double), ("loss_scale", c_double),
                ("optimizer_step", c_int64), ("chunks_speculated", c_int64), ("chunks_redone", c_int64),
                ("reserved", c_uint64 * 6)]


class EngineStats(Structure):
    _fields_ = [("struct_size", c_size_t), ("device_bytes", c_uint64), ("host_bytes", c_uint64),
                ("nvme_bytes", c_uint64), ("device_peak_bytes", c_uint64), ("bytes_h2d", c_uint64),
                ("bytes_d2h", c_uint64), ("bytes_nvme_read", c_uint64), ("bytes_nvme_write", c_uint64),
                ("stall_fetch_seconds", c_double), ("stall_grad_seconds", c_double), ("step_seconds", c_double),
                ("step_update_seconds", c_double), ("step_nvme_seconds", c_double), ("micro_steps", c_int64),
                ("optimizer_steps", c_int64), ("skipped_steps", c_int64), ("loss_scale", c_double),
                ("last_grad_norm", c_double), ("prefetches", c_int64), ("prefetch_hits", c_int64),
                ("demand_loads", c_int64), ("order_changes", c_int64), ("bytes_allreduce", c_uint64),
                ("bytes_allgather", c_uint64), ("allreduce_seconds", c_double), ("allgather_seconds", c_double),
                ("allreduce_early", c_int64), ("bucket_flushes", c_int64), ("early_flushes", c_int64),
                ("bytes_checkpoint", c_uint64), ("reserved", c_uint64 * 16)]


class ExportOptions(Structure):
    _fields_ = [("struct_size", c_size_t), ("dtype", c_int), ("format", c_int), ("config_json", c_char_p),
                ("reserved", c_uint64 * 6)]


def new(struct_type, **fields):
    """A struct with struct_size set and everything else zero (the C INIT macros' job)."""
    s = struct_type()
    s.struct_size = ctypes.sizeof(struct_type)
    for k, v in fields.items():
        setattr(s, k, v)
    return s


# ---- the library ---------------------------------------------------------------------------------


def _candidates():
    env = os.environ.get("STRATA_LIBRARY")
    if env:
        yield Path(env)
        return
    here = Path(__file__).resolve().parent
    for name in ("libstrata.so.0", "libstrata.so"):
        yield here / name  # installed by `pip install bindings/python`
    root = here.parents[2]  # a checkout: bindings/python/strata -> the repository
    for build in ("build", "build-asan"):
        yield root / build / "bindings" / "libstrata.so.0"


def _load():
    tried = []
    for path in _candidates():
        tried.append(str(path))
        if path.exists():
            return ctypes.CDLL(str(path)), path
    raise ImportError("strata: libstrata.so not found (tried " + ", ".join(tried) +
                      "); install the package (pip install bindings/python) or set STRATA_LIBRARY")


lib, library_path = _load()

_status = c_int


def _declare(name, argtypes):
    f = getattr(lib, name)
    f.argtypes = argtypes
    f.restype = _status
    return f


lib.strata_last_error.restype = c_char_p
lib.strata_last_error.argtypes = []
lib.strata_status_string.restype = c_char_p
lib.strata_status_string.argtypes = [c_int]
lib.strata_version.restype = c_int
lib.strata_version.argtypes = []
lib.strata_version_string.restype = c_char_p
lib.strata_version_string.argtypes = []

_vp = c_void_p
_pvp = POINTER(c_void_p)
F = {
    "strata_cpu_adam_create": [POINTER(CpuAdamConfig), _pvp],
    "strata_cpu_adam_destroy": [_vp],
    "strata_cpu_adam_step": [_vp, POINTER(AdamStepArgs), POINTER(AdamTensor), c_size_t],
    "strata_cpu_adam_grad_norm": [_vp, POINTER(c_void_p), POINTER(c_int), POINTER(c_size_t), c_size_t, POINTER(c_double),
                                  POINTER(c_int)],
    "strata_cpu_adam_get_step": [_vp, POINTER(c_int64)],
    "strata_cpu_adam_set_step": [_vp, c_int64],
    "strata_cpu_adam_get_isa": [_vp, POINTER(c_char_p)],
    "strata_cpu_optimizer_create": [POINTER(CpuOptimizerConfig), _pvp],
    "strata_cpu_optimizer_destroy": [_vp],
    "strata_cpu_optimizer_step": [_vp, POINTER(OptimizerStepArgs), POINTER(OptimizerTensor), c_size_t],
    "strata_cpu_optimizer_get_step": [_vp, POINTER(c_int64)],
    "strata_cpu_optimizer_set_step": [_vp, c_int64],
    "strata_cpu_optimizer_get_type": [_vp, POINTER(c_char_p)],
    "strata_cpu_optimizer_get_state": [_vp, POINTER(c_char_p), c_size_t, POINTER(c_size_t)],
    "strata_cpu_optimizer_get_isa": [_vp, POINTER(c_char_p)],
    "strata_comm_create_mpi": [c_int64, _pvp],
    "strata_comm_make_nccl_id": [POINTER(c_char)],
    "strata_comm_create_nccl": [POINTER(c_char), c_int, c_int, c_int, c_int64, _pvp],
    "strata_comm_get_rank": [_vp, POINTER(c_int), POINTER(c_int)],
    "strata_comm_destroy": [_vp],
    "strata_engine_create": [POINTER(EngineOptions), _pvp],
    "strata_engine_destroy": [_vp],
    "strata_engine_register_param": [_vp, c_char_p, POINTER(c_int64), c_int, c_int, c_void_p],
    "strata_engine_prepare": [_vp],
    "strata_engine_get_plan": [_vp, c_char_p, c_size_t, POINTER(c_size_t)],
    "strata_engine_fetch": [_vp, c_char_p, c_void_p, _pvp],
    "strata_engine_release": [_vp, c_char_p],
    "strata_engine_grad": [_vp, c_char_p, c_void_p, c_int, c_size_t, c_void_p],
    "strata_engine_begin_eval": [_vp],
    "strata_engine_end_eval": [_vp],
    "strata_engine_step": [_vp, POINTER(EngineStepArgs), POINTER(EngineStepResult)],
    "strata_engine_set_lr": [_vp, c_double],
    "strata_engine_synchronize": [_vp],
    "strata_engine_read_param": [_vp, c_char_p, c_void_p, c_size_t],
    "strata_engine_get_loss_scale": [_vp, POINTER(c_double)],
    "strata_engine_get_stats": [_vp, POINTER(EngineStats)],
    "strata_engine_save": [_vp, c_char_p, c_char_p],
    "strata_engine_load": [_vp, c_char_p, c_char_p],
    "strata_engine_export_weights": [_vp, c_char_p, c_int],
    "strata_engine_export": [_vp, c_char_p, POINTER(ExportOptions)],
    "strata_engine_map_param": [_vp, c_char_p, _pvp],
}
fn = {name: _declare(name, args) for name, args in F.items()}


def check(status: int) -> None:
    """Raises the exception of a non-OK status, with the library's message for this thread."""
    if status == 0:
        return
    message = (lib.strata_last_error() or b"").decode("utf-8", "replace")
    if not message:
        message = lib.strata_status_string(status).decode()
    raise _BY_CODE.get(status, StrataError)(message, status)


def call(name: str, *args) -> None:
    check(fn[name](*args))


def version() -> str:
    return lib.strata_version_string().decode()
