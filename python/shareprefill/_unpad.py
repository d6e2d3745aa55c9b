"""A transformers batch as a varlen batch: which tokens of each row are real (from the 2D padding
mask, or from the 4D boolean mask that sdpa_mask builds, checked to be exactly causal attention
among those tokens), and the gathers between [B, H, S, D] and packed rows [total, H, D]. For a
prefill after a cached prefix (a chunk): the cache length before the queries, read from a mask
checked to be exactly causal attention over the cache and the chunk."""
import torch

CHECK_ELEMENTS = 1 << 24  # elements of each temporary of the 4D-mask check (a chunk of rows)


def _allowed(attention_mask, s, e):
    """Query rows [s, e) of a 4D mask [B or 1, 1 or H, S, S_kv] as bool: may the row attend to
    the key (True, or 0.0 in an additive mask)."""
    rows = attention_mask[:, :, s:e, :]
    return rows if rows.dtype == torch.bool else rows == 0


def real_tokens(attention_mask, batch, tokens, device):
    """[B, S] bool, True at the real (not padded) tokens of each row, or None when the mask is
    more than key padding on causal attention (packed sequences, sliding windows, a custom
    mask), which the varlen kernels cannot express. attention_mask: None (no padding), [B, S]
    (1 = real token) or [B or 1, 1 or H, S, S] (True or 0.0 = may attend)."""
    if attention_mask is None:
        return torch.ones((batch, tokens), dtype=torch.bool, device=device)
    shape = tuple(attention_mask.shape)
    if attention_mask.dim() == 2:
        return attention_mask.bool() if shape == (batch, tokens) else None
    if attention_mask.dim() != 4 or shape[0] not in (1, batch) or shape[2:] != (tokens, tokens):
        return None

    def allowed_rows(s, e):  # [B, 1 or H, e - s, S] bool: may query row i attend to key j
        return _allowed(attention_mask, s, e).expand(batch, -1, -1, -1)

    # The last query row sees every real key: it is real under left padding, and a padded row
    # after the real ones under right padding.
    real = allowed_rows(tokens - 1, tokens)[:, 0, 0, :]
    # Every query row is causal attention to the real keys, except that transformers may unmask
    # a padded row that sees no key at all (left padding) entirely. Anything else (a packed
    # sequence's block, a window) is more than padding. Checked in chunks of query rows, so the
    # temporaries stay at B x chunk x S however long the prompt.
    chunk = max(1, min(tokens, CHECK_ELEMENTS // max(1, batch * tokens)))
    agree = torch.ones((), dtype=torch.bool, device=real.device)
    for s in range(0, tokens, chunk):
        e = min(s + chunk, tokens)
        allowed = allowed_rows(s, e)
        causal = torch.ones((e - s, tokens), dtype=torch.bool, device=allowed.device).tril(s)
        expected = causal & real[:, None, None, :]
        rows = (allowed == expected).all(dim=-1) | (allowed.all(dim=-1) & ~real[:, None, s:e])
        agree &= rows.all()
    return real if bool(agree) else None  # one host synchronisation


def causal_offset(attention_mask, batch, tokens, keys):
    """The number o of cached tokens before the `tokens` queries when attention_mask is exactly
    causal attention of the queries at positions o .. o + tokens - 1 over the keys 0 .. o +
    tokens - 1 (of `keys`; later keys masked, a static cache's empty slots), the same for every
    batch row; None for any other mask (padding, packed sequences, windows). What transformers
    5.17's sdpa_mask gives a prefill after a cached prefix: a 4D bool mask [B, 1, S, S_kv] (a
    DynamicCache: o = S_kv - S); None only for an empty cache (a static cache's first prefill:
    SDPA's is_causal aligns the queries with key 0), so None is o = 0."""
    if attention_mask is None:
        return 0
    shape = tuple(attention_mask.shape)
    if attention_mask.dim() != 4 or shape[0] not in (1, batch) or shape[2:] != (tokens, keys):
        return None
    if attention_mask.stride(0) == 0:  # sdpa_mask expands one row over the batch
        attention_mask = attention_mask[:1]

    # keys the first query sees, less itself
    offset = int(_allowed(attention_mask, 0, 1)[0, 0, 0].sum()) - 1
    if offset < 0 or offset + tokens > keys:
        return None
    elements = attention_mask.shape[0] * attention_mask.shape[1] * keys
    chunk = max(1, min(tokens, CHECK_ELEMENTS // max(1, elements)))
    columns = torch.arange(keys, device=attention_mask.device)
    agree = torch.ones((), dtype=torch.bool, device=attention_mask.device)
    for s in range(0, tokens, chunk):
        e = min(s + chunk, tokens)
        positions = torch.arange(s + offset, e + offset, device=attention_mask.device)
        expected = columns[None, :] <= positions[:, None]  # [e - s, keys]
        agree &= (_allowed(attention_mask, s, e) == expected).all()
    return offset if bool(agree) else None  # one more host synchronisation


class Packing:
    """The real tokens of a [B, S] batch packed row after row: cu_seqlens over the rows that
    have any (rows of padding only are left out and come back as zeros), and the flat indices
    (b * S + s) of the packed tokens."""

    def __init__(self, real):
        self.batch, self.tokens = real.shape
        lengths = real.sum(dim=1).tolist()  # one host synchronisation per forward
        self.rows = [b for b, n in enumerate(lengths) if n > 0]
        self.cu = [0]
        for b in self.rows:
            self.cu.append(self.cu[-1] + lengths[b])
        self.full = all(n == self.tokens for n in lengths)
        self.index = None if self.full else real.reshape(-1).nonzero().squeeze(1)

    def pack(self, x):
        """[B, H, S, D] -> [total, H, D] contiguous (a view when nothing is padded and the
        memory is token-major, as transformers' projections leave q, k and v)."""
        rows = x.transpose(1, 2).reshape(self.batch * self.tokens, x.shape[1], x.shape[3])
        return rows.contiguous() if self.full else rows.index_select(0, self.index)

    def unpack(self, packed, dtype):
        """[total, H, D] -> [B, S, H, D] contiguous in `dtype`, zeros at padded tokens."""
        heads, dim = packed.shape[1], packed.shape[2]
        if self.full:
            return packed.to(dtype).reshape(self.batch, self.tokens, heads, dim)
        out = packed.new_zeros((self.batch * self.tokens, heads, dim), dtype=dtype)
        out.index_copy_(0, self.index, packed.to(dtype))
        return out.reshape(self.batch, self.tokens, heads, dim)
