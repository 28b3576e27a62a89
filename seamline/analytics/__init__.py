"""Analytics: definitions in, tables out, computed over sorted per-person sequences.

The engine (DuckDB here) filters and sorts the events of a query built as a SQLGlot
tree; vectorised kernels over the Arrow result do the per-person sequence work in
single passes. Spark can reuse the same trees rendered in its dialect.
"""

from seamline.analytics.definitions import (
    DateRange,
    Exclusion,
    FunnelDefinition,
    JourneyDefinition,
    OutcomeDefinition,
    PathDefinition,
    RetentionDefinition,
    Step,
)
from seamline.analytics.result import (
    FunnelResult,
    JourneyResult,
    OutcomeResult,
    PathResult,
    Result,
    RetentionResult,
)

__all__ = [
    "DateRange",
    "Exclusion",
    "FunnelDefinition",
    "FunnelResult",
    "JourneyDefinition",
    "JourneyResult",
    "OutcomeDefinition",
    "OutcomeResult",
    "PathDefinition",
    "PathResult",
    "Result",
    "RetentionDefinition",
    "RetentionResult",
    "Step",
]
