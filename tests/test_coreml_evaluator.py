"""The ops the Core ML numpy evaluator writes itself (``targets.coreml_mil``), each against torch.

Every Core ML test off macOS trusts these: a conv with the wrong padding or a LayerNorm over the
wrong axis would show up there only as a vague parity miss, here as the op that is wrong.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rmt_deploy.targets import coreml_mil

pytest.importorskip("coremltools", reason="coremltools not installed (pip install -e '.[coreml]')")
RNG = np.random.default_rng(7)
OP = SimpleNamespace(name="op")


def _getter(**values):
    return lambda name: values.get(name)


def _randn(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _torch(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


@pytest.mark.parametrize("groups,in_c,out_c,k,stride,dilation,pad", [
    (1, 3, 8, 3, 2, 1, (1, 1, 1, 1)),  # the stem: 3x3 stride 2
    (1, 8, 16, 1, 1, 1, (0, 0, 0, 0)),  # 1x1 (the FFN as conv)
    (6, 6, 6, 5, 1, 1, (2, 2, 2, 2)),  # depthwise 5x5 (LePE)
    (2, 4, 6, 3, 1, 2, (0, 1, 2, 1)),  # grouped, dilated, uneven padding
    (1, 5, 4, 3, (2, 1), 1, (1, 0, 1, 0)),  # different strides per axis
])
def test_conv_matches_torch(groups, in_c, out_c, k, stride, dilation, pad):
    x, w, b = _randn(2, in_c, 11, 9), _randn(out_c, in_c // groups, k, k), _randn(out_c)
    strides = stride if isinstance(stride, tuple) else (stride, stride)
    (got,) = coreml_mil._conv(OP, _getter(x=x, weight=w, bias=b, groups=groups, strides=np.array(strides),
                                          dilations=np.array([dilation] * 2), pad_type="custom", pad=np.array(pad)))
    padded = F.pad(_torch(x), (pad[2], pad[3], pad[0], pad[1]))  # torch: (left, right, top, bottom)
    want = F.conv2d(padded, _torch(w), _torch(b), stride=strides, dilation=dilation, groups=groups).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("pad_type", ["valid", "same"])
def test_conv_padding_modes(pad_type):
    x, w = _randn(1, 4, 10, 7), _randn(4, 4, 3, 3)
    (got,) = coreml_mil._conv(OP, _getter(x=x, weight=w, pad_type=pad_type))
    want = F.conv2d(_torch(x), _torch(w), padding=pad_type).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-4


@pytest.mark.parametrize("layout", ["channels-last", "channels-first"])
def test_layer_norm_matches_torch(layout):
    x, gamma, beta = _randn(2, 5, 6, 16), 1 + 0.1 * _randn(16), 0.1 * _randn(16)
    x = x + 3.0  # a mean far from zero: a missing centring would show
    if layout == "channels-last":  # tokens B×H×W×C, normalised over C (the reference's layout)
        (got,) = coreml_mil._layer_norm(OP, _getter(x=x, axes=np.array([-1]), gamma=gamma, beta=beta, epsilon=1e-6))
        want = F.layer_norm(_torch(x), (16,), _torch(gamma), _torch(beta), eps=1e-6).numpy()
    else:  # B×C×H×W normalised over C
        nchw = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        (got,) = coreml_mil._layer_norm(OP, _getter(x=nchw, axes=np.array([1]), epsilon=1e-5))
        want = F.layer_norm(_torch(x), (16,), eps=1e-5).numpy().transpose(0, 3, 1, 2)
    assert np.abs(got - want).max() < 1e-5


@pytest.mark.parametrize("mode,reference", [
    ("EXACT", lambda t: F.gelu(t)),
    ("TANH_APPROXIMATION", lambda t: F.gelu(t, approximate="tanh")),
    ("SIGMOID_APPROXIMATION", lambda t: t * torch.sigmoid(1.702 * t)),
])
def test_gelu_modes_match_torch(mode, reference):
    x = np.linspace(-8, 8, 2001, dtype=np.float32).reshape(3, 667)
    (got,) = coreml_mil._gelu(OP, _getter(x=x, mode=mode))
    assert np.abs(got - reference(_torch(x)).numpy()).max() < 1e-5


def test_silu_matches_torch_without_overflow():
    x = np.concatenate([np.linspace(-100, 100, 1001, dtype=np.float32), [-1e4, 1e4]]).astype(np.float32)
    with np.errstate(over="raise"):
        (got,) = coreml_mil._silu(OP, _getter(x=x))
    assert np.abs(got - F.silu(_torch(x)).numpy()).max() < 1e-4


@pytest.mark.parametrize("name,reference", [("reduce_mean", torch.mean), ("reduce_sum", torch.sum),
                                            ("reduce_max", torch.amax), ("reduce_min", torch.amin)])
@pytest.mark.parametrize("axes,keep", [((1,), True), ((1, 2), False), ((-1,), False)])
def test_reductions_match_torch(name, reference, axes, keep):
    x = _randn(2, 3, 4, 5)
    (got,) = coreml_mil._OWN[name](OP, _getter(x=x, axes=np.array(axes), keep_dims=np.bool_(keep)))
    want = reference(_torch(x), dim=axes, keepdim=keep).numpy()
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5
