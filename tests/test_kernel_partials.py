"""Kernels as partial -> merge -> finish: persons split into partitions give the same answers.

No Spark here: an engine over the workspace's own DuckDB rows that runs kernels the way the
Spark engine does (:mod:`seamline.store.spark_kernels`): persons hashed into partitions,
each partition's rows fed in small Arrow batches to the executor function
(:func:`seamline.analytics.kernels.partition_partials`, segments cut between persons),
partials pickled, merged and finished. Every answer must equal the workspace's own
(snapshot or SQL path), medians and 90th percentiles and seam examples included.
"""

from __future__ import annotations

import pickle
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from rich.console import Console

import seamline
from seamline.analytics.kernels import KernelPlan, partition_partials, value_list
from seamline.analytics.result import Result
from seamline.analytics.runner import Analyses
from seamline.demo import build_demo, write_demo_settings

END = datetime(2026, 11, 20)


class PartitionedRows:
    """The workspace's rows, with kernels run per partition of persons and merged."""

    dialect = "duckdb"

    def __init__(self, inner: Any, partitions: int, batch_rows: int, segment_rows: int):
        self.inner, self.partitions = inner, partitions
        self.batch_rows, self.segment_rows = batch_rows, segment_rows
        self.partials_seen: list[int] = []

    def query_arrow(self, sql: str) -> pa.Table:
        return self.inner.query_arrow(sql)

    def run_kernel(self, sql: str, plan: KernelPlan) -> Result:
        table = self.inner.query_arrow(sql)  # sorted by person, time, ties
        names = {column: value_list(table.column(column).to_pylist()) for column in plan.text}
        owner = np.array([zlib.crc32(p.encode()) % self.partitions
                          for p in table.column("person").to_pylist()])  # fmt: skip
        parts = []
        for index in range(self.partitions):
            rows = table.filter(pa.array(owner == index))  # keeps the sort order
            batches = rows.to_batches(max_chunksize=self.batch_rows)
            for out in partition_partials(
                iter(batches), partial=plan.partial, merge=plan.merge, text=plan.text,
                flags=plan.flags, keep_ids=plan.keep_ids, names=names,
                segment_rows=self.segment_rows,
            ):  # fmt: skip
                parts.append(pickle.loads(out.column("partial")[0].as_py()))
        self.partials_seen.append(len(parts))
        return plan.finish_partials(parts, names)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[seamline.Workspace]:
    data: Path = tmp_path_factory.mktemp("partials") / "ws"
    write_demo_settings(data)
    with seamline.open(data) as workspace:
        build_demo(workspace, people=80, seed=11, console=Console(quiet=True), now=END)
        yield workspace


ANALYSES = {
    "funnel_breakdown_exclusion": lambda w: w.funnel(
        ["App Opened", "Login Succeeded", "Payment Started", "Payment Succeeded"], "7d",
        "app_version", exclude=["Login Failed"], end=END),
    "funnel_strict_by_step": lambda w: w.funnel(
        ["App Opened", "Login Succeeded"], "1d", "channel", by_step=2, strict=True, end=END),
    "journeys": lambda w: w.journeys(end=END),
    "journeys_from_event": lambda w: w.journeys("Login Succeeded", end=END),
    "journeys_by_unit": lambda w: w.journeys(lane="unit", min_people=2, end=END),
    "paths": lambda w: w.paths("App Opened", steps=3, end=END),
    "paths_before_collapsed": lambda w: w.paths("Call Started", direction="before",
                                                collapse_repeats=True, end=END),
    "retention": lambda w: w.retention(period="day", periods=5, end=END),
    "outcomes": lambda w: w.outcomes(end=END),
    "seams": lambda w: w.seams(min_people=3, include_all=True, end=END),
    "seams_with_funnel": lambda w: w.seams(min_people=3, funnel=["App Opened", "Login Succeeded"],
                                           end=END),
    "nothing_in_range": lambda w: w.journeys(start=datetime(2001, 1, 1),
                                             end=datetime(2001, 1, 2)),
}  # fmt: skip


@pytest.mark.parametrize(("partitions", "batch_rows", "segment_rows"),
                         [(1, 1_000_000, 1 << 19), (5, 7, 20), (16, 1, 3)])  # fmt: skip
def test_partitioned_partials_merge_to_the_same_answers(ws: seamline.Workspace, partitions: int,
                                                        batch_rows: int,
                                                        segment_rows: int) -> None:  # fmt: skip
    engine = PartitionedRows(ws.analyses.engine, partitions, batch_rows, segment_rows)
    split = Analyses(engine, ws.settings)  # type: ignore[arg-type]
    for name, run in ANALYSES.items():
        expected, got = run(ws).to_dict(), run(split).to_dict()
        assert got == expected, name
    # every analysis went through the partials, and (with data) several partitions gave one
    # seams_with_funnel runs three funnels (by app_version, os_name, source)
    assert len(engine.partials_seen) == len(ANALYSES) + 3
    assert max(engine.partials_seen) == partitions
    assert min(engine.partials_seen) == 0  # the empty range: no partition had rows


def test_answers_are_not_trivial(ws: seamline.Workspace) -> None:
    journeys = ANALYSES["journeys"](ws).to_dict()
    assert journeys["edges"] and any(e["median_seconds"] > 0 for e in journeys["edges"])
    funnel = ANALYSES["funnel_breakdown_exclusion"](ws).to_dict()
    assert funnel["steps"][1]["median_seconds"] is not None and len(funnel["breakdown"]) > 1
    seams = ANALYSES["seams"](ws).to_dict()["seams"]
    assert any(s["people_examples"] for s in seams)
    periods = ANALYSES["outcomes"](ws).to_dict()["periods"]
    assert any(p["median_seconds_to_outcome"] for p in periods)
