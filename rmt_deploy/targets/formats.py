"""Is this file what its suffix says? Checked in Python before a native runtime reads it.

Native loaders trust their input: 4 KB of random bytes named ``.pte`` made ExecuTorch's loader
abort the whole process (SIGABRT, no message). Each check here reads only headers and layout,
never runs the file, and refuses with one line naming the problem (``UserInputError``, exit 2).
What passes still goes through the runtime's own verifier (ExecuTorch's flatbuffer verification,
the protobuf parsers), which report errors instead of aborting.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

from ..errors import UserInputError

__all__ = ["check_pte", "check_mnn", "check_tflite", "check_openvino_ir", "check_mlpackage", "read_engine_sidecar",
           "read_onnx_model", "sidecar_path"]


def _refuse(path: Path, what: str, why: str) -> UserInputError:
    return UserInputError(f"{path.name}: not {what} ({why}); re-export it, or check the file was copied whole")


def _regular_file(path: Path, what: str, least: int) -> int:
    if not path.is_file():
        raise _refuse(path, what, "a folder, not a file" if path.is_dir() else "no such file")
    size = path.stat().st_size
    if size < least:
        raise _refuse(path, what, f"{size} bytes is too short")
    return size


def check_pte(path: Path) -> None:
    """An ExecuTorch program: the flatbuffer identifier ``ET`` + two digits at byte 4, and an
    extended header (``eh00``) whose program and segment sizes fit in the file."""
    what = "an ExecuTorch program"
    size = _regular_file(path, what, 16)
    with open(path, "rb") as f:
        head = f.read(40)
    ident = head[4:8]
    if not (ident[:2] == b"ET" and ident[2:].isdigit()):
        raise _refuse(path, what, f"no 'ET..' flatbuffer identifier at byte 4 (found {ident!r})")
    if head[8:12] != b"eh00":
        return  # no extended header: the program alone, verified by the runtime
    # eh00, then u32 length (24, or 32 with the segment data size), u64 program size, u64 segment base
    header_len, program_size, segment_base = struct.unpack_from("<IQQ", head, 12)
    segment_size = struct.unpack_from("<Q", head, 32)[0] if header_len >= 32 else 0
    if header_len < 24:
        raise _refuse(path, what, f"its extended header says it is {header_len} bytes long, under 24")
    if program_size > size or segment_base + segment_size > size:
        raise _refuse(path, what, f"its header names {max(program_size, segment_base + segment_size):,} bytes "
                                  f"but the file holds {size:,}")


def read_onnx_model(path: Path):
    """An ONNX model's graph and metadata (``onnx.ModelProto``, external weights not loaded), parsed
    by Python's protobuf before ONNX Runtime sees the file; it must have a graph input."""
    import onnx
    from google.protobuf.message import DecodeError

    what = "an ONNX model"
    _regular_file(path, what, 2)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except DecodeError:
        raise _refuse(path, what, "its protobuf does not parse") from None
    if not proto.graph.input:
        raise _refuse(path, what, "its graph has no input")
    return proto


def check_openvino_ir(path: Path) -> None:
    """An OpenVINO IR: well-formed XML whose root is ``<net>``, and a ``.bin`` beside it large enough
    for every constant the XML points into."""
    import xml.etree.ElementTree as ET

    what = "an OpenVINO IR"
    _regular_file(path, what, 8)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise _refuse(path, what, f"its XML does not parse: {e}") from None
    if root.tag != "net":
        raise _refuse(path, what, f"the XML's root is <{root.tag}>, not <net>")
    needed = 0
    for data in root.iterfind("./layers/layer/data"):
        if "offset" in data.attrib and "size" in data.attrib:
            try:
                needed = max(needed, int(data.attrib["offset"]) + int(data.attrib["size"]))
            except ValueError:
                raise _refuse(path, what, "a constant's offset or size is not a number") from None
    weights = path.with_suffix(".bin")
    if needed and not weights.is_file():
        raise _refuse(path, what, f"its weights file {weights.name} is missing")
    if needed and weights.stat().st_size < needed:
        raise _refuse(path, what, f"{weights.name} holds {weights.stat().st_size:,} bytes, the XML needs {needed:,}")


def check_mlpackage(path: Path) -> None:
    """A Core ML package: a folder with a Manifest.json naming a root model file that exists."""
    what = "a Core ML package"
    if not path.is_dir():
        raise _refuse(path, what, "a .mlpackage is a folder holding Manifest.json" if path.exists() else "no such folder")
    try:
        manifest = json.loads((path / "Manifest.json").read_text())
        root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]["path"]
    except FileNotFoundError:
        raise _refuse(path, what, "Manifest.json is missing") from None
    except (OSError, ValueError, KeyError, TypeError):
        raise _refuse(path, what, "Manifest.json is not a package manifest") from None
    model = path / "Data" / str(root)
    if not model.is_file() or model.stat().st_size == 0:
        raise _refuse(path, what, f"its model file Data/{root} is missing or empty")


def sidecar_path(engine: Path) -> Path:
    """Where an engine's facts are kept: TensorRT version, GPU, input, the source ONNX's metadata."""
    return Path(engine).with_suffix(".json")


def read_engine_sidecar(path: Path) -> dict:
    """A TensorRT engine file that is not empty, and its sidecar's facts (the runtime checks the
    engine itself, on the device)."""
    _regular_file(path, "a TensorRT engine", 16)
    side = sidecar_path(path)
    if not side.exists():
        raise UserInputError(f"{path}: no {side.name} next to it; build engines with `rmt-deploy build-engine`")
    try:
        facts = json.loads(side.read_text())
    except (OSError, ValueError):
        raise _refuse(side, "an engine's sidecar", "not readable JSON") from None
    if not isinstance(facts, dict) or "input" not in facts or "input_shape" not in facts:
        raise _refuse(side, "an engine's sidecar", "no input name and shape in it")
    return facts


def check_mnn(path: Path) -> None:
    """An MNN model: a flatbuffer whose root table and its vtable lie inside the file (MNN's loader
    reads offsets without bounds checks)."""
    what = "an MNN model"
    size = _regular_file(path, what, 16)
    with open(path, "rb") as f:
        head = f.read(8)
    (root,) = struct.unpack_from("<I", head, 0)
    if root < 4 or root % 4 or root + 4 > size:
        raise _refuse(path, what, f"its flatbuffer root offset {root:,} is outside the file ({size:,} bytes)")
    with open(path, "rb") as f:
        f.seek(root)
        (back,) = struct.unpack("<i", f.read(4))
    if not 0 <= root - back < size:
        raise _refuse(path, what, "its root table's vtable is outside the file")


def check_tflite(path: Path) -> None:
    """A LiteRT model: the flatbuffer identifier ``TFL3`` at byte 4 and a root table inside the file
    (the interpreter verifies the rest when it loads it)."""
    what = "a LiteRT (.tflite) model"
    size = _regular_file(path, what, 16)
    with open(path, "rb") as f:
        head = f.read(8)
    if head[4:8] != b"TFL3":
        raise _refuse(path, what, f"no 'TFL3' flatbuffer identifier at byte 4 (found {head[4:8]!r})")
    (root,) = struct.unpack_from("<I", head, 0)
    if root < 8 or root + 4 > size:
        raise _refuse(path, what, f"its flatbuffer root offset {root:,} is outside the file ({size:,} bytes)")
