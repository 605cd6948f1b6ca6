"""Reference model → deploy form (DESIGN §3)."""
from __future__ import annotations

import copy

import torch

from ..model.rmt import RMT
from .deploy import DeployRMT

__all__ = ["to_deploy", "DeployRMT"]


def to_deploy(model: RMT, input_size: tuple[int, int]) -> DeployRMT:
    """Build the export form of ``model`` for one input size (H, W), multiples of the stride.

    The reference model is not modified. The result accepts any batch size.
    """
    stride = model.cfg.stride
    if input_size[0] % stride or input_size[1] % stride:
        raise ValueError(f"input size {input_size[0]}x{input_size[1]} must be a multiple of {stride}")
    ref = copy.deepcopy(model).eval()
    with torch.no_grad():
        deploy = DeployRMT(ref, input_size)
    return deploy.eval()
