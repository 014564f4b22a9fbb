"""strata.torch — train any torch.nn.Module through strata's engine, in the shape of
deepspeed.initialize:

    engine = strata.torch.initialize(model, config)   # config: DeepSpeed keys + "strata", dict or JSON
    for batch in data:
        loss = loss_fn(engine(batch))
        engine.backward(loss)                          # fp16 loss scaling applied
        engine.step()                                  # accumulation, clipping, the optimizer on its tier

How the parameters meet the engine (docs/python.md):
- every parameter is registered once by its module name (tied ones once) with the model's values;
- params resting on the device (ZeRO stage <= 2 placements): each param's .data becomes a view of
  the engine's bit16 device buffer (strata_engine_map_param), updated in place by every step;
- params offloaded (stage 3 with offload_param, or stage 3 across ranks): a module's params are
  fetched before its forward and released after (.data becomes a zero-byte placeholder of the
  same shape); tensors autograd saves for backward that live in a param's memory (the param
  itself, or a view such as weight.t()) are saved as references and re-fetched when backward
  unpacks them;
- gradients go to the engine as soon as autograd finished each one (post-accumulate-grad hooks),
  in the engine's bit16 dtype, ordered on torch's current CUDA stream; param.grad is freed after.

strata.torch.CPUAdam is a torch.optim.Optimizer over strata's standalone CPU Adam.
"""
from __future__ import annotations

import ctypes
import json
import math
import os
from typing import Any, Iterable, Mapping

import torch

from . import _capi as C
from .engine import Comm, Engine, StepResult, config_text

_BIT16 = {torch.bfloat16: C.DTYPE_BF16, torch.float16: C.DTYPE_FP16}
_ALL = {torch.float32: C.DTYPE_FP32, **_BIT16}

__all__ = ["initialize", "TorchEngine", "CPUAdam", "load_init_values"]


# ---- memory the engine owns, seen as torch tensors -----------------------------------------------


class _CudaArray:
    """__cuda_array_interface__ of `n` 16-bit words at `ptr` (read as int16, viewed as the dtype)."""

    def __init__(self, ptr: int, n: int):
        self.__cuda_array_interface__ = {"shape": (n,), "typestr": "<i2", "data": (ptr, False), "version": 3,
                                         "strides": None, "stream": None}


def _view(ptr: int, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    n = math.prod(shape)
    if device.type == "cuda":
        flat = torch.as_tensor(_CudaArray(ptr, n), device=device).view(dtype)
    else:
        flat = torch.frombuffer((ctypes.c_uint16 * n).from_address(ptr), dtype=dtype)
    return flat.view(shape)


def _placeholder(shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A param's .data between uses: its shape and dtype, zero bytes of its own (stride 0)."""
    return torch.zeros((), dtype=dtype, device=device).expand(shape)


def _stream(device: torch.device) -> int | None:
    return torch.cuda.current_stream(device).cuda_stream if device.type == "cuda" else None


# ---- initial values --------------------------------------------------------------------------------


def load_init_values(init) -> Mapping[str, torch.Tensor]:
    """Initial values by param name: a state_dict, or the path of a .safetensors file (or of a
    directory holding model.safetensors)."""
    if init is None:
        return {}
    if isinstance(init, Mapping):
        return init
    path = os.fspath(init)
    if os.path.isdir(path):
        path = os.path.join(path, "model.safetensors")
    try:
        from safetensors.torch import load_file
    except ImportError as e:  # pragma: no cover - the tests install safetensors
        raise C.Unsupported("initialising from a safetensors file needs the safetensors package") from e
    return load_file(path)


# ---- the engine for a module ----------------------------------------------------------------------


class TorchEngine:
    """The engine behind initialize(): call it like the model; backward(loss), step()."""

    def __init__(self, model: torch.nn.Module, config, comm: Comm | str | None = "auto", init=None,
                 log=None):
        if not isinstance(model, torch.nn.Module):
            raise C.InvalidArgument(f"initialize: model must be a torch.nn.Module, not {type(model).__name__}")
        self.module = model
        cfg = json.loads(config_text(config))
        self.dtype = torch.float16 if cfg.get("fp16", {}).get("enabled", False) else torch.bfloat16
        named = list(model.named_parameters())  # tied parameters once, under their first name
        if not named:
            raise C.InvalidArgument("initialize: the model has no parameters")
        devices = {p.device for _, p in named}
        if len(devices) != 1:
            raise C.InvalidArgument("initialize: the model's parameters are on several devices: " +
                                    ", ".join(sorted(map(str, devices))))
        self.device = devices.pop()
        st = cfg.setdefault("strata", {})
        if self.device.type == "cuda":
            st.setdefault("device", "cuda")
            torch.cuda.set_device(self.device)
        else:
            st.setdefault("device", "host")  # a CPU model: the host-emulated device
            if st["device"] == "host" and "device_bytes" not in st:
                st["device_bytes"] = 4 * sum(p.numel() for _, p in named) + (64 << 20)
        self.comm, self._own_comm = self._make_comm(comm)
        z = cfg.get("zero_optimization", {})
        offload = z.get("offload_param", {}).get("device", "none") in ("cpu", "nvme")
        if offload or (z.get("stage", 0) == 3 and self.comm is not None and self.comm.world_size > 1):
            # Backward holds a module's params from its first use until their gradients are in, and a
            # tied embedding for the whole backward: more working buffers than the engine's default 2.
            st.setdefault("live_chunks", 4)
        self.names = [n for n, _ in named]
        self.params = {n: p for n, p in named}
        self._name_of = {id(p): n for n, p in named}
        aliases = {}
        for n, p in model.named_parameters(remove_duplicate=False):
            aliases[n] = self._name_of[id(p)]
        self._aliases = aliases

        self.engine = Engine(cfg, comm=self.comm, log=log)
        values = load_init_values(init)
        unknown = sorted(k for k in values if k not in aliases)
        if unknown:
            raise C.InvalidArgument("initialize: init holds values for names the model does not have: " +
                                    ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else ""))
        by_canonical = {aliases[k]: v for k, v in values.items()}
        for n, p in named:
            v = by_canonical.get(n, p.detach())
            if tuple(v.shape) != tuple(p.shape):
                raise C.InvalidArgument(f"initialize: init value of '{n}' has shape {list(v.shape)}, the param "
                                        f"{list(p.shape)}")
            v = v.detach().to("cpu")
            if v.dtype not in _ALL:
                v = v.float()
            v = v.contiguous()
            self.engine.register_param(n, tuple(p.shape), _ALL[v.dtype], v.data_ptr())
        self.engine.prepare()
        # Floating buffers follow the engine's dtype (the params do below); the rest stay.
        for mod in model.modules():
            for bn, b in list(mod._buffers.items()):
                if b is not None and b.is_floating_point():
                    mod._buffers[bn] = b.to(self.dtype)
        self.resident = self._try_map()
        self._fetched: dict[str, int] = {}        # name -> outstanding fetches of ours
        self._held: set[str] = set()              # fetched by backward (saved tensors), until the grad arrives
        self._live: dict[int, str] = {}           # storage address -> name, of fetched params
        self._handles = []
        self._snapshot = self._param_ids()
        self._backward_done = False
        self._in_forward = False
        self._install_grad_hooks()
        if not self.resident:
            self._install_module_hooks()
        self.training = model.training

    # -- set-up
    def _make_comm(self, comm):
        if comm is None:
            return None, False
        if isinstance(comm, Comm):
            return comm, False
        if comm != "auto":
            raise C.InvalidArgument("initialize: comm must be a strata.Comm, 'auto' or None")
        if torch.distributed.is_available() and torch.distributed.is_initialized() and self.device.type == "cuda":
            import torch.distributed as dist  # torchrun: rank 0's NCCL id to every rank
            ids = [Comm.nccl_id() if dist.get_rank() == 0 else None]
            dist.broadcast_object_list(ids, src=0)
            return Comm.nccl(ids[0], dist.get_rank(), dist.get_world_size(), self.device.index or 0), True
        if int(os.environ.get("OMPI_COMM_WORLD_SIZE", os.environ.get("PMI_SIZE", "1"))) > 1:
            return Comm.mpi(), True  # mpirun: CPU ranks
        return None, False

    def _param_ids(self):
        return [(n, id(p), tuple(p.shape)) for n, p in self.module.named_parameters()]

    def _try_map(self) -> bool:
        ptrs = {}
        for n in self.names:
            try:
                ptrs[n] = self.engine.map_param(n)
            except C.FailedPrecondition:
                ptrs = None
                break
        for n in self.names:
            p = self.params[n]
            shape = tuple(p.shape)
            p.data = _view(ptrs[n], shape, self.dtype, self.device) if ptrs else _placeholder(shape, self.dtype, self.device)
        return ptrs is not None

    def _install_grad_hooks(self):
        for n in self.names:
            p = self.params[n]
            if p.requires_grad:
                self._handles.append(p.register_post_accumulate_grad_hook(self._grad_hook(n)))

    def _install_module_hooks(self):
        for mod in self.module.modules():
            direct = [self._name_of[id(p)] for p in mod.parameters(recurse=False)]
            if not direct:
                continue
            self._handles.append(mod.register_forward_pre_hook(lambda m, a, names=direct: self._acquire_all(names)))
            self._handles.append(mod.register_forward_hook(lambda m, a, o, names=direct: self._release_all(names)))

    # -- fetch / release of offloaded params
    def _acquire(self, n: str) -> None:
        count = self._fetched.get(n, 0)
        if count == 0:
            ptr = self.engine.fetch(n, _stream(self.device))
            p = self.params[n]
            p.data = _view(ptr, tuple(p.shape), self.dtype, self.device)
            self._live[p.untyped_storage().data_ptr()] = n
        self._fetched[n] = count + 1

    def _release(self, n: str) -> None:
        count = self._fetched.get(n, 0)
        if count == 0:
            return
        if count == 1:
            p = self.params[n]
            self._live.pop(p.untyped_storage().data_ptr(), None)
            p.data = _placeholder(tuple(p.shape), self.dtype, self.device)
            del self._fetched[n]
            self.engine.release(n)
        else:
            self._fetched[n] = count - 1

    def _acquire_all(self, names):
        for n in names:
            self._acquire(n)

    def _release_all(self, names):
        for n in names:
            self._release(n)

    def _release_everything(self):
        for n in list(self._fetched):
            while n in self._fetched:
                self._release(n)
        self._held.clear()

    # saved tensors living in a param's memory are kept as references, re-fetched at unpack
    def _pack(self, t: torch.Tensor):
        if not self._live or t.device != self.device:
            return t
        n = self._live.get(t.untyped_storage().data_ptr())
        if n is None:
            return t
        return ("strata-param", n, tuple(t.size()), tuple(t.stride()), t.storage_offset())

    def _unpack(self, x):
        if not (isinstance(x, tuple) and len(x) == 5 and x[0] == "strata-param"):
            return x
        _, n, size, stride, offset = x
        if n not in self._held:
            self._acquire(n)  # held until its gradient has been handed over
            self._held.add(n)
        return self.params[n].data.as_strided(size, stride, offset)

    # -- gradients
    def _grad_hook(self, n: str):
        def hook(p: torch.Tensor) -> None:
            g = p.grad
            if g is None:
                return
            if g.dtype != self.dtype:
                g = g.to(self.dtype)
            g = g.contiguous()
            if self.resident:  # a resident param counts as fetched in this micro-batch once fetched
                self.engine.fetch(n)
                self.engine.release(n)
            self.engine.grad(n, g.data_ptr(), _BIT16[self.dtype], g.numel(), _stream(self.device))
            p.grad = None
            if n in self._held:
                self._held.discard(n)
                self._release(n)
        return hook

    # -- the loop
    def _check_unchanged(self):
        now = self._param_ids()
        if now != self._snapshot:
            before = {n: (i, s) for n, i, s in self._snapshot}
            after = {n: (i, s) for n, i, s in now}
            changed = sorted(set(before) ^ set(after)) or sorted(n for n in after if after[n] != before.get(n))
            raise C.FailedPrecondition("the model's parameters changed after initialize (" + ", ".join(changed[:5]) +
                                       "): initialize a new engine for the new model")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        self._check_unchanged()
        if not self.training:
            self.engine.begin_eval()
            try:
                return self.module(*args, **kwargs)
            finally:
                self._release_everything()
                self.engine.end_eval()
        self._backward_done = False
        if self.resident:
            return self.module(*args, **kwargs)
        with torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack):
            return self.module(*args, **kwargs)

    def backward(self, loss: torch.Tensor, lr: float | None = None) -> None:
        """loss.backward() with the engine's loss scale (fp16); gradients go to the engine as
        autograd finishes each one. `lr`: the learning rate the coming step(lr) will be given
        (set_lr), for the chunks updated during this backward."""
        if not self.training:
            raise C.FailedPrecondition("backward in eval mode: call train() first")
        if lr is not None:
            self.engine.set_lr(lr)
        scale = self.engine.loss_scale
        try:
            (loss * scale if scale != 1.0 else loss).backward()
        finally:
            self._release_everything()
        self._backward_done = True

    def set_lr(self, lr: float | None) -> None:
        """The learning rate the next step(lr) will be given, before the backward that ends the
        accumulation cycle: chunks updated during backward use it (a step given another lr redoes
        them, exactly). Without it they use the last step's lr."""
        self.engine.set_lr(lr)

    def step(self, lr: float | None = None) -> StepResult:
        """Ends the micro-batch: every gradient_accumulation_steps calls, the optimizer step
        (overflow check, loss scale, clipping, the update where the state lives)."""
        if not self._backward_done:
            raise C.FailedPrecondition("step() without backward() since the last step: call engine.backward(loss) "
                                       "after each forward")
        self._release_everything()
        r = self.engine.step(lr)
        self._backward_done = False
        return r

    def train(self, mode: bool = True) -> "TorchEngine":
        self.module.train(mode)
        self.training = mode
        return self

    def eval(self) -> "TorchEngine":
        return self.train(False)

    # -- state
    @property
    def loss_scale(self) -> float:
        return self.engine.loss_scale

    def get_stats(self) -> dict:
        return self.engine.stats()

    def plan(self) -> str:
        return self.engine.plan()

    def save_checkpoint(self, directory, tag: str | None = None) -> None:
        self.engine.save(os.fspath(directory), tag)

    def load_checkpoint(self, directory, tag: str | None = None) -> None:
        self.engine.load(os.fspath(directory), tag)

    def master(self, name: str) -> torch.Tensor:
        """The fp32 master values of a param (collective across ZeRO ranks)."""
        n = self._aliases.get(name, name)
        p = self.params.get(n)
        if p is None:
            raise C.NotFound(f"no param '{name}'")
        out = torch.empty(tuple(p.shape), dtype=torch.float32)
        self.engine.read_param(n, out.data_ptr(), out.numel())
        return out

    def state_dict(self) -> dict:
        """fp32 masters by param name (tied params under their first name)."""
        return {n: self.master(n) for n in self.names}

    def export_safetensors(self, directory, dtype: torch.dtype = torch.float32, config_json: str | None = None) -> None:
        """model.safetensors (+ config.json: the model's Hugging Face config when it has one) in
        `directory`, loadable by safetensors and transformers' from_pretrained."""
        if config_json is None and hasattr(self.module, "config") and hasattr(self.module.config, "to_json_string"):
            config_json = self.module.config.to_json_string()
        self.engine.export(os.fspath(directory), _ALL[dtype], C.EXPORT_SAFETENSORS, config_json)

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.engine.close()
        if self._own_comm and self.comm is not None:
            self.comm.destroy()
            self.comm = None


def initialize(model: torch.nn.Module, config, comm="auto", init=None, log=None) -> TorchEngine:
    """The engine for `model` (deepspeed.initialize's role). config: the engine's JSON config
    (DeepSpeed keys + "strata") as a dict, JSON text or a path. comm: "auto" (mpirun: CPU ranks
    over MPI; torch.distributed with CUDA: NCCL, its id broadcast by torch.distributed), a
    strata.Comm, or None. init: a state_dict or a safetensors file whose values replace the
    model's. log: a function receiving the engine's lines (None: stderr)."""
    return TorchEngine(model, config, comm=comm, init=init, log=log)


# ---- the standalone CPU optimizer ------------------------------------------------------------------


def _closure_loss(closure):
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


def _checked_grads(name: str, group: dict) -> list:
    """(param, contiguous gradient) of every param of `group` that has a gradient: contiguous fp32
    CPU params, fp32 / bf16 / fp16 gradients, else InvalidArgument naming the optimizer. The list
    keeps the gradients alive until the kernel ran."""
    pairs = []
    for p in group["params"]:
        if p.grad is None:
            continue
        if p.device.type != "cpu" or p.dtype != torch.float32 or not p.is_contiguous():
            raise C.InvalidArgument(f"{name}: params must be contiguous fp32 CPU tensors")
        g = p.grad.contiguous()
        if g.dtype not in _ALL:
            raise C.InvalidArgument(f"{name}: gradient dtype {g.dtype} (fp32, bf16 or fp16 only)")
        pairs.append((p, g))
    return pairs


class CPUAdam(torch.optim.Optimizer):
    """Adam / AdamW on the CPU through strata's SIMD kernels (DeepSpeedCPUAdam's role): fp32 params
    on the CPU, gradients fp32 / bf16 / fp16; one fused pass per param group. adamw_mode False:
    torch.optim.Adam's L2 penalty; True: torch.optim.AdamW's decoupled decay. isa: None (the
    widest this CPU has), "scalar", "avx2" or "avx512"."""

    _ISA = {None: C.ISA_BEST, "best": C.ISA_BEST, "scalar": C.ISA_SCALAR, "avx2": C.ISA_AVX2, "avx512": C.ISA_AVX512}

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, adamw_mode: bool = True, bias_correction: bool = True,
                 num_threads: int = 0, isa: str | None = None):
        if isa not in self._ISA:
            raise C.InvalidArgument(f"CPUAdam: isa '{isa}': expected scalar, avx2, avx512 or None")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self._config = (adamw_mode, bias_correction, num_threads, self._ISA[isa])
        from .engine import CpuAdamKernel
        self._kernels = [CpuAdamKernel(*self._config) for _ in self.param_groups]

    @property
    def isa(self) -> str:
        return self._kernels[0].isa

    def add_param_group(self, group: dict) -> None:
        super().add_param_group(group)
        if hasattr(self, "_kernels"):
            from .engine import CpuAdamKernel
            self._kernels.append(CpuAdamKernel(*self._config))

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group, kernel in zip(self.param_groups, self._kernels):
            pairs = _checked_grads("CPUAdam", group)
            tensors = []
            for p, g in pairs:
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                tensors.append((p.data_ptr(), state["exp_avg"].data_ptr(), state["exp_avg_sq"].data_ptr(), g.data_ptr(),
                                _ALL[g.dtype], p.numel(), 0, C.DTYPE_BF16))
            if tensors:
                b1, b2 = group["betas"]
                kernel.step(tensors, group["lr"], b1, b2, group["eps"], group["weight_decay"])
        return loss


class _CpuOptimizer(torch.optim.Optimizer):
    """A torch optimizer over strata's standalone CPU optimizer of type `_TYPE`: fp32 params on the
    CPU, gradients fp32 / bf16 / fp16, one fused pass per param group; the state tensors are named
    as the C API names them."""

    _TYPE = ""

    def __init__(self, params: Iterable, defaults: dict, num_threads: int = 0, isa: str | None = None):
        if isa not in CPUAdam._ISA:
            raise C.InvalidArgument(f"{type(self).__name__}: isa '{isa}': expected scalar, avx2, avx512 or None")
        super().__init__(params, defaults)
        self._config = (self._TYPE, True, num_threads, CPUAdam._ISA[isa])
        from .engine import CpuOptimizerKernel
        self._kernels = [CpuOptimizerKernel(*self._config) for _ in self.param_groups]

    @property
    def isa(self) -> str:
        return self._kernels[0].isa

    def add_param_group(self, group: dict) -> None:
        super().add_param_group(group)
        if hasattr(self, "_kernels"):
            from .engine import CpuOptimizerKernel
            self._kernels.append(CpuOptimizerKernel(*self._config))

    def _hyper(self, group: dict) -> dict:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = _closure_loss(closure)
        for group, kernel in zip(self.param_groups, self._kernels):
            pairs = _checked_grads(type(self).__name__, group)
            tensors = []
            for p, g in pairs:
                state = self.state[p]
                for s in kernel.state_names:
                    if s not in state:
                        state[s] = torch.zeros_like(p)
                tensors.append((p.data_ptr(), [state[s].data_ptr() for s in kernel.state_names], g.data_ptr(),
                                _ALL[g.dtype], p.numel()))
            if tensors:
                kernel.step(tensors, group["lr"], weight_decay=group["weight_decay"], **self._hyper(group))
        return loss


class CPULion(_CpuOptimizer):
    """Lion on the CPU through strata's SIMD kernels (DeepSpeedCPULion's role): one moment
    (state 'exp_avg'), sign update, decoupled weight decay; DeepSpeed's defaults."""

    _TYPE = "Lion"

    def __init__(self, params: Iterable, lr: float = 1e-3, betas=(0.9, 0.999), weight_decay: float = 0.0,
                 num_threads: int = 0, isa: str | None = None):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay), num_threads, isa)

    def _hyper(self, group: dict) -> dict:
        b1, b2 = group["betas"]
        return dict(beta1=b1, beta2=b2)


class CPUAdagrad(_CpuOptimizer):
    """Adagrad on the CPU through strata's SIMD kernels (DeepSpeedCPUAdagrad's role): the sum of
    squared gradients (state 'sum', as torch.optim.Adagrad names it), L2 weight decay."""

    _TYPE = "Adagrad"

    def __init__(self, params: Iterable, lr: float = 1e-2, eps: float = 1e-10, weight_decay: float = 0.0,
                 num_threads: int = 0, isa: str | None = None):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay), num_threads, isa)

    def _hyper(self, group: dict) -> dict:
        return dict(eps=group["eps"])
