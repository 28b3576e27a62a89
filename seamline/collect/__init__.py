"""The ingest pipeline: write-key auth, limits, skew correction, dedupe, durable append."""

from seamline.collect.body import read_limited
from seamline.collect.pipeline import Collector, RequestInfo

__all__ = ["Collector", "RequestInfo", "read_limited"]
