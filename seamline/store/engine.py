"""The engine interface the analytics run on: SQL in one dialect in, sorted Arrow out.

Two implementations: the DuckDB :class:`~seamline.store.database.Store` (the workspace
file) and :class:`~seamline.store.spark.SparkEngine` (a Parquet lake on a Spark
session). Both expose the same two relations to the queries of
:mod:`seamline.analytics.query`: ``events_resolved`` (every event with
``resolved_person_id``, the stitched person) and ``sources`` (``source_id``, ``name``).

An engine that can run the kernels where its rows are also offers
``run_kernel(sql, plan) -> Result`` (:class:`~seamline.analytics.kernels.KernelPlan`: the
partials per partition of persons, merged): the Spark engine does; the analyses then never
collect the rows (:meth:`seamline.analytics.runner.Analyses._run`).
"""

from __future__ import annotations

from typing import Protocol

import pyarrow as pa


class Engine(Protocol):
    """Runs the analytics' event queries. ``dialect`` is the SQLGlot dialect to render."""

    dialect: str

    def query_arrow(self, sql: str) -> pa.Table:
        """The query's rows as Arrow, in the query's ORDER BY order."""
        ...


#: Engines a lake can be read with, and the extra each needs.
ENGINES = ("spark",)
