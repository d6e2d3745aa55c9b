"""Shared helpers of the Python tests: a NumPy attention reference, seeded inputs and a DLPack
capsule that claims another device (to test device errors on a machine without one)."""
import ctypes

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(20260515)


def random_qkv(rng, n, heads, kv_heads, dim, dtype=np.float32):
    """Seeded q [N, H, D], k and v [N, Hkv, D], values in [-1, 1)."""
    q = rng.uniform(-1, 1, (n, heads, dim)).astype(dtype)
    k = rng.uniform(-1, 1, (n, kv_heads, dim)).astype(dtype)
    v = rng.uniform(-1, 1, (n, kv_heads, dim)).astype(dtype)
    return q, k, v


def tile_token_mask(block_mask, n, block_size=128):
    """[H, nb, nb] tile mask (Plan.block_mask()) -> [H, N, N] token mask, causal rule included."""
    idx = np.arange(n) // block_size
    tokens = block_mask[:, idx][:, :, idx].astype(bool)
    return tokens & np.tril(np.ones((n, n), dtype=bool))


def attention_numpy(q, k, v, token_mask=None):
    """softmax(q k^T / sqrt(D)) v in float64 with the causal rule (and token_mask [H, N, N]):
    returns out [N, H, D] and the natural-log LSE [H, N] (rows with no key: 0 and -inf)."""
    n, heads, dim = q.shape
    group = heads // k.shape[1]
    q64, k64, v64 = (x.astype(np.float64) for x in (q, k, v))
    out = np.zeros((n, heads, dim))
    lse = np.full((heads, n), -np.inf)
    allowed = np.tril(np.ones((n, n), dtype=bool))
    for h in range(heads):
        s = q64[:, h] @ k64[:, h // group].T / np.sqrt(dim)
        mask = allowed if token_mask is None else allowed & token_mask[h]
        s = np.where(mask, s, -np.inf)
        m = s.max(axis=1, keepdims=True)
        rows = np.isfinite(m[:, 0])
        p = np.exp(s - np.where(np.isfinite(m), m, 0))
        total = p.sum(axis=1, keepdims=True)
        out[rows, h] = (p[rows] / total[rows]) @ v64[:, h // group]
        lse[h, rows] = np.log(total[rows, 0]) + m[rows, 0]
    return out, lse


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p),
                ("deleter", ctypes.c_void_p)]


class ForeignDeviceArray:
    """A legacy "dltensor" capsule over a NumPy array's memory that claims DLPack device
    `device_type` (2 = CUDA, 7 = Vulkan, ...). The extension must reject it before touching
    the memory. Keeps everything it points to alive."""

    def __init__(self, array, device_type):
        self.array = array
        self.shape = (ctypes.c_int64 * array.ndim)(*array.shape)
        self.strides = (ctypes.c_int64 * array.ndim)(*(s // array.itemsize for s in array.strides))
        self.managed = _DLManagedTensor()
        t = self.managed.dl_tensor
        t.data = array.ctypes.data
        t.device = _DLDevice(device_type, 0)
        t.ndim = array.ndim
        t.dtype = _DLDataType(2, 8 * array.itemsize, 1)
        t.shape = self.shape
        t.strides = self.strides
        new_capsule = ctypes.pythonapi.PyCapsule_New
        new_capsule.restype = ctypes.py_object
        new_capsule.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_void_p]
        self.capsule = new_capsule(ctypes.addressof(self.managed), b"dltensor", None)


@pytest.fixture
def foreign_device_array():
    return ForeignDeviceArray


def torch_or_skip():
    return pytest.importorskip("torch")


def per_sequence(q, k, v, cu, plans=None):
    """shareprefill.attention() on each sequence's rows alone (the reference of the varlen
    tests): (out [total, H, D], lse [H, total]) in q's array library (NumPy or torch)."""
    import shareprefill as sp
    outs, lses = [], []
    for b in range(len(cu) - 1):
        s, e = int(cu[b]), int(cu[b + 1])
        out, lse = sp.attention(q[s:e], k[s:e], v[s:e], plan=None if plans is None else plans[b],
                                return_lse=True)
        outs.append(out)
        lses.append(lse)
    if isinstance(q, np.ndarray):
        return np.concatenate(outs), np.concatenate(lses, axis=1)
    import torch
    return torch.cat(outs), torch.cat(lses, dim=1)
