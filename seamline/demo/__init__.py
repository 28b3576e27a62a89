"""Demo workspace generator (placeholder until the generator module lands)."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from seamline.app import Workspace


def build_demo(workspace: Workspace, *, people: int, seed: int, console: Console) -> dict[str, Any]:
    existing = {s["name"] for s in workspace.sources()}
    if "ios-app" not in existing:
        workspace.add_source("ios-app", "mobile", "digital")
    return {"events": 0, "people": 0, "sources": workspace.sources()}
