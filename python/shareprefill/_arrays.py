"""Array-library helpers: which library an array comes from and allocation of outputs with it,
so that NumPy stays the only requirement and torch is touched only when the caller uses it."""
import numpy

from ._core import Error


def is_torch(x):
    """True for a torch.Tensor (checked without importing torch)."""
    return type(x).__module__.split(".", 1)[0] == "torch"


def shape_of(fn, name, x, rank):
    """x.shape as a tuple of the given rank, or shareprefill.Error naming the argument."""
    shape = getattr(x, "shape", None)
    if shape is None:
        raise Error(f"[{fn}] {name} must be a NumPy array or a PyTorch tensor, got "
                    f"{type(x).__name__}")
    if len(shape) != rank:
        raise Error(f"[{fn}] {name} must have {rank} dimensions, got shape {tuple(shape)}")
    return tuple(int(s) for s in shape)


def for_kernel(x):
    """What the extension receives: torch tensors detached (DLPack refuses tensors that require
    grad; the kernels have no backward), everything else as is."""
    return x.detach() if is_torch(x) and x.requires_grad else x


def empty_f32(like, shape):
    """An uninitialised float32 array of `shape` from the library (and device) of `like`."""
    if is_torch(like):
        import torch
        return torch.empty(shape, dtype=torch.float32, device=like.device)
    return numpy.empty(shape, dtype=numpy.float32)


def is_cuda(x):
    return is_torch(x) and x.device.type == "cuda"
