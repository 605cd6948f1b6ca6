"""Deploy form of RMT: the same function as ``model.rmt.RMT``, built for export (docs/design.md, "The deploy form").

What changes against the reference, and why:

- Rotary sin/cos tables and decay masks are constant buffers for one resolution, held
  once per stage, so the graph has no arange/meshgrid/casts/shape arithmetic. A dynamic deploy
  form (one graph for many sizes) builds them once per stage from the input's size (``tables.py``). Whole-attention
  stages hold two per-axis decay tables and add them once per stage (a broadcast Add and a
  Reshape), so the file grows linearly with the side, not with its fourth power.
- Where one image's attention scores would exceed a budget (detection sizes), the attention runs in
  chunks of grid rows or columns, and whole attention adds its decay per chunk as separable row and
  column terms, never as the (heads, N, N) table (``chunks.py``).
- q and k channels are reordered inside each head (same order for both, so q·k is
  unchanged) so that every rotary pair (a, b) sits in two contiguous halves; the rotation
  ``(a, b) → (-b, a)`` is then a swap of halves (Split + Concat, no strided slices, no
  stack) with its sign folded into the sin table. Measured on RMT-T: folding the
  rotation into the weights instead costs ~20% more GEMM work for no gain.
  The key scaling is folded into the key weights.
- BatchNorm is folded into the preceding conv / linear; layer scale into the last
  linear of its branch; the identity residual around a depthwise conv becomes +1 on the
  kernel centre.
- The FFN runs channels-first as 1x1 conv → GELU → dwconv → 1x1 conv (see DeployBlock).
- Reshapes use -1 only for the batch-carrying axis, so one graph serves any batch.
- Three encodings of the attention and rotary (``ENCODINGS``): "generic" keeps MatMul → Add(decay)
  → Softmax → MatMul and the swap of halves, which every runtime, quantizer and TensorRT reads;
  "onnxruntime" uses ONNX Runtime's fused ops on 3-D tokens (``fused.py``), measured ~1.25x faster
  end to end on RMT-T (docs/design.md "One encoding per runtime"); "xnnpack" writes LayerNorm, the
  attention matmuls, the rotation and the pooling in the forms ExecuTorch's XNNPACK delegate takes
  (``xnnpack.py``), so no op is left to ExecuTorch's slower portable kernels.
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.rmt import RMT, MaSA, PatchMerging, RetBlock, Stage
from . import chunks, fused, tables, xnnpack
from .fold import GELU, conv1x1, conv_like, dwconv_plus_identity, fold_bn, gelu, linear, scaled_linear

__all__ = ["DeployRMT", "DeployStage", "deploy_stem", "deploy_stages", "ENCODINGS"]

ENCODINGS = ("generic", "onnxruntime", "xnnpack")


class ChannelsLastConv(nn.Module):
    """A conv applied to (B, H, W, C) tokens; ONNX Runtime folds the permutes into its layout pass."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


# ---------------------------------------------------------------- attention


class DeployMaSA(nn.Module):
    """MaSA with constant tables passed in by the stage; rank ≤ 5 everywhere."""

    def __init__(self, ref: MaSA, gamma: torch.Tensor | None, encoding: str = "generic") -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.decomposed = ref.num_heads, ref.head_dim, ref.decomposed
        self.fused, self.xnnpack = encoding == "onnxruntime", encoding == "xnnpack"
        self.chunks = (1,)  # query chunks (whole) or row and column chunks (decomposed): set by the stage
        # A fixed-size stage's token grid, set by the stage: chunk offsets stay ints under torch.jit.trace
        # (Core ML's converter), which gives sizes read from tensors as tensors.
        self.grid: tuple[int, int] | None = None
        perm = tables.evens_then_odds(ref.num_heads, ref.head_dim)
        # The same channel permutation inside each head of q and k leaves q·k unchanged.
        # Separate q and k projections measured ~6% faster on RMT-T than one [q | k]
        # projection followed by a Split.
        self.q = linear(ref.q_proj.weight.detach()[perm], ref.q_proj.bias.detach()[perm])
        self.k = linear(ref.k_proj.weight.detach()[perm] * ref.scaling,
                         ref.k_proj.bias.detach()[perm] * ref.scaling)
        self.v = linear(ref.v_proj.weight.detach(), ref.v_proj.bias.detach())
        self.lepe = ChannelsLastConv(ref.lepe.conv)
        self.out_proj = linear(*scaled_linear(ref.out_proj, gamma))

    def forward(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor,
                masks: tuple[torch.Tensor, ...]) -> torch.Tensor:
        h, w = self.grid or (x.shape[1], x.shape[2])
        q, k, v = self.q(x), self.k(x), self.v(x)
        if self.fused:
            return self.out_proj(self._fused(q, k, v, h, w, sin, cos, masks) + self.lepe(v))
        q = q * cos + self._swap_halves(q, h, w) * sin
        k = k * cos + self._swap_halves(k, h, w) * sin
        if self.decomposed:
            out = self._decomposed(q, k, v, h, w, *masks)
        else:
            out = self._whole(q, k, v, h, w, *masks)
        return self.out_proj(out + self.lepe(v))

    def _swap_halves(self, t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Per head, [a | b] → [b | a]; with the signed sin table this is the rotation."""
        if self.xnnpack:
            return xnnpack.swap_halves(t, self.num_heads)
        n, half = self.num_heads, self.head_dim // 2
        a, b = t.reshape(-1, n, 2, half).split(1, dim=2)
        return torch.cat((b, a), dim=2).reshape(-1, h, w, n * 2 * half)

    def _decomposed(self, q, k, v, h: int, w: int, mask_h, mask_w) -> torch.Tensor:
        n, d = self.num_heads, self.head_dim
        if max(self.chunks) > 1:
            return self._decomposed_chunks(q, k, v, h, w, mask_h, mask_w)
        # Row pass: batch = (B*H), sequence = W.
        qw = q.reshape(-1, w, n, d).transpose(1, 2)
        kw = k.reshape(-1, w, n, d).transpose(1, 2)
        vw = v.reshape(-1, w, n, d).transpose(1, 2)
        rows = self._attend(qw, kw, vw, mask_w).reshape(-1, h, n, w, d)
        # Column pass on the row result: batch = (B*W), sequence = H.
        qh = q.reshape(-1, h, w, n, d).permute(0, 2, 3, 1, 4).reshape(-1, n, h, d)
        kh = k.reshape(-1, h, w, n, d).permute(0, 2, 3, 1, 4).reshape(-1, n, h, d)
        vh = rows.permute(0, 3, 2, 1, 4).reshape(-1, n, h, d)
        out = self._attend(qh, kh, vh, mask_h).reshape(-1, w, n, h, d).permute(0, 3, 1, 2, 4)  # (B, H, W, n, d)
        return out.reshape(-1, h, w, n * d)

    def _decomposed_chunks(self, q, k, v, h, w, mask_h, mask_w) -> torch.Tensor:
        """The row pass in chunks of grid rows, the column pass in chunks of grid columns (``chunks.py``).
        Shapes name the batch: -1 would also take the chunk's rows."""
        batch, (row_chunks, col_chunks) = q.shape[0], self.chunks
        q, k, v = (t.unflatten(-1, (self.num_heads, self.head_dim)) for t in (q, k, v))  # (B, h, w, n, d)
        rows = []
        for r0, r1, keep in chunks.chunk_rows(h, row_chunks):
            # (B*r, n, w, d): the chunk's grid rows as the batch of a row pass
            q_r, k_r, v_r = (chunks.rows(t, 1, r0, r1, h).flatten(0, 1).transpose(1, 2) for t in (q, k, v))
            out = self._attend(q_r, k_r, v_r, mask_w).unflatten(0, (batch, r1 - r0))  # (B, r, n, w, d)
            rows.append(chunks.kept(out, 1, keep))
        rows = chunks.join(rows, 1, self.xnnpack)  # (B, h, n, w, d)
        cols = []
        for c0, c1, keep in chunks.chunk_rows(w, col_chunks):
            # (B*c, n, h, d): the chunk's grid columns as the batch of a column pass
            q_c, k_c = (chunks.rows(t, 2, c0, c1, w).permute(0, 2, 3, 1, 4).flatten(0, 1) for t in (q, k))
            v_c = chunks.rows(rows, 3, c0, c1, w).permute(0, 3, 2, 1, 4).flatten(0, 1)
            out = self._attend(q_c, k_c, v_c, mask_h).unflatten(0, (batch, c1 - c0))  # (B, c, n, h, d)
            cols.append(chunks.kept(out, 1, keep))
        return chunks.join(cols, 1, self.xnnpack).permute(0, 3, 1, 2, 4).flatten(3)

    def _whole(self, q, k, v, h: int, w: int, *masks) -> torch.Tensor:
        n, d = self.num_heads, self.head_dim
        q = q.reshape(-1, h * w, n, d).transpose(1, 2)
        k = k.reshape(-1, h * w, n, d).transpose(1, 2)
        v = v.reshape(-1, h * w, n, d).transpose(1, 2)
        if self.chunks[0] > 1:  # masks: the decay's row and column terms
            # The standard encoding goes to converters that reassociate Adds (OpenVINO): a barrier between.
            out = chunks.attention(q, k, v, masks, h, w, self.chunks[0], bmm=self.xnnpack,
                                   barrier=not self.xnnpack)
        else:
            out = self._attend(q, k, v, masks[0])
        return out.transpose(1, 2).reshape(-1, h, w, n * d)

    def _attend(self, q, k, v, mask) -> torch.Tensor:
        """softmax(q·kᵀ + decay)·v on (B, heads, N, d)."""
        if self.xnnpack:
            return xnnpack.attention(q, k, v, mask)
        return torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1) @ v

    def _fused(self, q, k, v, h: int, w: int, sin, cos, masks) -> torch.Tensor:
        """The ONNX Runtime encoding: rotary and attention as fused ops on 3-D tokens. The row pass
        needs no transposes at all; the column pass transposes q, k and the rows once each."""
        n, c = self.num_heads, self.num_heads * self.head_dim
        q = fused.rotary(q.reshape(-1, h * w, c), cos, sin, n)
        k = fused.rotary(k.reshape(-1, h * w, c), cos, sin, n)
        if not self.decomposed and self.chunks[0] > 1:  # a mask per chunk, built at run time
            v = v.reshape(-1, h * w, c)
            return chunks.fused_attention(q, k, v, masks, h, w, self.chunks[0], n).reshape(-1, h, w, c)
        if not self.decomposed:
            return fused.attention(q, k, v.reshape(-1, h * w, c), masks[0], n).reshape(-1, h, w, c)
        mask_h, mask_w = masks
        if max(self.chunks) > 1:
            return self._fused_chunks(q, k, v, h, w, mask_h, mask_w)
        rows = fused.attention(q.reshape(-1, w, c), k.reshape(-1, w, c), v.reshape(-1, w, c), mask_w, n)

        def columns(t: torch.Tensor) -> torch.Tensor:  # (B, H, W, C) → (B*W, H, C)
            return t.reshape(-1, h, w, c).transpose(1, 2).reshape(-1, h, c)

        out = fused.attention(columns(q), columns(k), columns(rows), mask_h, n)
        return out.reshape(-1, w, h, c).transpose(1, 2)

    def _fused_chunks(self, q, k, v, h, w, mask_h, mask_w) -> torch.Tensor:
        """The fused row and column passes in chunks of grid rows and columns, as ``_decomposed_chunks``."""
        n, batch, (row_chunks, col_chunks) = self.num_heads, q.shape[0], self.chunks
        q, k = q.unflatten(1, (h, w)), k.unflatten(1, (h, w))  # (B, h, w, C), as v
        rows = []
        for r0, r1, keep in chunks.chunk_rows(h, row_chunks):
            q_r, k_r, v_r = (chunks.rows(t, 1, r0, r1, h).flatten(0, 1) for t in (q, k, v))  # (B*r, w, C)
            out = fused.attention(q_r, k_r, v_r, mask_w, n).unflatten(0, (batch, r1 - r0))
            rows.append(chunks.kept(out, 1, keep))
        rows = chunks.join(rows, 1)  # (B, h, w, C)
        cols = []
        for c0, c1, keep in chunks.chunk_rows(w, col_chunks):
            q_c, k_c, v_c = (chunks.rows(t, 2, c0, c1, w).transpose(1, 2).flatten(0, 1)  # (B*c, h, C)
                             for t in (q, k, rows))
            out = fused.attention(q_c, k_c, v_c, mask_h, n).unflatten(0, (batch, c1 - c0))
            cols.append(chunks.kept(out, 1, keep))
        return chunks.join(cols, 1).transpose(1, 2)


# ---------------------------------------------------------------- blocks


class DeployBlock(nn.Module):
    """CPE → MaSA → FFN on channels-last tokens; the FFN itself runs channels-first.

    fc1/fc2 become 1x1 convs so ``fc1 → GELU → dwconv → fc2`` stays in ONNX Runtime's
    blocked conv layout with one layout change in and one out; as Gemms around a
    depthwise conv it needed two more (measured: RMT-T 9% faster end to end).
    """

    def __init__(self, ref: RetBlock, ffn_layout: str = "conv", encoding: str = "generic") -> None:
        super().__init__()
        g1 = ref.gamma_1 if ref.layerscale else None
        g2 = ref.gamma_2 if ref.layerscale else None
        self.pos = ChannelsLastConv(dwconv_plus_identity(ref.pos.conv))
        norm = xnnpack.LayerNorm if encoding == "xnnpack" else (lambda ln: ln)
        self.gelu = xnnpack.gelu if encoding == "xnnpack" else gelu
        self.norm1 = norm(ref.retention_layer_norm)
        self.attn = DeployMaSA(ref.retention, g1, encoding)
        self.norm2 = norm(ref.final_layer_norm)
        ffn = ref.ffn
        self.tokens_ffn = ffn_layout == "linear"
        make = linear if self.tokens_ffn else conv1x1
        self.fc1 = make(ffn.fc1.weight.detach(), ffn.fc1.bias.detach())
        dwconv = dwconv_plus_identity(ffn.dwconv.conv)
        self.dwconv = ChannelsLastConv(dwconv) if self.tokens_ffn else dwconv
        self.fc2 = make(*scaled_linear(ffn.fc2, g2))

    def forward(self, x, sin, cos, masks) -> torch.Tensor:
        x = self.pos(x)  # x + dwconv(x), folded
        x = x + self.attn(self.norm1(x), sin, cos, masks)
        if self.tokens_ffn:  # int8: Gemms keep ONNX Runtime's fused QGemm with float output
            return x + self.fc2(self.dwconv(self.gelu(self.fc1(self.norm2(x)))))
        h = self.norm2(x).permute(0, 3, 1, 2)
        h = self.fc2(self.dwconv(self.gelu(self.fc1(h))))  # dwconv includes the FFN's inner residual
        return x + h.permute(0, 2, 3, 1)


class DeployStage(nn.Module):
    """Blocks of one stage plus the tables they share: constants for one size, or (``dynamic``)
    built in the graph from the token grid's size (``tables.py``)."""

    def __init__(self, ref: Stage, h: int, w: int, ffn_layout: str, encoding: str = "generic",
                 dynamic: bool = False, chunks: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(DeployBlock(b, ffn_layout, encoding) for b in ref.blocks)
        relpos = ref.Relpos
        self.heads = ref.blocks[0].retention.num_heads
        self.fused = encoding == "onnxruntime"
        self.stored_whole = encoding == "xnnpack"  # every head's channels: XNNPACK has no repeat
        self.decomposed = ref.blocks[0].retention.decomposed
        self.dynamic = dynamic
        # Attention in chunks (``chunks.py``) where one image's scores would not fit the budget; whole
        # attention in chunks never builds its full decay mask.
        self.chunks = chunks
        for block in self.blocks:
            block.attn.chunks = chunks
            block.attn.grid = None if dynamic else (h, w)
        with torch.no_grad():
            if dynamic:
                self._store_rates(relpos)
            else:
                self._store_tables(relpos, h, w)
        self.downsample = None if ref.downsample is None else _merge(ref.downsample)

    def _store_rates(self, relpos) -> None:
        """What a dynamic stage builds its tables from: the frequencies in ``tables.evens_then_odds`` order
        (for the fused rotary, the distinct ones), the sign of the rotation, each head's decay rate."""
        head_dim = relpos.angle.shape[0]
        angle = relpos.angle[tables.evens_then_odds(1, head_dim)]
        self.register_buffer("angle", (angle[head_dim // 2:] if self.fused else angle).clone())
        self.register_buffer("sign", torch.cat([-torch.ones(head_dim // 2), torch.ones(head_dim // 2)]))
        self.register_buffer("decay", relpos.decay.clone())

    def _store_tables(self, relpos, h: int, w: int) -> None:
        # One head's (h, w, head_dim) tables, repeated across heads in the graph: stored for
        # every channel they took 64 MB of RMT-T's file at 800x1344.
        sin, cos = tables.rotary_tables(*relpos.rotary(h, w))
        if self.fused:  # fused.rotary takes (h*w, head_dim/2) angle tables
            half = sin.shape[-1] // 2
            sin, cos = sin[..., half:].reshape(h * w, half), cos[..., half:].reshape(h * w, half)
        if self.stored_whole:
            sin, cos = sin.repeat(1, 1, self.heads), cos.repeat(1, 1, self.heads)
        self.register_buffer("sin", sin.contiguous())
        self.register_buffer("cos", cos.contiguous())
        if self.decomposed:
            self.register_buffer("mask_h", relpos.decay_1d(h).contiguous())
            self.register_buffer("mask_w", relpos.decay_1d(w).contiguous())
        else:
            # The decay is built in the graph from two tables linear in the side: held as a
            # constant it would be 8 x 4200^2 floats (564 MB) for RMT-T's stage 3 at 800x1344.
            # decay(i, j; i', j') = gamma * (|i - i'| + |j - j'|).
            self.register_buffer("decay_rows", relpos.decay_1d(h)[:, :, None, :, None].contiguous())
            self.register_buffer("decay_cols", relpos.decay_1d(w)[:, None, :, None, :].contiguous())
            if self.stored_whole and self.chunks[0] > 1:  # XNNPACK takes no expand: the terms themselves
                rows_term, cols_term = chunks.decay_terms(self.decay_rows, self.decay_cols)
                self.register_buffer("rows_term", rows_term[None].contiguous())  # rank 5: no unsqueeze either
                self.register_buffer("cols_term", cols_term[None].contiguous())

    def tables(self, h, w) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        """(sin, cos, decay masks) as the blocks take them, built once per stage: from the stored
        per-head and per-axis tables (constants a runtime folds when it loads the model), or for a
        dynamic stage from the token grid's ``h`` and ``w``."""
        if self.dynamic:
            return self._built_tables(h, w)
        if self.fused or self.stored_whole:  # one head's angles for the fused op; or every head's
            sin, cos = self.sin, self.cos
        else:
            sin, cos = self.sin.repeat(1, 1, self.heads), self.cos.repeat(1, 1, self.heads)
        if self.decomposed:
            return sin, cos, (self.mask_h, self.mask_w)
        return sin, cos, self._whole_decay(self.decay_rows, self.decay_cols)

    def _whole_decay(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What whole attention adds to its scores, from the per-axis decays shaped (heads, h, 1, h, 1) and
        (heads, 1, w, 1, w): the (heads, N, N) mask by one broadcast Add, or in chunks the mask's per-query
        row and column terms."""
        if self.chunks[0] > 1:
            return (self.rows_term, self.cols_term) if self.stored_whole else chunks.decay_terms(rows, cols)
        return (tables.whole_decay(rows, cols),)

    def _built_tables(self, h, w) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
        sin, cos = tables.rotary(self.angle, h, w)
        if not self.fused:
            sin = (sin * self.sign).reshape(h, w, -1).repeat(1, 1, self.heads)
            cos = cos.reshape(h, w, -1).repeat(1, 1, self.heads)
        decay_h, decay_w = tables.decay_1d(self.decay, h), tables.decay_1d(self.decay, w)
        if self.decomposed:
            return sin, cos, (decay_h, decay_w)
        return sin, cos, self._whole_decay(decay_h[:, :, None, :, None], decay_w[:, None, :, None, :])

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """The blocks alone: the stage output before its merge (what a backbone returns)."""
        sin, cos, masks = self.tables(x.shape[1], x.shape[2])
        for block in self.blocks:
            x = block(x, sin, cos, masks)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.forward_blocks(x)
        return x if self.downsample is None else self.downsample(x)


def deploy_stem(ref: nn.Module, encoding: str = "generic") -> nn.Sequential:
    """The stem's (conv, BN[, GELU]) groups with each BatchNorm folded into its conv."""
    stem, seq = [], list(ref.proj)
    for i in range(0, len(seq), 3):
        conv, bn = seq[i], seq[i + 1]
        stem.append(conv_like(conv, *fold_bn(conv.weight.detach(), conv.bias.detach(), bn)))
        if i + 2 < len(seq):
            stem.append(nn.GELU() if encoding == "xnnpack" else GELU())
    return nn.Sequential(*stem)


def deploy_stages(layers: nn.ModuleList, input_size: tuple[int, int], ffn_layout: str,
                  encoding: str = "generic", dynamic: bool = False, largest: tuple[int, int] | None = None,
                  chunk_bytes: int = chunks.CHUNK_BYTES) -> nn.ModuleList:
    """Deploy stages with their tables for ``input_size`` (stride 4, then halving per stage), or
    building them from the input's size when ``dynamic``. Whole attention is chunked so one chunk's
    scores fit ``chunk_bytes`` at ``largest``, the largest size the form takes (default ``input_size``)."""
    grids = stage_grids(input_size, len(layers))
    big = stage_grids(largest or input_size, len(layers))
    stages = []
    for stage, (h, w), (bh, bw) in zip(layers, grids, big):
        attn = stage.blocks[0].retention
        count = chunks.stage_chunks(attn.num_heads, bh, bw, attn.decomposed, chunk_bytes)
        stages.append(DeployStage(stage, h, w, ffn_layout, encoding, dynamic, count))
    return nn.ModuleList(stages)


def stage_grids(input_size: tuple[int, int], num_stages: int) -> list[tuple[int, int]]:
    """Each stage's token grid (h, w): stride 4, then halving (rounding up) per stage."""
    h, w = input_size[0] // 4, input_size[1] // 4
    grids = []
    for _ in range(num_stages):
        grids.append((h, w))
        h, w = (h + 1) // 2, (w + 1) // 2
    return grids


def _merge(ref: PatchMerging) -> nn.Module:
    w, b = fold_bn(ref.reduction.weight.detach(), ref.reduction.bias.detach(), ref.norm)
    return ChannelsLastConv(conv_like(ref.reduction, w, b))


class DeployRMT(nn.Module):
    """Export-ready RMT for one input size, or any (``dynamic``); see the module docstring."""

    def __init__(self, ref: RMT, input_size: tuple[int, int], ffn_layout: str = "conv",
                 encoding: str = "generic", dynamic: bool = False, largest: tuple[int, int] | None = None,
                 chunk_bytes: int = chunks.CHUNK_BYTES) -> None:
        super().__init__()
        cfg = ref.cfg
        self.cfg, self.input_size, self.encoding, self.dynamic = cfg, input_size, encoding, dynamic
        self.stem = deploy_stem(ref.patch_embed, encoding)
        self.stages = deploy_stages(ref.layers, input_size, ffn_layout, encoding, dynamic, largest, chunk_bytes)
        # BatchNorm over the projection channels, folded into the projection linear.
        pw, pb = fold_bn(ref.proj.weight.detach(), ref.proj.bias.detach(), ref.norm)
        self.proj = linear(pw, pb)
        self.head = ref.head
        self.aux_head = ref.aux_head
        self.output_names = ("logits",)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x).permute(0, 2, 3, 1)
        for stage in self.stages:
            x = stage(x)
        y = self.proj(x)
        y = y * torch.sigmoid(y)
        y = xnnpack.token_mean(y) if self.encoding == "xnnpack" else y.mean(dim=(1, 2))
        logits = self.head(y)
        if self.aux_head is not None:
            logits = logits + 0.5 * self.aux_head(x).amax(dim=(1, 2))
        return logits
