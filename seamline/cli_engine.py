"""CLI options that run an analysis on another engine: ``--engine spark --lake DIR``.

Shared by the analysis commands of :mod:`seamline.cli` (funnel, journeys, seams, paths,
retention, outcomes, identity rebuild).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from seamline.errors import BadRequest

F = TypeVar("F", bound=Callable[..., Any])


def engine_options(fn: F) -> F:
    """Add ``--engine``, ``--lake`` and ``--spark-master`` to a command."""
    fn = click.option("--spark-master", default=None,
                      help="Spark master: local[N], spark://..., yarn, k8s://..., sc://host:15002 "
                           "(default: setting spark_master, local[*]).")(fn)  # fmt: skip
    fn = click.option("--lake", default=None,
                      help="Parquet lake (`seamline lake export DIR`) to read with --engine spark; "
                           "a local path or s3a://, abfss://, gs:// URL.")(fn)  # fmt: skip
    fn = click.option("--engine", type=click.Choice(["duckdb", "spark"]), default="duckdb",
                      show_default=True,
                      help="duckdb: the workspace (--data); spark: the lake (--lake)."
                      )(fn)  # fmt: skip
    return fn


def open_engine(data: Path, engine: str, lake: str | None, spark_master: str | None,
                open_workspace: Callable[[], Any]) -> Any:  # fmt: skip
    """The workspace for ``--engine duckdb`` (``open_workspace()``), else a LakeWorkspace."""
    if engine == "duckdb":
        if lake is not None or spark_master is not None:
            raise BadRequest("--lake and --spark-master go with --engine spark.",
                             code="invalid_engine")  # fmt: skip
        return open_workspace()
    if not lake:
        raise BadRequest("--engine spark reads a Parquet lake: give --lake DIR (write one with "
                         "`seamline lake export DIR`).", code="missing_lake")  # fmt: skip
    from seamline.lake_workspace import LakeWorkspace
    from seamline.settings import Settings

    if "://" not in lake and not Path(lake).exists():
        raise BadRequest(f"--lake {lake}: no such directory.", code="missing_lake")
    settings = Settings.load(data if data.exists() else None)  # declared outcomes etc.
    return LakeWorkspace(lake, engine, master=spark_master, settings=settings)
