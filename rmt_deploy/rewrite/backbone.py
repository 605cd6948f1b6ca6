"""Deploy form of the detection / segmentation backbone (``model.backbone.RMTBackbone``).

The stem and stages are the classifier's deploy form (``deploy.py``); each stage in
``out_indices`` yields its output before the merge, through ``extra_norms[i]`` when the
checkpoint has them, as one NCHW feature map. Outputs are named ``feat{i}`` after the stage
index, so ``--out-indices 1,2,3`` gives ``feat1, feat2, feat3`` (strides 8, 16, 32).
"""
from __future__ import annotations

import torch
from torch import nn

from ..model.backbone import STRIDES, RMTBackbone
from . import xnnpack
from .chunks import CHUNK_BYTES
from .deploy import deploy_stages, deploy_stem

__all__ = ["DeployBackbone", "feature_name"]


def feature_name(stage: int) -> str:
    return f"feat{stage}"


class DeployBackbone(nn.Module):
    """Export-ready backbone for one input size, or any (``dynamic``): image → one NCHW map per output stage."""

    def __init__(self, ref: RMTBackbone, input_size: tuple[int, int], ffn_layout: str = "conv",
                 encoding: str = "generic", dynamic: bool = False, largest: tuple[int, int] | None = None,
                 chunk_bytes: int = CHUNK_BYTES) -> None:
        super().__init__()
        self.cfg, self.input_size, self.out_indices = ref.cfg, input_size, ref.out_indices
        self.encoding, self.dynamic = encoding, dynamic
        self.stem = deploy_stem(ref.patch_embed, encoding)
        # Stages after the last output feed nothing: they are not built.
        self.stages = deploy_stages(ref.layers[:ref.out_indices[-1] + 1], input_size, ffn_layout, encoding, dynamic,
                                    largest, chunk_bytes)
        self.norms = nn.ModuleDict()
        if ref.extra_norms is not None:
            for i in ref.out_indices:
                norm = ref.extra_norms[i]
                self.norms[str(i)] = xnnpack.LayerNorm(norm) if encoding == "xnnpack" else norm
        self.output_names = tuple(feature_name(i) for i in ref.out_indices)

    def outputs(self) -> list[dict]:
        """Name, stage, stride, channels and (H, W) of each output, as metadata and reports record them."""
        h, w = self.input_size
        return [{"name": feature_name(i), "stage": i, "stride": STRIDES[i], "channels": self.cfg.embed_dims[i],
                 "shape": [h // STRIDES[i], w // STRIDES[i]]} for i in self.out_indices]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.stem(x).permute(0, 2, 3, 1)
        outs = []
        for i, stage in enumerate(self.stages):
            tokens = stage.forward_blocks(x)
            if i in self.out_indices:
                y = self.norms[str(i)](tokens) if str(i) in self.norms else tokens
                outs.append(y.permute(0, 3, 1, 2))
            if i + 1 < len(self.stages):
                x = stage.downsample(tokens)
        return tuple(outs)
