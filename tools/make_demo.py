"""Build the bundled demo: digit images in rmt_deploy/assets/calib/ and the rmt-demo checkpoint trained on them.

    python tools/make_demo.py            # writes rmt_deploy/assets/calib/{train,val}/<digit>/*.png, trains, saves
    python tools/make_demo.py --epochs 5 # a quicker, less accurate model

Data: scikit-learn's handwritten digits (1,797 8x8 grayscale images, UCI ML digits), each
upscaled to 64x64 with bicubic resampling and written as 8-bit grayscale PNG. Split: a
stratified 80/20 train/val split with random_state=0 (1,437 / 360 images). Training reads
the PNGs back through rmt_deploy's own image loader, so the demo exercises the same path
users take (grayscale → RGB, ImageNet mean/std, crop_pct=1.0 at 64x64).
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from rmt_deploy.data.images import Preprocess, load_batch, open_image_set
from rmt_deploy.model.rmt import create_model

REPO = Path(__file__).resolve().parents[1]
SIZE = 64


def write_images(calib: Path) -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    index = np.arange(len(digits.target))
    train_idx, val_idx = train_test_split(index, test_size=0.2, random_state=0, stratify=digits.target)
    for split, ids in (("train", train_idx), ("val", val_idx)):
        for i in sorted(ids):
            label = int(digits.target[i])
            pixels = (digits.images[i] / 16.0 * 255.0).round().astype(np.uint8)
            image = Image.fromarray(pixels, mode="L").resize((SIZE, SIZE), Image.BICUBIC)
            out = calib / split / str(label) / f"{i:04d}.png"
            out.parent.mkdir(parents=True, exist_ok=True)
            image.save(out, optimize=True)
    print(f"wrote {len(train_idx)} train / {len(val_idx)} val images under {calib}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random shift (±6 px) and scale (0.85–1.15) by an affine grid; digits stay centred-ish."""
    n = x.shape[0]
    scale = 0.85 + 0.3 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * (12 / SIZE * 2)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    background = x.amin(dim=(2, 3), keepdim=True)
    return F.grid_sample(x - background, grid, align_corners=False) + background


def train(calib: Path, out: Path, epochs: int, seed: int) -> None:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    pre = Preprocess((SIZE, SIZE), crop_pct=1.0)
    train_set, val_set = open_image_set(calib / "train"), open_image_set(calib / "val")
    xtr, _, _ = load_batch(train_set, pre)
    xva, _, _ = load_batch(val_set, pre)
    ytr, yva = torch.tensor(train_set.labels), torch.tensor(val_set.labels)
    xtr, xva = torch.from_numpy(xtr), torch.from_numpy(xva)

    model = create_model("rmt-demo", drop_path_rate=0.05)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    batch, steps_per_epoch = 64, math.ceil(len(xtr) / 64)
    total, warmup = epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    t0 = time.time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(xtr), generator=gen)
        seen, loss_sum = 0, 0.0
        for s in range(steps_per_epoch):
            idx = order[s * batch:(s + 1) * batch]
            x = _augment(xtr[idx], gen)
            loss = F.cross_entropy(model(x), ytr[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            seen += len(idx)
            loss_sum += loss.item() * len(idx)
        acc = evaluate(model, xva, yva)
        print(f"epoch {epoch + 1:3d}/{epochs}  loss {loss_sum / seen:.3f}  val top-1 {acc:.2f}%  ({time.time() - t0:.0f}s)")

    model.eval()
    acc = evaluate(model, xva, yva)
    meta = {
        "rmt_deploy.arch": "rmt-demo",
        "rmt_deploy.input_size": f"{SIZE}x{SIZE}",
        "rmt_deploy.crop_pct": "1.0",
        "rmt_deploy.mean": json.dumps(list(pre.mean)),
        "rmt_deploy.std": json.dumps(list(pre.std)),
        "rmt_deploy.classes": json.dumps(list(train_set.classes)),
        "rmt_deploy.val_top1": f"{acc:.2f}",
        "rmt_deploy.trained_on": "scikit-learn digits, 64x64, calib/train (tools/make_demo.py)",
    }
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out), metadata=meta)
    print(f"saved {out} ({out.stat().st_size / 1e6:.2f} MB), val top-1 {acc:.2f}%")


@torch.no_grad()
def evaluate(model, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 128]).argmax(1) for i in range(0, len(x), 128)])
    return 100.0 * (pred == y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calib", type=Path, default=REPO / "rmt_deploy" / "assets" / "calib")
    ap.add_argument("--out", type=Path, default=REPO / "rmt_deploy" / "assets" / "rmt_demo.safetensors")
    ap.add_argument("--skip-images", action="store_true", help="reuse the images already in --calib")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if not args.skip_images:
        write_images(args.calib)
    train(args.calib, args.out, args.epochs, args.seed)


if __name__ == "__main__":
    main()
