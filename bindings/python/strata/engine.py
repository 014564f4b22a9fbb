"""strata's engine and communicators from Python, one method per C API call (no torch needed).

Pointers are integers (a tensor's data_ptr(), an array's address). On the host-emulated device
("strata": {"device": "host"}) device memory is host memory; on a GPU it is CUDA memory and
`stream` arguments are cudaStream_t handles (torch.cuda.current_stream().cuda_stream).
"""
from __future__ import annotations

import ctypes
import json
from typing import Callable, Iterable, Mapping

from . import _capi as C


def _b(s: str) -> bytes:
    return s.encode("utf-8")


def config_text(config) -> str:
    """The engine's JSON config from a dict (DeepSpeed keys + "strata") or a JSON string / path."""
    if isinstance(config, Mapping):
        return json.dumps(config)
    if isinstance(config, (bytes, str)):
        text = config.decode() if isinstance(config, bytes) else config
        if text.lstrip().startswith("{"):
            return text
        with open(text, encoding="utf-8") as f:  # a path to a JSON file
            return f.read()
    raise TypeError(f"config must be a dict, a JSON string or a path, not {type(config).__name__}")


class Comm:
    """The ranks of data-parallel training (strata_comm_*). mpi(): the world of mpirun (a plain
    process is a world of one). nccl(): GPU ranks bootstrapped with an id rank 0 made (nccl_id())
    and the host program sent to every rank. Destroy after every engine that uses it."""

    def __init__(self, handle: int):
        self._h = ctypes.c_void_p(handle)

    @classmethod
    def mpi(cls, timeout_s: float = 0) -> "Comm":
        h = ctypes.c_void_p()
        C.call("strata_comm_create_mpi", int(timeout_s * 1000), ctypes.byref(h))
        return cls(h.value)

    @staticmethod
    def nccl_id() -> bytes:
        buf = ctypes.create_string_buffer(128)
        C.call("strata_comm_make_nccl_id", buf)
        return buf.raw

    @classmethod
    def nccl(cls, nccl_id: bytes, rank: int, world_size: int, cuda_device: int, timeout_s: float = 0) -> "Comm":
        if len(nccl_id) != 128:
            raise C.InvalidArgument(f"an NCCL id is 128 bytes, not {len(nccl_id)}")
        h = ctypes.c_void_p()
        buf = ctypes.create_string_buffer(bytes(nccl_id), 128)
        C.call("strata_comm_create_nccl", buf, rank, world_size, cuda_device, int(timeout_s * 1000), ctypes.byref(h))
        return cls(h.value)

    @property
    def handle(self) -> int:
        return self._h.value

    @property
    def rank(self) -> int:
        r, w = ctypes.c_int(), ctypes.c_int()
        C.call("strata_comm_get_rank", self._h, ctypes.byref(r), ctypes.byref(w))
        return r.value

    @property
    def world_size(self) -> int:
        r, w = ctypes.c_int(), ctypes.c_int()
        C.call("strata_comm_get_rank", self._h, ctypes.byref(r), ctypes.byref(w))
        return w.value

    def destroy(self) -> None:
        if self._h.value:
            C.call("strata_comm_destroy", self._h)
            self._h = ctypes.c_void_p()


class StepResult:
    __slots__ = ("boundary", "applied", "overflow", "grad_norm", "clip_coef", "loss_scale", "optimizer_step",
                 "chunks_speculated", "chunks_redone")

    def __init__(self, r: C.EngineStepResult):
        for k in self.__slots__:
            setattr(self, k, getattr(r, k))
        self.boundary, self.applied, self.overflow = bool(r.boundary), bool(r.applied), bool(r.overflow)

    def __repr__(self) -> str:
        return "StepResult(" + ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__) + ")"


class Engine:
    """strata_engine_*: register params, prepare, fetch / release / grad per micro-batch, step,
    checkpoints, exports. `log` receives the engine's lines (None: stderr)."""

    def __init__(self, config, comm: Comm | None = None, log: Callable[[str], None] | None = None):
        self._h, self._closed = ctypes.c_void_p(), True  # until create succeeded
        self._text = _b(config_text(config))
        self._log_cb = C.LOG_FN(lambda _user, line: log(line.decode("utf-8", "replace"))) if log else C.LOG_FN()
        opts = C.new(C.EngineOptions, config_json=self._text, log=self._log_cb, comm=comm.handle if comm else None)
        h = ctypes.c_void_p()
        self._closed = False
        C.call("strata_engine_create", ctypes.byref(opts), ctypes.byref(h))
        self._h = h
        self.comm = comm

    # -- life cycle
    def close(self) -> None:
        """Destroys the engine (NVMe files included). Later calls fail with FailedPrecondition:
        the handle stays, and the library keeps its tombstone."""
        if self._h.value and not self._closed:
            self._closed = True
            C.call("strata_engine_destroy", self._h)

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - a destructor must not raise; close() reports errors
            pass

    def register_param(self, name: str, shape: Iterable[int], init_dtype: int = C.DTYPE_FP32, init: int | None = None) -> None:
        dims = (ctypes.c_int64 * max(1, len(tuple(shape))))(*shape)
        C.call("strata_engine_register_param", self._h, _b(name), dims, len(tuple(shape)), init_dtype,
               ctypes.c_void_p(init) if init else None)

    def prepare(self) -> None:
        C.call("strata_engine_prepare", self._h)

    def plan(self) -> str:
        n = ctypes.c_size_t()
        try:
            C.call("strata_engine_get_plan", self._h, None, 0, ctypes.byref(n))
        except C.InvalidArgument:
            pass  # buf NULL: only the length was wanted
        buf = ctypes.create_string_buffer(n.value + 1)
        C.call("strata_engine_get_plan", self._h, buf, n.value + 1, ctypes.byref(n))
        return buf.value.decode()

    # -- per micro-batch
    def fetch(self, name: str, stream: int | None = None) -> int:
        p = ctypes.c_void_p()
        C.call("strata_engine_fetch", self._h, _b(name), ctypes.c_void_p(stream) if stream else None, ctypes.byref(p))
        return p.value

    def release(self, name: str) -> None:
        C.call("strata_engine_release", self._h, _b(name))

    def map_param(self, name: str) -> int:
        p = ctypes.c_void_p()
        C.call("strata_engine_map_param", self._h, _b(name), ctypes.byref(p))
        return p.value

    def grad(self, name: str, ptr: int, dtype: int, numel: int, stream: int | None = None) -> None:
        C.call("strata_engine_grad", self._h, _b(name), ctypes.c_void_p(ptr), dtype, numel,
               ctypes.c_void_p(stream) if stream else None)

    def begin_eval(self) -> None:
        C.call("strata_engine_begin_eval", self._h)

    def end_eval(self) -> None:
        C.call("strata_engine_end_eval", self._h)

    def step(self, lr: float | None = None) -> StepResult:
        args = C.new(C.EngineStepArgs, lr=-1.0 if lr is None else float(lr))
        r = C.new(C.EngineStepResult)
        C.call("strata_engine_step", self._h, ctypes.byref(args), ctypes.byref(r))
        return StepResult(r)

    def set_lr(self, lr: float | None) -> None:
        """The lr the next step will be given (None: the config's), for the update during backward."""
        C.call("strata_engine_set_lr", self._h, -1.0 if lr is None else float(lr))

    def synchronize(self) -> None:
        C.call("strata_engine_synchronize", self._h)

    def read_param(self, name: str, dst: int, numel: int) -> None:
        C.call("strata_engine_read_param", self._h, _b(name), ctypes.c_void_p(dst), numel)

    @property
    def loss_scale(self) -> float:
        s = ctypes.c_double()
        C.call("strata_engine_get_loss_scale", self._h, ctypes.byref(s))
        return s.value

    def stats(self) -> dict:
        s = C.new(C.EngineStats)
        C.call("strata_engine_get_stats", self._h, ctypes.byref(s))
        return {name: getattr(s, name) for name, _ in C.EngineStats._fields_ if name not in ("struct_size", "reserved")}

    # -- checkpoints and exports
    def save(self, directory: str, tag: str | None = None) -> None:
        C.call("strata_engine_save", self._h, _b(str(directory)), _b(tag) if tag else None)

    def load(self, directory: str, tag: str | None = None) -> None:
        C.call("strata_engine_load", self._h, _b(str(directory)), _b(tag) if tag else None)

    def export(self, directory: str, dtype: int = C.DTYPE_FP32, fmt: int = C.EXPORT_STRATA,
               config_json: str | None = None) -> None:
        o = C.new(C.ExportOptions, dtype=dtype, format=fmt, config_json=_b(config_json) if config_json else None)
        C.call("strata_engine_export", self._h, _b(str(directory)), ctypes.byref(o))


class CpuOptimizerKernel:
    """The standalone CPU optimizer of any type (strata_cpu_optimizer_*: Adam, AdamW, Lion,
    Adagrad) over raw pointers; strata.torch.CPULion / CPUAdagrad wrap it as torch optimizers."""

    def __init__(self, type_name: str, bias_correction: bool = True, num_threads: int = 0, isa: int = C.ISA_BEST):
        cfg = C.new(C.CpuOptimizerConfig, type=type_name.encode(), bias_correction=int(bias_correction),
                    num_threads=num_threads, isa=isa)
        h = ctypes.c_void_p()
        C.call("strata_cpu_optimizer_create", ctypes.byref(cfg), ctypes.byref(h))
        self._h = h
        n = ctypes.c_size_t()
        names = (ctypes.c_char_p * 2)()
        C.call("strata_cpu_optimizer_get_state", self._h, names, 2, ctypes.byref(n))
        self.state_names = [names[i].decode() for i in range(n.value)]

    def __del__(self):
        if getattr(self, "_h", None) is not None and self._h.value:
            C.fn["strata_cpu_optimizer_destroy"](self._h)
            self._h = ctypes.c_void_p()

    def _text(self, fn: str) -> str:
        s = ctypes.c_char_p()
        C.call(fn, self._h, ctypes.byref(s))
        return s.value.decode()

    @property
    def type(self) -> str:
        return self._text("strata_cpu_optimizer_get_type")

    @property
    def isa(self) -> str:
        return self._text("strata_cpu_optimizer_get_isa")

    @property
    def step_count(self) -> int:
        n = ctypes.c_int64()
        C.call("strata_cpu_optimizer_get_step", self._h, ctypes.byref(n))
        return n.value

    @step_count.setter
    def step_count(self, n: int) -> None:
        C.call("strata_cpu_optimizer_set_step", self._h, n)

    def step(self, tensors, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
             weight_decay: float = 0.0, grad_scale: float = 1.0) -> None:
        """tensors: (params_ptr, [state_ptr, ...], grads_ptr, grad_dtype, count) per tensor."""
        arr = (C.OptimizerTensor * len(tensors))()
        for t, (p, states, g, gd, n) in zip(arr, tensors):
            t.params, t.grads, t.grad_dtype, t.count = p, g, gd, n
            for i, s in enumerate(states):
                t.state[i] = s
            t.out_dtype = C.DTYPE_BF16
        args = C.new(C.OptimizerStepArgs, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                     grad_scale=grad_scale)
        C.call("strata_cpu_optimizer_step", self._h, ctypes.byref(args), arr, len(tensors))


class CpuAdamKernel:
    """The standalone CPU Adam (strata_cpu_adam_*) over raw pointers; strata.torch.CPUAdam wraps it
    as a torch optimizer."""

    def __init__(self, adamw: bool = True, bias_correction: bool = True, num_threads: int = 0, isa: int = C.ISA_BEST):
        cfg = C.new(C.CpuAdamConfig, mode=C.ADAMW if adamw else C.ADAM, bias_correction=int(bias_correction),
                    num_threads=num_threads, isa=isa)
        h = ctypes.c_void_p()
        C.call("strata_cpu_adam_create", ctypes.byref(cfg), ctypes.byref(h))
        self._h = h

    def __del__(self):
        if getattr(self, "_h", None) is not None and self._h.value:
            C.fn["strata_cpu_adam_destroy"](self._h)
            self._h = ctypes.c_void_p()

    @property
    def isa(self) -> str:
        s = ctypes.c_char_p()
        C.call("strata_cpu_adam_get_isa", self._h, ctypes.byref(s))
        return s.value.decode()

    @property
    def step_count(self) -> int:
        n = ctypes.c_int64()
        C.call("strata_cpu_adam_get_step", self._h, ctypes.byref(n))
        return n.value

    @step_count.setter
    def step_count(self, n: int) -> None:
        C.call("strata_cpu_adam_set_step", self._h, n)

    def step(self, tensors, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
             grad_scale: float = 1.0) -> None:
        """tensors: (params_ptr, exp_avg_ptr, exp_avg_sq_ptr, grads_ptr, grad_dtype, count,
        params_out_ptr or 0, out_dtype) per tensor."""
        arr = (C.AdamTensor * len(tensors))()
        for t, (p, m, v, g, gd, n, out, od) in zip(arr, tensors):
            t.params, t.exp_avg, t.exp_avg_sq, t.grads = p, m, v, g
            t.grad_dtype, t.count = gd, n
            t.params_out, t.out_dtype = (out or None), od
        args = C.new(C.AdamStepArgs, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay,
                     grad_scale=grad_scale)
        C.call("strata_cpu_adam_step", self._h, ctypes.byref(args), arr, len(tensors))
