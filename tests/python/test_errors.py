"""Bad dtypes, shapes, strides and devices raise shareprefill.Error with a message that names
the function, the argument and the offending value."""
import numpy as np
import pytest

import shareprefill as sp
from conftest import random_qkv


def qkv(rng, n=130, heads=4, kv_heads=2, dim=64):
    return random_qkv(rng, n, heads, kv_heads, dim)


def test_error_is_a_runtime_error():
    assert issubclass(sp.Error, RuntimeError)


@pytest.mark.parametrize("dtype,name", [(np.float64, "float64"), (np.int32, "int32"),
                                        (np.uint8, "uint8"), (np.complex64, "complex64")])
def test_bad_dtype(rng, dtype, name):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match=rf"\[shareprefill.attention\] k has dtype {name}; "
                                       "expected float32, float16 or bfloat16"):
        sp.attention(q, k.astype(dtype), v)


def test_bad_rank(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match=r"q must have 3 dimensions, got shape \(130, 256\)"):
        sp.attention(q.reshape(130, 256), k, v)
    with pytest.raises(sp.Error, match="v must have 3 dimensions"):
        sp.attention(q, k, v[None])


def test_not_an_array(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match="q must be a NumPy array or a PyTorch tensor, got list"):
        sp.attention(q.tolist(), k, v)


def test_mismatched_shapes(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match="query heads 4 not divisible by kv heads 3"):
        sp.attention(q, *random_qkv(rng, 130, 3, 3, 64)[1:])
    with pytest.raises(sp.Error, match="k/v have 130/129 tokens but q has 130"):
        sp.attention(q, k, v[:129])
    with pytest.raises(sp.Error, match="k has 129 tokens and q 130; q holds the last tokens"):
        sp.attention(q, k[:129], v)
    with pytest.raises(sp.Error, match="head dims differ"):
        sp.attention(q, k[:, :, :32].copy(), v)


def test_empty_dimension(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match=r"q has an empty dimension: shape \(0, 4, 64\)"):
        sp.attention(q[:0], k[:0], v[:0])


def test_non_contiguous_strides(rng):
    q, k, v = qkv(rng)
    strided = np.zeros((130, 4, 128), np.float32)[:, :, ::2]  # every other element
    with pytest.raises(sp.Error, match=r"q of shape \(130, 4, 64\) has element strides "
                                       r"\(512, 128, 2\); this call needs a C-contiguous array"):
        sp.attention(strided, k, v)
    transposed = np.ascontiguousarray(v.transpose(1, 0, 2)).transpose(1, 0, 2)
    with pytest.raises(sp.Error, match="v of shape .* has element strides"):
        sp.attention(q, k, transposed)


def test_non_finite_input(rng):
    q, k, v = qkv(rng)
    k[5, 1, 3] = np.nan
    with pytest.raises(sp.Error, match="k holds a non-finite value"):
        sp.attention(q, k, v)


def test_causal_false_is_refused(rng):
    with pytest.raises(sp.Error, match="only causal attention is implemented"):
        sp.attention(*qkv(rng), causal=False)


def test_bad_output_arrays(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match="out must be float32, got float16"):
        sp._core.attention_cpu(np.empty(q.shape, np.float16), None, q, k, v, None)
    with pytest.raises(sp.Error, match=r"out has shape \[130, 4, 32\], expected \[130, 4, 64\]"):
        sp._core.attention_cpu(np.empty((130, 4, 32), np.float32), None, q, k, v, None)
    with pytest.raises(sp.Error, match="lse must have 2 dimensions"):
        sp._core.attention_cpu(np.empty(q.shape, np.float32), np.empty(130, np.float32),
                               q, k, v, None)


@pytest.mark.parametrize("device_type,message", [
    (2, "q is on a CUDA device; the CPU kernels need CPU arrays"),
    (7, r"q is on DLPack device type 7; expected the CPU \(1\) or a CUDA device \(2\)"),
])
def test_foreign_device(rng, foreign_device_array, device_type, message):
    q, k, v = qkv(rng)
    foreign = foreign_device_array(q, device_type)
    with pytest.raises(sp.Error, match=message):
        sp._core.attention_cpu(np.empty(q.shape, np.float32), None, foreign.capsule, k, v, None)


def test_plan_shape_mismatch(rng):
    q, k, v = qkv(rng)
    with pytest.raises(sp.Error, match="attention_block_sparse"):
        sp.attention(q, k, v, plan=sp.Plan.dense(300, 4))


def test_invalid_tiles():
    with pytest.raises(sp.Error, match="block_mask"):
        sp.Plan.from_tiles(256, [[(0, 1)]])  # above the diagonal


def test_torch_cuda_tensor_without_cuda_build(rng):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available() or sp.build_info()["cuda"]:
        pytest.skip("needs a CUDA device and a CPU-only build")
    q, k, v = (torch.from_numpy(x).cuda() for x in qkv(rng))
    with pytest.raises(sp.Error, match="built without CUDA"):
        sp.attention(q, k, v)
