"""strata — train models larger than GPU memory: Python bindings over the C API of libstrata.

    import strata                 # the engine, communicators and the CPU Adam kernel (ctypes only)
    import strata.torch           # initialize(model, config) for any torch.nn.Module; CPUAdam, CPULion, CPUAdagrad

The C library is found next to this package (pip install bindings/python), in a checkout's
build/ tree, or at $STRATA_LIBRARY. docs/python.md.
"""
from ._capi import (AlreadyExists, Cancelled, CommError, CudaError, DataLoss, FailedPrecondition, InternalError,
                    InvalidArgument, IOFailure, NcclError, NoSpace, NonFinite, NotFound, OutOfMemory, StrataError, Timeout,
                    Unsupported, library_path, version)
from .engine import Comm, CpuAdamKernel, Engine, StepResult

__version__ = version()

__all__ = ["AlreadyExists", "Cancelled", "Comm", "CommError", "CpuAdamKernel", "CudaError", "DataLoss", "Engine",
           "FailedPrecondition", "InternalError", "InvalidArgument", "IOFailure", "NcclError", "NoSpace", "NonFinite",
           "NotFound", "OutOfMemory", "StepResult", "StrataError", "Timeout", "Unsupported", "library_path", "version"]
