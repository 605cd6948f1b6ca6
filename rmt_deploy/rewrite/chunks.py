"""Attention in chunks, so that one image's scores fit a budget (``CHUNK_BYTES``) at detection sizes.

Decomposed stages (the row pass, then the column pass) take their grid rows, then their grid
columns, a chunk at a time (``deploy.DeployMaSA``): the same attention, fewer batch items per call.
Whole attention takes its queries in chunks of token-grid rows, with the decay added per chunk:

A whole-attention stage at detection sizes holds (heads, N, N) scores for N tokens: 8 x 4200^2
floats (564 MB) for RMT-T's stage 3 at 800x1344, and as many again for the decay mask a runtime
folds from constant tables when it loads the model. Here the queries go through in chunks of whole
rows, so only one chunk's scores live at a time, and the mask is never built: the decay is
separable, gamma * |i - i'| + gamma * |j - j'|, so each chunk's scores, viewed as
(B, heads, queries, h, w), take the row term (heads, queries, h, 1) and the column term
(heads, queries, 1, w) by two broadcast Adds. Both terms are linear in the side per query, so a
runtime that folds them holds heads x N x (h + w) floats per stage, not heads x N^2.

The ONNX Runtime encoding instead builds each chunk's (heads, queries, N) mask at run time by one
Add of the two terms and hands it to ONNX Attention (``fused_attention``): 1.2x faster per layer than
the plain ops on RMT-T's stage 3 at 800x1344 (``benches/bench_attention.py``). The Add takes a zero
computed from the queries (``runtime_zero``): with constant inputs ONNX Runtime would fold every
chunk's mask at load, which is the whole (heads, N, N) mask again.

Fixed-size graphs slice at constant offsets. Dynamic ones keep the chunk count of the largest size
they take and compute each chunk's rows or columns from the input's height or width (``chunk_rows``).
"""
from __future__ import annotations

import torch

from . import fused

__all__ = ["CHUNK_BYTES", "chunk_count", "stage_chunks", "chunk_rows", "kept", "rows", "join", "decay_terms",
           "attention", "fused_attention", "runtime_zero"]

# One chunk's float scores per image. Softmax and the Add each make one more tensor of that size,
# so the attention's working set is about 3x this; 64 MB keeps RMT-T's at 800x1344 under 0.2 GB.
CHUNK_BYTES = 64 << 20
FLOAT_MAX = 3.0e38  # under float32's largest finite value: a clamp there changes no finite score


def chunk_count(rows: int, row_bytes: int, budget: int = CHUNK_BYTES) -> int:
    """Chunks of whole rows, as few as keep one chunk's scores (``row_bytes`` per row) within ``budget``."""
    per_chunk = max(1, budget // row_bytes)
    return -(-rows // per_chunk)


def stage_chunks(heads: int, h: int, w: int, decomposed: bool, budget: int = CHUNK_BYTES) -> tuple[int, ...]:
    """Chunks for one stage's attention on an (h, w) grid, one image of float scores within ``budget``:
    whole attention (one count, of query rows), or the decomposed row and column passes (two counts,
    of grid rows and grid columns)."""
    if decomposed:
        return chunk_count(h, 4 * heads * w * w, budget), chunk_count(w, 4 * heads * h * h, budget)
    return (chunk_count(h, 4 * heads * w * h * w, budget),)


def chunk_rows(n, chunks: int) -> list[tuple]:
    """(start, stop, keep) of each chunk along an axis of ``n`` rows: the chunk computes rows
    [start, stop) and contributes ``keep`` of them (a (first, end) pair within the chunk, or None: all).

    A fixed ``n`` gets ``ceil(n / chunks)`` rows per chunk, the last one shorter. A symbolic one (a
    dynamic export) cannot know which chunks would be empty at small sizes, and some runtimes refuse
    zero-row tensors (ONNX Runtime's Attention): every chunk then computes a full window, the last ones
    moved back inside [0, n), and keeps only the rows no earlier chunk produced.
    """
    step = (n + chunks - 1) // chunks
    if isinstance(n, int):
        return [(min(k * step, n), min((k + 1) * step, n), None) for k in range(chunks) if k * step < n]
    windows = []
    for k in range(chunks):
        start = torch.sym_min(k * step, n - step)
        done, end = torch.sym_min(k * step, n), torch.sym_min((k + 1) * step, n)
        windows.append((start, start + step, (done - start, end - start)))
    return windows


def kept(t: torch.Tensor, dim: int, keep, scale: int = 1) -> torch.Tensor:
    """The rows of a chunk's result that ``chunk_rows`` says to keep (``scale`` tokens per row)."""
    if keep is None:
        return t
    return t.narrow(dim, keep[0] * scale, (keep[1] - keep[0]) * scale)


def rows(t: torch.Tensor, dim: int, start, stop, n) -> torch.Tensor:
    """``t``'s rows [start, stop) along ``dim`` (of ``n``); all of ``t`` without a slice when that is every row
    (ExecuTorch leaves a full-range slice to its portable kernels)."""
    if isinstance(n, int) and (start, stop) == (0, n):
        return t
    return t.narrow(dim, start, stop - start)


def join(parts: list[torch.Tensor], dim: int, xnnpack: bool = False) -> torch.Tensor:
    """Concatenate chunk results; for ExecuTorch's XNNPACK delegate in groups of at most 5 (its concat's limit)."""
    if len(parts) == 1:
        return parts[0]
    if xnnpack and len(parts) > 5:
        return join([join(parts[i:i + 5], dim, xnnpack) for i in range(0, len(parts), 5)], dim, xnnpack)
    return torch.cat(parts, dim=dim)


def decay_terms(rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query row and column terms of the decay, (heads, h*w, h, 1) and (heads, h*w, 1, w) with queries in
    row-major order, from the per-axis tables shaped (heads, h, 1, h, 1) and (heads, 1, w, 1, w)."""
    heads, h, w = rows.shape[0], rows.shape[1], cols.shape[2]
    return (rows.expand(heads, h, w, h, 1).reshape(heads, h * w, h, 1),
            cols.expand(heads, h, w, 1, w).reshape(heads, h * w, 1, w))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: tuple[torch.Tensor, torch.Tensor],
              h, w, chunks: int, bmm: bool = False, barrier: bool = False) -> torch.Tensor:
    """softmax(q·kᵀ + decay)·v on (B, heads, h*w, d), the queries in ``chunks`` pieces of whole rows.
    ``bmm``: the matmuls as 3-D batched ones (what ExecuTorch's XNNPACK delegate takes). ``barrier``: a
    Clip that binds no finite score between the two Adds, so that a converter cannot add the row and
    column terms together first (OpenVINO's would fold them into the whole mask, once per block)."""
    heads, d = q.shape[1], q.shape[3]
    rows_term, cols_term = terms
    k_t = k.transpose(-1, -2)
    outs = []
    for r0, r1, keep in chunk_rows(h, chunks):
        t0, t1 = r0 * w, r1 * w
        qc = rows(q, 2, t0, t1, h * w)
        if bmm:  # static shapes: -1 is the batch
            n = t1 - t0
            scores = torch.bmm(qc.reshape(-1, n, d), k_t.reshape(-1, d, h * w)).reshape(-1, heads, n, h, w)
        else:
            scores = (qc @ k_t).unflatten(3, (h, w))
        query = rows_term.dim() - 3  # the query axis: 1, or 2 where the terms carry a batch axis
        scores = scores + rows(rows_term, query, t0, t1, h * w)
        if barrier:
            scores = scores.clamp(max=FLOAT_MAX)
        attn = torch.softmax((scores + rows(cols_term, query, t0, t1, h * w)).flatten(3), dim=-1)
        if bmm:
            outs.append(torch.bmm(attn.reshape(-1, n, h * w), v.reshape(-1, h * w, d)).reshape(-1, heads, n, d))
        else:
            outs.append(kept(attn @ v, 2, keep, w))
    return join(outs, 2, bmm)


def runtime_zero(t: torch.Tensor) -> torch.Tensor:
    """A (1, 1, 1) zero computed from ``t``'s first value (clipped to [0, 0]), so that no runtime or converter
    can compute what it is added to before the model runs. Sliced and clipped, not indexed and compared:
    the deploy form holds no Gather or Cast (``targets.onnx.FORBIDDEN_OPS``). It is NaN only where the first
    image's first query value is NaN; that token's key is then NaN too, so that image's output is NaN
    anyway, and in a batch the mask (shared by every image) makes the others' NaN as well."""
    first = t.narrow(0, 0, 1).narrow(1, 0, 1).narrow(2, 0, 1)  # narrow: size 1 even for a dynamic chunk
    return first.clamp(0.0, 0.0)


def fused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, terms: tuple[torch.Tensor, torch.Tensor],
                    h, w, chunks: int, heads: int) -> torch.Tensor:
    """softmax(q·kᵀ + decay)·v on (B, h*w, heads·d) tokens, the queries in ``chunks`` pieces of whole rows,
    each a ``fused.attention`` whose mask is built at run time from the chunk's rows of the terms
    ((heads, h*w, h, 1) and (heads, h*w, 1, w)), never folded into constants."""
    rows_term, cols_term = terms
    n = h * w
    outs = []
    for r0, r1, keep in chunk_rows(h, chunks):
        t0, t1 = r0 * w, r1 * w
        qc = rows(q, 1, t0, t1, n)
        mask = (rows(rows_term, 1, t0, t1, n) + runtime_zero(qc)) + rows(cols_term, 1, t0, t1, n)
        outs.append(kept(fused.attention(qc, k, v, mask.flatten(2), heads), 1, keep, w))
    return join(outs, 1)
