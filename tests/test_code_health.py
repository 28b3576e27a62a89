"""The linters are part of the suite: ruff and mypy stay clean (README, "Development")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


def test_ruff_is_clean() -> None:
    result = run("ruff", "check", "seamline", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_is_clean() -> None:
    result = run("mypy", "seamline")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success" in result.stdout
