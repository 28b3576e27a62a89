"""Demo workspace: a simulated mobile-first bank with planted cross-channel seams.

See :mod:`seamline.demo.generator` for what is simulated and the true sizes of the seams.
"""

from __future__ import annotations

from seamline.demo.generator import PLANTED, SOURCES, Planted, build_demo

__all__ = ["PLANTED", "SOURCES", "Planted", "build_demo"]
