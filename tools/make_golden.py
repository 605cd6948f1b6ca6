"""Golden outputs of the official qhfan/RMT code, for the parity tests (tests/data/rmt_golden.npz).

The official files import timm, fvcore, einops and mmdet/mmcv, which this project does not
depend on. Small stand-ins for exactly the names they import are written to a temporary
folder; the official network code itself runs unchanged. Each official model gets OUR seeded
random weights (``tests.conftest.random_model`` / ``randomize_``: numpy's PCG64, the same bits on
every CPU) with ``strict=True``, so a test can rebuild the same model and compare.
``<name>/weights_sha256`` tells it whether the seeded weights are still the ones the goldens were
made with.

Usage (official commit 32ea214 of github.com/qhfan/RMT):
    for f in classfication_release/RMT.py classification_token_label_release/RMT.py \\
             detect/mmdet/models/backbones/RMT.py; do
        mkdir -p official/$(dirname $f); git -C RMT_REPO show HEAD:$f > official/$f; done
    python tools/make_golden.py --official official --out tests/data/rmt_golden.npz
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
SIZE = (64, 96)  # (H, W): non-square on purpose
# ours, official folder, official function, seed. The token-label RMT_S (VisRetNet(token_label=True))
# returns, in eval mode, x_cls + 0.5 * x_aux.max(1)[0] (classification_token_label_release/RMT.py:654).
CLASSIFIERS = [("rmt-t", "classfication_release", "RMT_T3", 100),
               ("rmt-s", "classfication_release", "RMT_S", 101),
               ("rmt-b", "classfication_release", "RMT_M2", 102),
               ("rmt-l", "classfication_release", "RMT_L6", 103),
               ("rmt-s-tl", "classification_token_label_release", "RMT_S", 104)]
BACKBONE_SEED = 200
# detect/configs/RMT/{retinanet,maskrcnn}_t_1x.py: the backbone arguments (they override the base config).
BACKBONE_T = dict(embed_dims=[64, 128, 256, 512], depths=[2, 2, 8, 2], num_heads=[4, 4, 8, 16],
                  init_values=[2, 2, 2, 2], heads_ranges=[4, 4, 6, 6], mlp_ratios=[3, 3, 3, 3],
                  drop_path_rate=0.1, chunkwise_recurrents=[True, True, False, False],
                  layerscales=[False, False, False, False], out_indices=(0, 1, 2, 3))

STANDINS = {  # only the names the official RMT.py files import; einsum is imported but never called
    "timm/__init__.py": "", "timm/models/__init__.py": "", "fvcore/__init__.py": "",
    "mmdet/__init__.py": "", "mmdet/models/__init__.py": "", "mmdet/models/backbones/__init__.py": "",
    "timm/models/layers.py": """
import collections.abc
from torch import nn
def to_2tuple(x):
    return tuple(x) if isinstance(x, collections.abc.Iterable) and not isinstance(x, str) else (x, x)
def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0):
    return nn.init.trunc_normal_(tensor, mean, std, a, b)
class DropPath(nn.Module):  # stochastic depth: drop whole samples of a residual branch in training
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = drop_prob
    def forward(self, x):
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        return x * x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep) / keep
""",
    "timm/models/vision_transformer.py": "VisionTransformer = None\ndef _cfg(**kw):\n    return dict(kw)\n",
    "timm/models/registry.py": "def register_model(fn):\n    return fn\n",
    "fvcore/nn.py": "FlopCountAnalysis = flop_count_table = None\n",
    "einops/__init__.py": """
import torch
def einsum(*args):  # einops.einsum(t1, t2, "b n d, b m d -> b n m"): names are space-separated
    *tensors, pattern = args
    letters = {}
    def spec(axes):
        return "".join(letters.setdefault(a, chr(ord("a") + len(letters))) for a in axes.split())
    inputs, output = pattern.split("->")
    return torch.einsum(",".join(map(spec, inputs.split(","))) + "->" + spec(output), *tensors)
""",
    "mmdet/utils.py": "import logging\ndef get_root_logger(**kw):\n    return logging.getLogger('mmdet')\n",
    "mmdet/models/builder.py": """
class Registry(dict):
    def register_module(self):
        def add(cls):
            self[cls.__name__] = cls
            return cls
        return add
BACKBONES = Registry()
""",
    "mmcv_custom/__init__.py": "load_checkpoint = None\n",
}


def weights_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the seeded entries of a state dict (floating, not the computed ``Relpos`` tables):
    ``tests.seeded.values_digest``, which numpy alone can recompute (under qemu, say)."""
    from tests.seeded import values_digest

    return values_digest({k: t.detach().cpu().float().numpy() for k, t in state_dict.items()
                          if t.is_floating_point() and ".Relpos." not in k})


def load_official(name: str, path: Path):
    """Import an official RMT.py as module ``name`` (its package sets what relative imports see)."""
    spec = importlib.util.spec_from_file_location(name, path)
    sys.modules[name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def adopt(official: torch.nn.Module, ours: torch.nn.Module) -> torch.nn.Module:
    """Our state dict into the official model, strictly (any key difference is printed first)."""
    theirs, mine = set(official.state_dict()), set(ours.state_dict())
    if theirs != mine:
        print(f"  key mismatch: official-only {sorted(theirs - mine)}, ours-only {sorted(mine - theirs)}")
    official.load_state_dict(ours.state_dict(), strict=True)
    official.eval()  # not `return official.eval()`: the detection backbone's train() returns None
    return official


def compare(out: dict, key: str, official: torch.Tensor, ours: torch.Tensor) -> None:
    """Store the official output under ``key``; print how far ours is from it."""
    out[key] = official.float().numpy()
    diff, scale = (official - ours).abs().max().item(), official.abs().max().item()
    print(f"  {key}: max|official| {scale:.4g}  max abs diff {diff:.3g}  relative {diff / scale:.3g}")


@torch.inference_mode()
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="folder with the official files")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write")
    parser.add_argument("--repo", type=Path, default=REPO, help="rmt-deploy checkout (for tests.conftest)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo))
    from rmt_deploy.bundled import bundled_images
    from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
    from rmt_deploy.model.backbone import create_backbone
    from tests.conftest import random_model, randomize_

    stand_ins = tempfile.TemporaryDirectory()
    for rel, text in STANDINS.items():
        (Path(stand_ins.name) / rel).parent.mkdir(parents=True, exist_ok=True)
        (Path(stand_ins.name) / rel).write_text(text.lstrip())
    sys.path.insert(0, stand_ins.name)

    # Image 0: seeded standard-normal noise; image 1: the first bundled validation image.
    noise = np.random.default_rng(0).standard_normal((1, 3) + SIZE).astype(np.float32)
    real, _, _ = load_batch(open_image_set(bundled_images("val")).subset(1), Preprocess(SIZE))
    out = {"input": np.concatenate([noise, real.astype(np.float32)])}
    x = torch.from_numpy(out["input"])

    for name, folder, fn, seed in CLASSIFIERS:
        module = load_official(f"official_{folder}", args.official / folder / "RMT.py")
        ours = random_model(name, seed=seed)
        compare(out, f"{name}/logits", adopt(getattr(module, fn)(None), ours)(x), ours(x))
        out[f"{name}/seed"] = np.int64(seed)
        out[f"{name}/weights_sha256"] = np.array(weights_digest(ours.state_dict()))

    detect = args.official / "detect/mmdet/models/backbones/RMT.py"
    module = load_official("mmdet.models.backbones.RMT", detect)  # `from ..builder import BACKBONES`
    ours = randomize_(create_backbone("rmt-t", (0, 1, 2, 3), extra_norms=True), seed=BACKBONE_SEED)
    official = adopt(module.RMT(**BACKBONE_T), ours)
    for i, (feat, mine) in enumerate(zip(official(x[:1]), ours(x[:1]))):  # image 0 only: keeps the file small
        compare(out, f"backbone-rmt-t/feat{i}", feat, mine)
    out["backbone-rmt-t/seed"] = np.int64(BACKBONE_SEED)
    out["backbone-rmt-t/weights_sha256"] = np.array(weights_digest(ours.state_dict()))

    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    stand_ins.cleanup()


if __name__ == "__main__":
    main()
