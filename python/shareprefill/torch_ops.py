"""PyTorch custom ops (torch.library) around the shareprefill kernels, so that torch.compile
keeps them in one graph (fullgraph=True) instead of breaking at an opaque extension call.
Imported on demand: `import shareprefill` itself never needs torch.

    out, lse = torch.ops.shareprefill.attention(q, k, v)                      # dense causal
    out, lse = torch.ops.shareprefill.attention_block_sparse(q, k, v, row_ptr, col_idx)

q: [N, H, D], k and v: [N, Hkv, D]; out: [N, H, D] in q's dtype; lse: [H, N] float32 (natural
log). On a CUDA device: bfloat16 or float16, D 64 or 128, heads contiguous within a token and
16-byte aligned rows; the kernel runs asynchronously on the current stream. On the CPU: float32,
float16 or bfloat16, C-contiguous (the CPU kernel computes in fp32; out is cast to q's dtype).
row_ptr [H * (nb + 1)] int64 and col_idx [tiles] int32 (CPU tensors) are a block mask in the
CSR form of block_mask.h (128-token blocks; Plan.csr() gives them).

Varlen batches (prompts packed along the token axis, sequence b the rows cu_seqlens[b] to
cu_seqlens[b + 1]; cu_seqlens a CPU int32/int64 tensor [B + 1]):

    out, lse = torch.ops.shareprefill.attention_varlen(q, k, v, cu_seqlens)     # dense causal
    out, lse = torch.ops.shareprefill.attention_varlen_block_sparse(q, k, v, cu_seqlens,
                                                                    row_ptr, col_idx)

q: [total, H, D], k and v: [total, Hkv, D]; lse: [H, total]. The block-sparse form takes the
sequences' CSR masks concatenated: row_ptr [sum_b H * (nb_b + 1)] int64, offsets absolute into
col_idx [all tiles] int32 (varlen_plan.h's layout).

Partial results over disjoint key ranges (each with its lse) merge exactly:

    o, lse = torch.ops.shareprefill.merge_attention_states(o_a, lse_a, o_b, lse_b)

The stateful SharePrefill prefill (planner state carried from layer to layer) is
CudaPrefill.layer(), called eagerly by shareprefill.hf.
"""
import torch

from . import _core
from ._chunks import CARRY, RUN, ChunkCursor
from ._core import Error, Plan
from ._varlen import cu_seqlens_list

BLOCK_SIZE = 128


def _stream(x):
    """The current CUDA stream of x's device as the integer handle the extension takes."""
    return torch.cuda.current_stream(x.device).cuda_stream


def _run(q, k, v, plan):
    n, heads, dim = q.shape
    if q.is_cuda:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((heads, n), dtype=torch.float32, device=q.device)
        with torch.cuda.device(q.device):  # the kernel launches on the current device
            _core.attention_cuda(out, lse, q.detach(), k.detach(), v.detach(), plan, _stream(q))
        return out, lse
    out = torch.empty((n, heads, dim), dtype=torch.float32)
    lse = torch.empty((heads, n), dtype=torch.float32)
    _core.attention_cpu(out, lse, q.detach(), k.detach(), v.detach(), plan)
    return out.to(q.dtype), lse


@torch.library.custom_op("shareprefill::attention", mutates_args=())
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense causal attention (every causal tile)."""
    return _run(q, k, v, None)


@torch.library.custom_op("shareprefill::attention_block_sparse", mutates_args=())
def attention_block_sparse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           row_ptr: torch.Tensor, col_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal attention over the tiles of a CSR block mask (row_ptr, col_idx on the CPU)."""
    if row_ptr.device.type != "cpu" or col_idx.device.type != "cpu":
        raise Error("[shareprefill.attention_block_sparse] row_ptr and col_idx must be CPU tensors")
    plan = _core.Plan.from_csr(q.shape[0], q.shape[1], row_ptr.to(torch.int64).numpy(),
                               col_idx.to(torch.int32).numpy(), BLOCK_SIZE)
    return _run(q, k, v, plan)


def _fake(q, k, v, *mask):
    n, heads, _ = q.shape
    return (torch.empty_like(q, memory_format=torch.contiguous_format),
            q.new_empty((heads, n), dtype=torch.float32))


attention.register_fake(_fake)
attention_block_sparse.register_fake(_fake)


def _run_varlen(q, k, v, cu, plans):
    """The varlen kernel: cu a list of ints, plans None or one kernel-ready Plan per sequence."""
    total, heads, dim = q.shape
    if q.is_cuda:
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        lse = torch.empty((heads, total), dtype=torch.float32, device=q.device)
        with torch.cuda.device(q.device):
            _core.attention_varlen_cuda(out, lse, q.detach(), k.detach(), v.detach(), cu, plans,
                                        _stream(q))
        return out, lse
    out = torch.empty((total, heads, dim), dtype=torch.float32)
    lse = torch.empty((heads, total), dtype=torch.float32)
    _core.attention_varlen_cpu(out, lse, q.detach(), k.detach(), v.detach(), cu, plans)
    return out.to(q.dtype), lse


@torch.library.custom_op("shareprefill::attention_varlen", mutates_args=())
def attention_varlen(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dense causal attention of a varlen batch (every causal tile of every sequence)."""
    return _run_varlen(q, k, v, cu_seqlens_list("shareprefill.attention_varlen", cu_seqlens), None)


def varlen_plans_from_csr(cu, heads, row_ptr, col_idx, block_size=BLOCK_SIZE):
    """One Plan per sequence from the concatenated CSR of a varlen batch (module docstring)."""
    fn = "shareprefill.attention_varlen_block_sparse"
    row_ptr = row_ptr.to(torch.int64).numpy()
    col_idx = col_idx.to(torch.int32).numpy()
    plans, at = [], 0
    for b in range(len(cu) - 1):
        n = cu[b + 1] - cu[b]
        rows = heads * ((n + block_size - 1) // block_size + 1)
        if at + rows > row_ptr.size:
            raise Error(f"[{fn}] row_ptr has {row_ptr.size} entries; sequence {b} needs entries "
                        f"{at} to {at + rows}")
        rp = row_ptr[at:at + rows]
        if not 0 <= rp[0] <= rp[-1] <= col_idx.size:
            raise Error(f"[{fn}] sequence {b}'s row_ptr spans col_idx[{rp[0]}:{rp[-1]}], "
                        f"col_idx has {col_idx.size} entries")
        plans.append(Plan.from_csr(n, heads, rp - rp[0], col_idx[rp[0]:rp[-1]], block_size))
        at += rows
    if at != row_ptr.size:
        raise Error(f"[{fn}] row_ptr has {row_ptr.size} entries, the sequences need {at}")
    return plans


@torch.library.custom_op("shareprefill::attention_varlen_block_sparse", mutates_args=())
def attention_varlen_block_sparse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                  cu_seqlens: torch.Tensor, row_ptr: torch.Tensor,
                                  col_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A varlen batch over the concatenated CSR masks of its sequences (CPU row_ptr, col_idx)."""
    fn = "shareprefill.attention_varlen_block_sparse"
    if row_ptr.device.type != "cpu" or col_idx.device.type != "cpu":
        raise Error(f"[{fn}] row_ptr and col_idx must be CPU tensors")
    cu = cu_seqlens_list(fn, cu_seqlens)
    _core.check_cu_seqlens(cu, q.shape[0])
    return _run_varlen(q, k, v, cu, varlen_plans_from_csr(cu, q.shape[1], row_ptr, col_idx))


attention_varlen.register_fake(_fake)
attention_varlen_block_sparse.register_fake(_fake)


@torch.library.custom_op("shareprefill::merge_attention_states", mutates_args=())
def merge_attention_states(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
                           lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two partial results over disjoint key ranges merged by their LSE (fp32 math): o in
    o_a's dtype (contiguous), lse [H, N] float32."""
    n, heads, dim = o_a.shape
    if o_a.is_cuda:
        o = torch.empty_like(o_a, memory_format=torch.contiguous_format)
        lse = torch.empty((heads, n), dtype=torch.float32, device=o_a.device)
        with torch.cuda.device(o_a.device):
            _core.merge_attention_states(o, lse, o_a.detach(), lse_a.detach(), o_b.detach(),
                                         lse_b.detach(), _stream(o_a))
        return o, lse
    o = torch.empty((n, heads, dim), dtype=torch.float32)
    lse = torch.empty((heads, n), dtype=torch.float32)
    _core.merge_attention_states(o, lse, o_a.detach(), lse_a.detach(), o_b.detach(),
                                 lse_b.detach())
    return o.to(o_a.dtype), lse


@merge_attention_states.register_fake
def _merge_fake(o_a, lse_a, o_b, lse_b):
    return (torch.empty_like(o_a, memory_format=torch.contiguous_format),
            lse_a.new_empty((o_a.shape[1], o_a.shape[0]), dtype=torch.float32))


def attention_varlen_planned(q, k, v, cu, plans):
    """shareprefill.attention_varlen() for CUDA tensors: (out, lse), dense through the custom op
    (plans None) or one kernel-ready Plan per sequence."""
    if plans is None:
        return attention_varlen(q, k, v, torch.tensor(cu, dtype=torch.int64))
    return _run_varlen(q, k, v, cu, plans)


def attention_planned(q, k, v, plan, return_lse):
    """shareprefill.attention() for CUDA tensors: dense (plan None) or a Plan, which runs on the
    device (a Planner's plan is published into it, with one host synchronisation when the layer
    has pivots)."""
    out, lse = attention(q, k, v) if plan is None else _run(q, k, v, plan)
    return (out, lse) if return_lse else out


def attention_bhnd(q, k, v, plans, return_lse):
    """shareprefill.attention_bhnd() for CUDA tensors: per batch entry, [H, N, D] to token-major
    rows (a view when the memory already is), the kernel, and back to [B, H, N, D]."""
    outs, lses = [], []
    for b in range(q.shape[0]):
        rows = [x[b].transpose(0, 1).contiguous() for x in (q, k, v)]
        out, lse = attention_planned(*rows, None if plans is None else plans[b], True)
        outs.append(out.transpose(0, 1))
        lses.append(lse)
    out, lse = torch.stack(outs), torch.stack(lses)
    return (out, lse) if return_lse else out


class CudaPrefill:
    """The SharePrefill prefill on the GPU for one Planner: the device planner (built from the
    Planner's mode, thresholds and cluster map at the first layer) with its per-prompt state and
    workspace in torch-allocated device memory, so nothing waits for the device between layers.
    layer() plans, attends and publishes one layer on the current stream; a new prompt starts
    when the Planner was reset() or the layer index does not increase. After the model's last
    layer (Planner.layers - 1) it waits for the stream once and raises the first error the
    device planner recorded (non-finite inputs, ...); check() does that at any point.

    Chunked prefill: q may be the last rows of k (a chunk, the queries [N - n, N) over the keys
    [0, N), N - n a multiple of 128). Each chunk gets a fresh sharing state, or with
    carried=True the state moves on from the previous chunk when that chunk ended at N - n and
    ran every layer (DevicePlanner.begin_chunk; one wait for the stream per chunk)."""

    def __init__(self, planner):
        self.planner = planner
        self.device_planner = None
        self.workspace = None
        self.state = None
        self.cursor = ChunkCursor()  # the chunk of the state

    def layer(self, layer, q, k, v, carried=False):
        with torch.cuda.device(q.device):  # the device planner works on the current device
            return self._layer(layer, q.detach(), k.detach(), v.detach(), carried)

    def _layer(self, layer, q, k, v, carried):
        n, heads, dim = q.shape
        end = k.shape[0]
        if self.device_planner is None:
            self.device_planner = _core.DevicePlanner(self.planner, heads)
        dp = self.device_planner
        stream = _stream(q)
        need = dp.workspace_bytes(end, heads, k.shape[1], dim)
        if self.workspace is None or self.workspace.numel() < need or self.workspace.device != q.device:
            self.workspace = torch.empty(need, dtype=torch.uint8, device=q.device)
        step = self.cursor.next(self.planner.prompt, end - n, end, layer, self.planner.layers,
                                carried)
        if step != RUN:
            self._begin(step, end, q.device, stream, carried, whole=n == end, dim=dim)
        out = torch.empty_like(q, memory_format=torch.contiguous_format)
        dp.prefill_layer(layer, out, q, k, v, self.workspace, stream)
        if layer == self.planner.layers - 1:
            dp.check(stream)  # the chunk's one synchronisation: errors the device recorded
        return out

    def _begin(self, step, end, device, stream, carried, whole, dim):
        """Binds the state for the chunk whose keys end at `end`: a fresh one (FRESH; one a
        later chunk may carry on when `carried`), or the carried one moved on (CARRY; first
        copied into larger memory when the longer prompt needs more, stream-ordered before
        begin_chunk reads it). When pivots compute their block attention is the C++ forward's
        choice (default_pivot_publishing; the same outputs every way), `whole`: q is all of
        k's rows."""
        dp = self.device_planner
        pivots = _core.default_pivot_publishing(end, carried, whole)
        need = dp.state_bytes(end, pivots, dim)
        old = self.state if self.state is not None and self.state.device == device else None
        if old is None or old.numel() < need:
            self.state = torch.empty(need, dtype=torch.uint8, device=device)
            if step == CARRY and old is not None:
                self.state[:old.numel()].copy_(old)
        if step == CARRY and old is not None:
            dp.begin_chunk(self.state, end, stream)
        else:
            dp.begin_prompt(self.state, end, stream, pivots)

    def last_plan(self):
        """The last layer's device plan as a Plan (tiles and head kinds; synchronous copies)."""
        return self.device_planner.last_plan()

    def check(self, x):
        """Waits for the stream and raises the first error the device planner recorded."""
        self.device_planner.check(_stream(x))


def prefill_layer(planner, layer, q, k, v, carried=False):
    """One SharePrefill layer on the GPU for `planner` (its CudaPrefill is kept on it); q may be
    a chunk, the last rows of k (CudaPrefill)."""
    runner = getattr(planner, "_cuda_prefill", None)
    if runner is None:
        runner = CudaPrefill(planner)
        planner._cuda_prefill = runner
    return runner.layer(layer, q, k, v, carried)
