"""Export presets: one small TOML file per deployment recipe (package data, ``rmt_deploy/assets/presets``).

A preset names targets, precisions, input size, calibration, budgets and target options with
the CLI's own flag names (``img-size``, ``max-drop``, ``[coreml] min-target``, ``[trt]
require-engine`` …); a target's table holds the keys its options type declares. Loading checks
every key and type; the values then go through exactly the validation flags go through
(``jobs.plan``). Flags given on the command line override the preset.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..bundled import DEMO_CALIB, bundled_presets
from ..errors import UserInputError
from ..sizes import parse_img_size
from ..targets import DEFAULT_TARGETS, TARGETS, resolve_target

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, from PyPI
    import tomli as tomllib

__all__ = ["Preset", "list_presets", "load_preset", "merge", "PRESET_KEYS"]

# Preset key → (ExportOptions field, accepted TOML types). Paths are resolved against the preset's folder.
PRESET_KEYS: dict[str, tuple[str, tuple[type, ...]]] = {
    "targets": ("targets", (list,)), "int8": ("int8", (bool,)), "fp16": ("fp16", (bool,)), "fp32": ("fp32", (bool,)),
    "img-size": ("img_size", (str, int)), "dynamic-batch": ("dynamic_batch", (bool,)),
    "calib": ("calib", (str,)), "calib-size": ("calib_size", (int,)), "statistic": ("statistic", (str,)),
    "max-drop": ("max_drop", (int, float)), "eval": ("eval_dir", (str,)), "parity-samples": ("parity_samples", (int,)),
    "atol": ("atol", (int, float)), "bench-iters": ("bench_iters", (int,)), "threads": ("threads", (int,)),
    "strict": ("strict", (bool,)), "task": ("task", (str,)), "min-cosine": ("min_cosine", (int, float)),
    "out-indices": ("out_indices", (str, list)), "dynamic": ("dynamic", (bool,)), "min-size": ("min_size", (int,)),
    "max-size": ("max_size", (int,)), "resize": ("resize", (str,)), "resize-scale": ("resize_scale", (str, list)),
}
_PATHS = {"calib", "eval_dir"}
# Target options a 0.2 preset wrote at the top level (only TensorRT's --require-engine), by their target.
_TOP_LEVEL_BEFORE_0_3 = {key: t for t in TARGETS.values() if t.options_type
                         for key in t.options_type.KEYS if key == "require-engine"}


@dataclass(frozen=True)
class Preset:
    name: str
    path: Path
    description: str
    options: dict  # ExportOptions field → value (img_size still as written)
    target_options: dict  # target name → {options field → value}

    @property
    def needs(self) -> list[str]:
        """What the user adds with their own checkpoint: calibration images for INT8, labels for --max-drop."""
        needs = []
        if self._calibrates() and "calib" not in self.options:
            needs.append("--calib DIR")
        if self.options.get("max_drop") is not None and "eval_dir" not in self.options:
            needs.append("--eval DIR (labelled)")
        return needs

    def _calibrates(self) -> bool:
        if not self.options.get("int8"):
            return False
        for name in self.options.get("targets") or DEFAULT_TARGETS:
            target = resolve_target(name)
            values = self.target_options.get(target.name) or {}
            options = target.options_type(**values) if target.options_type else None
            if target.needs_calibration("int8", options):
                return True
        return False


def list_presets() -> list[Preset]:
    """The shipped presets, by name."""
    folder = bundled_presets()
    return [load_preset(p) for p in sorted(folder.glob("*.toml"))] if folder.is_dir() else []


def load_preset(name_or_path: str | Path) -> Preset:
    """A shipped preset by name, or a preset file.

    Raises:
        UserInputError: unknown name, unreadable file, bad TOML, an unknown key or a wrong type
            (one line naming the file and the key).
    """
    path = _find(str(name_or_path))
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserInputError(f"preset {path}: cannot read it ({e.strerror or e})") from None
    except tomllib.TOMLDecodeError as e:
        raise UserInputError(f"preset {path}: not valid TOML ({e})") from None
    description = data.pop("description", "")
    if not isinstance(description, str):
        raise UserInputError(f"preset {path}: 'description' must be a string")
    tables = {}
    for target in TARGETS.values():
        if target.options_type is None or target.name not in data:
            continue
        table = data.pop(target.name)
        if not isinstance(table, dict):
            raise UserInputError(f"preset {path}: '{target.name}' must be a table ([{target.name}])")
        tables[target.name] = _fields(path, table, target.options_type.KEYS, f"{target.name}.")
    for key in [k for k in data if k in _TOP_LEVEL_BEFORE_0_3]:  # 0.2 presets had target options at the top level
        owner = _TOP_LEVEL_BEFORE_0_3[key]
        if owner.name not in tables:
            tables[owner.name] = _fields(path, {key: data.pop(key)}, owner.options_type.KEYS, "")
    options = _fields(path, data, PRESET_KEYS, "")
    if "targets" in options and not all(isinstance(t, str) for t in options["targets"]):
        raise UserInputError(f"preset {path}: 'targets' must be a list of target names, e.g. [\"onnx\", \"trt\"]")
    for key in _PATHS & set(options):
        if not (key == "calib" and options[key] == DEMO_CALIB):  # the bundled set, not a folder beside the preset
            options[key] = (path.parent / Path(options[key]).expanduser()).resolve()
    return Preset(path.stem, path, description, options, tables)


def _find(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise UserInputError(f"preset {path}: no such file")
        return path
    shipped = bundled_presets() / f"{text}.toml"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in bundled_presets().glob("*.toml"))) or "none shipped"
    raise UserInputError(f"unknown preset '{text}' (shipped: {names}; or pass a .toml file)")


def _fields(path: Path, data: dict, keys: dict, prefix: str) -> dict:
    fields = {}
    for key, value in data.items():
        if key not in keys:
            known = ", ".join(prefix + k for k in keys)
            raise UserInputError(f"preset {path}: unknown key '{prefix}{key}' (known: {known})")
        field, types = keys[key]
        # TOML booleans are not numbers here, although Python's bool is an int.
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            wanted = " or ".join(dict.fromkeys({list: "a list", bool: "true/false", str: "a string", int: "a number",
                                                float: "a number"}[t] for t in types))
            raise UserInputError(f"preset {path}: '{prefix}{key}' must be {wanted}, not {value!r}")
        fields[field] = value
    return fields


def merge(preset: Preset | None, flags: dict, target_flags: dict[str, dict], given: set[str]) -> tuple[dict, dict]:
    """ExportOptions keyword arguments and each target's options fields: the preset's values over
    the flags' defaults, and the flags in ``given`` (field names set on the command line) over both.
    A target's table applies only when that target is exported (not with, e.g., --target onnx)."""
    if preset is None:
        return flags, target_flags
    options = {**flags, **{k: v for k, v in preset.options.items() if k not in given}}
    if "img_size" in preset.options and "img_size" not in given:
        options["img_size"] = parse_img_size(str(preset.options["img_size"]))
    if "targets" in preset.options and "targets" not in given:
        options["targets"] = tuple(t.strip().lower() for v in preset.options["targets"] for t in v.split(",") if t.strip())
    exported = {resolve_target(t).name for t in options["targets"]}
    merged = {name: {**values, **{k: v for k, v in preset.target_options.get(name, {}).items()
                                  if k not in given and name in exported}}
              for name, values in target_flags.items()}
    return options, merged
