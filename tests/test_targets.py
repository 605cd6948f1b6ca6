"""The target contract, checked on every row of the target table.

Each target exports the demo-sized deploy form from a small stand-in for the export job's
sources (real float graphs; INT8 is covered by the export tests), then the artifact is
inspected, described, loaded, run against PyTorch and rendered through the same interface
the export job, ``bench`` and the report use.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rmt_deploy.bench.parity import compare_logits
from rmt_deploy.progress import NullProgress
from rmt_deploy.rewrite import to_deploy
from rmt_deploy.targets import TARGETS, Exported, ExportRequest, Target, resolve_target, target_for_path
from rmt_deploy.targets.onnx_export import FUSED_REQUIRES, OPSET, export, export_fp16

from .conftest import random_model, real_images

SIZE = (64, 64)
ROWS = list(TARGETS.values())


class SmallSources:
    """The Sources interface over the demo architecture at 64x64: float graphs only."""

    def __init__(self, folder: Path) -> None:
        self.model = random_model("rmt-demo", seed=3).eval()
        self.deploy, self.size, self.calib, self.progress = to_deploy(self.model, SIZE), SIZE, None, NullProgress()
        self.folder, self.x = folder, real_images(SIZE, 2)
        with torch.no_grad():
            self.reference = self.model(torch.from_numpy(self.x)).numpy()
        self.built: list[str] = []
        self.statistic = "minmax"
        self.dynamic_size, self.sizes = False, [SIZE]  # one size: no parity at other sizes

    def deploy_form(self, encoding: str):
        self.built.append(f"{encoding}_form")
        return to_deploy(self.model, SIZE, encoding=encoding)

    def deploy_onnx(self, dynamic: bool, encoding: str = "generic") -> Path:
        self.built.append("deploy_onnx" if encoding == "generic" else "onnxruntime_onnx")
        return export(to_deploy(self.model, SIZE, encoding=encoding), self.folder / f"deploy_{encoding}.onnx", SIZE,
                      dynamic_batch=dynamic, metadata={})

    def fp16_onnx(self, dynamic: bool) -> Path:
        self.built.append("fp16_onnx")
        return export_fp16(self.deploy, self.folder / "deploy_fp16.onnx", SIZE, dynamic_batch=dynamic, metadata={})

    def int8_onnx(self, encoding: str):
        raise AssertionError("float precisions only")

    int8_qdq = int8_openvino = int8_onnx

    def parity_at_other_sizes(self, runner, dynamic: bool) -> list[dict]:
        return []

    def once(self, key, build):
        return build()

    def parity(self, runner, dynamic: bool) -> dict:
        name = runner.input_names()[0]
        logits = np.concatenate([next(iter(runner.infer({name: x[None]}).values())) for x in self.x])
        return compare_logits(self.reference, logits)


def _metadata(precision: str) -> dict[str, str]:
    return {"precision": precision, "arch": "rmt-demo", "input_size": "64x64", "num_classes": "10",
            "mean": json.dumps([0.485, 0.456, 0.406]), "std": json.dumps([0.229, 0.224, 0.225]),
            "dynamic_batch": "false"}


def test_the_table_is_consistent():
    names = [n for t in ROWS for n in (t.name, *t.aliases)]
    assert len(names) == len(set(names)), "a name or alias belongs to two targets"
    assert len({t.suffix for t in ROWS}) == len(ROWS)
    for target in ROWS:
        assert isinstance(target, Target) and TARGETS[target.name] is target
        assert all(resolve_target(n) is target for n in (target.name, *target.aliases))
        assert target.default_precision in target.precisions and target.title
        assert target_for_path(Path(f"model_int8{target.suffix}")) is target
        if target.options_type is not None:
            options = target.default_options()
            assert options.is_default() and options.FLAGS and options.KEYS
            options.check(target.precisions_for(()))


@pytest.mark.parametrize("target", ROWS, ids=lambda t: t.name)
def test_machine_facts_are_honest(target):
    reason = target.unavailable_reason()
    assert reason is None or (isinstance(reason, str) and reason)
    if reason is None:
        runtimes = target.runtimes()
        assert isinstance(runtimes, list)
        why = target.no_runtime_reason().lower()  # says what is missing, never that all is well
        assert any(word in why for word in ("no ", "not ", "only ")), why


@pytest.mark.parametrize("target", ROWS, ids=lambda t: t.name)
def test_export_inspect_load_render(target, tmp_path):
    reason = target.unavailable_reason()
    if reason:
        pytest.skip(reason)
    sources = SmallSources(tmp_path)
    folder = tmp_path / "out"
    folder.mkdir()
    precision = "fp32"
    request = ExportRequest(precision, target.artifact_path(folder, precision), _metadata(precision), False,
                            target.default_options())
    exported = target.export(sources, request)
    assert isinstance(exported, Exported) and exported.status in ("ok", "skipped")
    entry = {"target": target.name, "precision": precision, "path": None, "status": exported.status,
             **exported.fields}
    shipped = exported.shipped or exported.path
    assert shipped is not None and shipped.exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".partial-")], "a temporary file was left"
    assert set(target.leftovers(folder, precision)) >= {p for p in [shipped] if p.parent == folder
                                                        and p.name.startswith("model")}
    if exported.path is not None:
        entry["path"] = exported.path.name
        entry["graph"] = target.inspect(exported.path)
        assert entry["graph"] is None or not entry["graph"].get("problems")
        info = target.describe(exported.path)
        assert info["metadata"]["precision"] == precision and info["input_shape"][-2:] == list(SIZE)
        with target.load(exported.path) as runner:
            assert runner.execution() is None or isinstance(runner.execution(), dict)
            parity = sources.parity(runner, False)
            assert parity["cosine"] > 0.9999 and parity["max_abs"] < 1e-3, parity
            feeds = {runner.input_names()[0]: sources.x[:1]}
            async_run = runner.throughput(feeds, 0.2)
            assert async_run is None or async_run["images_per_s"] > 0
        checker = target.check_runner(exported.path)
        if checker is not None:  # the export's checks run here: the same values in less memory
            with checker:
                assert sources.parity(checker, False) == parity
                if target.name in ("onnx", "onnxruntime"):
                    assert not checker.session.get_session_options().enable_mem_pattern
    else:  # TensorRT without a GPU: the TensorRT-ready ONNX, checked, and the device command
        assert exported.status == "skipped" and "engine not built" in exported.reason
        assert entry["readiness"]["status"] == "ready" and entry["trtexec"][0] == "trtexec"
        assert entry["onnx_parity"]["cosine"] > 0.9999
    lines = target.render(entry)
    assert isinstance(lines, list) and all(isinstance(line, str) for line in lines)
    assert lines or entry.get("graph") is None
    if target.name == "onnxruntime":  # ONNX Runtime's own encoding, and says what it needs
        assert entry["graph"]["fused_attention"] > 0 and entry["graph"]["attention_chains"] == 0
        assert info["metadata"]["requires"] == entry["requires"] == FUSED_REQUIRES
        assert entry["domains"] == "ai.onnx,com.microsoft" and entry["opset"] == 23
        assert any("onnxruntime>=1.23" in line for line in lines)
    elif target.name == "onnx":  # standard ONNX: ai.onnx ops only, at opset 17, needing nothing
        assert entry["graph"]["fused_attention"] == 0 and entry["graph"]["attention_chains"] > 0
        assert entry["domains"] == info["metadata"]["domains"] == "ai.onnx"
        assert entry["opset"] == entry["graph"]["opset"] == OPSET == 17
        assert "requires" not in entry and "requires" not in info["metadata"]
        assert any("standard ai.onnx ops" in line for line in lines)
    if target.name in ("onnx", "trt", "openvino"):  # the generic encoding: what every parser reads
        assert sources.built == ["deploy_onnx"]
    target.finalize(folder, [entry])
    assert sources.built.count("deploy_onnx") <= 1


def test_a_target_option_without_its_target_is_named(tmp_path):
    from rmt_deploy.errors import UserInputError
    from rmt_deploy.jobs.plan import ExportOptions, plan
    from rmt_deploy.targets.tensorrt import TensorRTOptions

    with pytest.raises(UserInputError, match="--require-engine is a TensorRT option; add --target trt"):
        plan(ExportOptions(targets=("onnx",), target_options={"trt": TensorRTOptions(require_engine=True)}))


def test_runner_defaults_say_unsupported():
    from rmt_deploy.targets.runner import Runner

    runner = Runner()
    assert runner.execution() is None and runner.throughput({}, 0.1) is None
    with pytest.raises(RuntimeError, match="activate"):
        runner.infer({})
