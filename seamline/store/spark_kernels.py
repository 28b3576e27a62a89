"""The analyses' kernels run IN Spark: partials per partition of persons, merged on the driver.

:meth:`seamline.store.spark.SparkEngine.run_kernel` runs a
:class:`~seamline.analytics.kernels.KernelPlan` over the rows of an analysis query:

1. the query without its global ORDER BY (its sort keys kept as columns);
2. its text columns' dictionaries: one small ``DISTINCT`` aggregate, so every partition
   codes event names, lanes and breakdown values alike;
3. ``repartition(N, person)`` + ``sortWithinPartitions`` by the query's ORDER BY keys (the
   same tie order), then ``mapInArrow``: each partition's Arrow batches are gathered into
   segments of whole persons (a batch's trailing person is carried to the next segment),
   each segment's partial computed by the kernel's own ``partial``, the segments' partials
   merged by its ``merge``, and one pickled partial yielded per partition;
4. the driver collects only those partials (counts, and the values exact quantiles need),
   merges them with the same ``merge`` and runs ``finish``.

What runs on the executors (:func:`seamline.analytics.kernels.partition_partials` and the
kernels) imports only seamline's analytics, NumPy and PyArrow (not this package: ``store``
imports DuckDB).
"""

from __future__ import annotations

import functools
import pickle
from typing import TYPE_CHECKING

from seamline.analytics.kernels import (
    SEGMENT_ROWS,
    KernelPlan,
    partition_partials,
    stale_column,
    value_list,
)
from seamline.analytics.result import Result
from seamline.errors import Conflict

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

PARTIAL_SCHEMA = "partial binary"
#: the prefix of sort keys added to a query's output (``_order2``: ``e.message_id``)
HIDDEN = "_order"


def unordered(sql: str) -> tuple[str, list[tuple[str, bool, bool]]]:
    """``sql`` (Spark dialect) without its top-level ORDER BY, and the sort keys as output
    columns: (name, descending, nulls first). A key that is not an output column (e.g.
    ``e.message_id``) is added to the select list as ``_order<i>``."""
    import sqlglot
    from sqlglot import exp

    tree = sqlglot.parse_one(sql, read="spark")
    if not isinstance(tree, exp.Select):
        raise ValueError("an analysis query is one SELECT")
    order = tree.args.get("order")
    outputs = {select.alias_or_name for select in tree.expressions}
    keys: list[tuple[str, bool, bool]] = []
    for i, ordered in enumerate(order.expressions if order is not None else []):
        key = ordered.this
        if isinstance(key, exp.Column) and not key.table and key.name in outputs:
            name = key.name
        else:
            name = f"{HIDDEN}{i}"
            tree = tree.select(exp.alias_(key.copy(), name), copy=False)
        desc = bool(ordered.args.get("desc"))
        nulls_first = ordered.args.get("nulls_first")
        # Spark's defaults: ASC puts nulls first, DESC last
        keys.append((name, desc, (not desc) if nulls_first is None else bool(nulls_first)))
    tree.set("order", None)
    return tree.sql(dialect="spark"), keys


def _sort_column(name: str, desc: bool, nulls_first: bool) -> Column:
    from pyspark.sql import functions as F

    column = F.col(name)
    if desc:
        return column.desc_nulls_first() if nulls_first else column.desc_nulls_last()
    return column.asc_nulls_first() if nulls_first else column.asc_nulls_last()


def dictionaries(frame: DataFrame, columns: tuple[str, ...]) -> dict[str, list[str | None]]:
    """The distinct values of each text column (sorted; None last: the code of nulls)."""
    if not columns:
        return {}
    rows = frame.select(*columns).distinct().toArrow()
    return {name: value_list(rows.column(name).to_pylist()) for name in columns}


def run_kernel(spark: SparkSession, sql: str, plan: KernelPlan, partitions: int,
               segment_rows: int | None = None, *,
               names: dict[str, list[str | None]] | None = None) -> Result:  # fmt: skip
    """``plan`` over the rows of ``sql``: partials on the executors, merged and finished
    here. See the module docstring. ``names``: the text columns' dictionaries, if already
    read (else a first job reads them)."""
    body, keys = unordered(sql)
    frame = spark.sql(body)
    if names is None:
        names = dictionaries(frame, plan.text)
    if not keys or keys[0][0] != "person":
        raise ValueError("an analysis query is ordered by person first")
    ordered = frame.repartition(partitions, "person").sortWithinPartitions(
        *[_sort_column(*key) for key in keys])  # fmt: skip
    # the keys added for the sort (message_id) need not travel to Python: a projection
    # keeps each partition's order
    hidden = [name for name, _, _ in keys if name.startswith(HIDDEN)]
    if hidden:
        ordered = ordered.drop(*hidden)
    function = functools.partial(
        partition_partials, partial=plan.partial, merge=plan.merge, text=plan.text,
        flags=plan.flags, keep_ids=plan.keep_ids, names=names,
        segment_rows=segment_rows or SEGMENT_ROWS,
    )  # fmt: skip
    try:
        collected = ordered.mapInArrow(function, PARTIAL_SCHEMA).toArrow()
    except Exception as exc:
        stale = stale_column(str(exc))
        if stale is None:
            raise
        # the lake was published to between the dictionary job and this one (a lake
        # export, or another collector): the executors met a value the dictionary lacks
        raise Conflict(
            f"The lake changed while the analysis ran: '{stale}' has values that "
            "were not there when it started (a lake export or another collector published "
            "meanwhile). Run the analysis again.",
            code="lake_changed",
        ) from None
    parts = [pickle.loads(data) for data in collected.column("partial").to_pylist()]
    return plan.finish_partials(parts, names)
