"""The code blocks of the documentation pages, and whether a test runs them.

A fenced ``bash`` or ``python`` block is run by ``tests/test_docs.py`` on the bundled demo, in a
folder of its own per page (blocks in page order, so a page reads like a session). A block that
cannot run here says why in a comment on the line above it:

    <!-- docs-test: skip: needs an NVIDIA GPU with TensorRT -->

README.md's two set-up blocks (``<!-- ci:... -->``) are run by ``.ci/run`` instead.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNNABLE = ("bash", "python")
SKIP = re.compile(r"^<!-- docs-test: skip: (?P<reason>.+?) -->$")
CI_MARKER = re.compile(r"^<!-- ci:[\w-]+ -->$")
MARKER = re.compile(r"^<!-- (docs-test|ci)\b")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})(?P<info>.*)$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    skip: str | None  # why it is not run here; None: run
    marker: str | None  # the comment above the fence, if any

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def blocks(page: Path) -> list[Block]:
    """Every fenced block of ``page`` with its language, dedented code and skip reason."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = opening["indent"], opening["fence"]
        language = (opening["info"].strip().split() or [""])[0]
        body, j = [], i + 1
        while j < len(lines) and not re.match(rf"^{re.escape(indent)}{fence[0]}{{{len(fence)},}}\s*$", lines[j]):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        above = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        marker = above if MARKER.match(above) else None
        skip = None
        if marker and (m := SKIP.match(marker)):
            skip = m["reason"]
        elif marker and CI_MARKER.match(marker):
            skip = "run by .ci/run"
        found.append(Block(str(page.relative_to(REPO)), i + 1, language, "\n".join(body) + "\n", skip, marker))
        i = j + 1
    return found


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.language in RUNNABLE and b.skip is None]
