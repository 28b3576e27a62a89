"""Seamline: a customer-journey platform for mobile-first businesses.

>>> import seamline
>>> with seamline.open("seamline-data") as ws:   # doctest: +SKIP
...     ws.stats()["events"]
"""

from __future__ import annotations

import os
from pathlib import Path

from seamline.app import DEFAULT_DATA_DIR, Workspace
from seamline.errors import SeamlineError
from seamline.lake_workspace import LakeWorkspace, open_lake

__version__ = "0.1.0"
__all__ = ["LakeWorkspace", "SeamlineError", "Workspace", "__version__", "open", "open_lake"]


def open(data_dir: str | os.PathLike[str] | None = None) -> Workspace:
    """Open the workspace in ``data_dir`` (default ``$SEAMLINE_DATA`` or ``./seamline-data``)."""
    path = Path(data_dir or os.environ.get("SEAMLINE_DATA") or DEFAULT_DATA_DIR)
    return Workspace(path)
