"""A Parquet lake opened for analysis on a distributed engine (Spark).

>>> import seamline
>>> with seamline.open_lake("/data/lake", engine="spark") as lake:   # doctest: +SKIP
...     lake.funnel(["App Opened", "Order Completed"], within="1d").to_dict()

The analyses are :class:`seamline.analytics.runner.Analyses`, the same code a
:class:`seamline.app.Workspace` runs on DuckDB, so the signatures and the answers are
the same; only the engine differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from seamline.analytics.runner import Analyses
from seamline.errors import BadRequest, did_you_mean
from seamline.settings import Settings
from seamline.store.engine import ENGINES

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from seamline.store.spark import SparkEngine


class LakeWorkspace(Analyses):
    """Funnels, journeys, seams, paths, retention, outcomes and the identity rebuild over a
    lake. Prefer :func:`seamline.open_lake`; close it when done (stops a session it made).

    ``spark`` passes a session you own (e.g. under ``spark-submit``); otherwise one is made
    for ``master`` (default: the ``spark_master`` setting, ``local[*]``).
    """

    engine: SparkEngine

    def __init__(
        self,
        lake: str | Path,
        engine: str = "spark",
        *,
        master: str | None = None,
        spark: SparkSession | None = None,
        settings: Settings | None = None,
        config: dict[str, str] | None = None,
    ):
        if engine not in ENGINES:
            raise BadRequest(
                f"Unknown engine '{engine}' for a lake; use one of {', '.join(ENGINES)}."
                f"{did_you_mean(engine, ENGINES)}",
                code="unknown_engine",
            )
        from seamline.store import spark as spark_engine

        settings = settings or Settings.load()
        self._owns_session = spark is None
        if spark is None:
            spark = spark_engine.session(master or settings.spark_master, config)
        try:
            super().__init__(spark_engine.SparkEngine(spark, lake), settings)
        except BaseException:
            if self._owns_session:
                spark.stop()
            raise
        self.lake = str(lake)
        self._closed = False

    def __enter__(self) -> LakeWorkspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Drop the lake views; stop the Spark session if this workspace started it."""
        if self._closed:
            return
        self._closed = True
        self.engine.close()
        if self._owns_session:
            self.engine.spark.stop()

    def rebuild_identity(self, write_to: str | Path | None = None) -> dict[str, Any]:
        """Connected components over every identifier in the lake's events, with the same
        guardrails as :meth:`seamline.app.Workspace.rebuild_identity`, compared with the
        lake's person map. ``write_to`` also writes the ``(node, comp)`` map as Parquet."""
        from seamline.identity import ID_TYPES, IdentityRules
        from seamline.identity.identifiers import normalise
        from seamline.store import spark as spark_engine
        from seamline.store import spark_identity

        try:
            rules = IdentityRules.from_settings(
                self.settings.phone_region, self.settings.identity_caps,
                self.settings.identity_max_component, self.settings.identity_blocked_values,
            )  # fmt: skip
        except ValueError as exc:
            raise BadRequest(str(exc), code="invalid_setting") from None

        def phone(value: str) -> str | None:
            return normalise("phone", value, rules)

        priority = {id_type: rank for rank, id_type in enumerate(ID_TYPES)}
        with spark_engine.quiet():
            report, person_map = spark_identity.rebuild(
                self.engine, rules.blocked_list(), phone, priority
            )
        if write_to is not None:
            person_map.write.mode("overwrite").parquet(str(write_to))
            report["person_map"] = str(write_to)
        return report


def open_lake(lake: str | Path, engine: str = "spark", *, master: str | None = None,
              spark: SparkSession | None = None,
              settings: Settings | None = None) -> LakeWorkspace:  # fmt: skip
    """Open a Parquet lake (``seamline lake export``) for analysis on ``engine``."""
    return LakeWorkspace(lake, engine, master=master, spark=spark, settings=settings)
