"""Demo workspace: a simulated mobile-first bank with planted cross-channel seams.

See :mod:`seamline.demo.generator` for what is simulated and the true sizes of the seams.
"""

from __future__ import annotations

from seamline.demo.generator import (
    DEMO_SETTINGS,
    PLANTED,
    SOURCES,
    Planted,
    build_demo,
    write_demo_settings,
)

__all__ = ["DEMO_SETTINGS", "PLANTED", "SOURCES", "Planted", "build_demo", "write_demo_settings"]
