"""The code passes ruff's rule set (pyproject.toml [tool.ruff]): no unused or undefined names."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (the dev extra installs it)")
    done = subprocess.run([ruff, "check", "--no-cache", "--output-format", "concise", "rmt_deploy", "tests", "benches",
                           "tools"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
