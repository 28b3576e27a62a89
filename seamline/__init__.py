"""Seamline: a customer-journey platform for mobile-first businesses.

>>> import seamline
>>> with seamline.open("seamline-data") as ws:   # doctest: +SKIP
...     ws.stats()["events"]
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seamline.errors import SeamlineError

if TYPE_CHECKING:
    from seamline.app import Workspace
    from seamline.lake_workspace import LakeWorkspace, open_lake

__version__ = "0.1.0"
__all__ = ["LakeWorkspace", "SeamlineError", "Workspace", "__version__", "open", "open_lake"]

# imported on first use: a parse worker process (seamline.collect.parsing) imports only
# the event model, not the store, the web app and their libraries
_LAZY = {"Workspace": "seamline.app", "LakeWorkspace": "seamline.lake_workspace",
         "open_lake": "seamline.lake_workspace"}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seamline' has no attribute '{name}'")


def open(data_dir: str | os.PathLike[str] | None = None) -> Workspace:
    """Open the workspace in ``data_dir`` (default ``$SEAMLINE_DATA`` or ``./seamline-data``)."""
    from seamline.app import DEFAULT_DATA_DIR, Workspace

    path = Path(data_dir or os.environ.get("SEAMLINE_DATA") or DEFAULT_DATA_DIR)
    return Workspace(path)
