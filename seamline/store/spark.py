"""The Spark engine: the analytics' SQLGlot queries over a Parquet lake on a Spark session.

The lake (see :mod:`seamline.store.lake`) is registered as the two temp views the
queries expect:

* ``events_resolved``: the events of every collector, deduplicated on
  ``(source, message_id)`` (the copy received first wins; ties by collector id), with
  ``resolved_person_id`` = the collector's person map applied to the person the event
  was stitched to at ingest (so partitions exported before a later merge still resolve
  to the survivor), and ``source_id`` = the source's *name*, which every collector
  serving the source shares;
* ``sources``: ``source_id``, ``name``.

Queries are rendered with ``dialect="spark"`` and collected with
``DataFrame.toArrow()``; Spark's global ORDER BY is a range-partitioned sort, so the
rows arrive in the same order as DuckDB returns them (ties by ``message_id``), which
is what the NumPy kernels rely on.

PySpark is optional (``pip install 'seamline[spark]'``); importing this module
without it raises :class:`~seamline.errors.BadRequest` naming the extra.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pyarrow as pa

from seamline.errors import BadRequest

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from seamline.analytics.kernels import KernelPlan
    from seamline.analytics.result import Result

EXTRA_HINT = "pip install 'seamline[spark]'"
CONNECT_PORT = 15002  # Spark Connect's default


class SparkMissing(BadRequest):
    """PySpark is not installed."""

    code = "spark_missing"


def require_pyspark() -> None:
    """Raise :class:`SparkMissing` with the install command when PySpark is absent."""
    try:
        import pyspark.sql  # noqa: F401
    except ImportError:
        raise SparkMissing(
            f"The Spark engine needs PySpark, which is not installed: run `{EXTRA_HINT}` "
            "(Java 17 or newer must be on the machine too)."
        ) from None


def require_connect_client(master: str) -> None:
    """Raise :class:`SparkMissing` naming the extra when Spark Connect's client is absent."""
    try:
        import grpc  # noqa: F401
        import grpc_status  # noqa: F401
    except ImportError:
        raise SparkMissing(
            f"'{master}' is a Spark Connect server, and its client (gRPC) is not installed: "
            "run `pip install 'seamline[spark-connect]'`."
        ) from None


def require_listening(master: str, timeout: float = 10.0) -> None:
    """Refuse a Spark Connect URL that nothing answers on at once: the gRPC client would
    otherwise retry for minutes before it gave up."""
    url = urlsplit(master)
    try:
        host, port = url.hostname or "localhost", url.port or CONNECT_PORT
    except ValueError:  # a port that is not a number
        raise BadRequest(f"'{master}' is not a Spark Connect URL; use sc://host:15002.",
                         code="spark_unavailable") from None  # fmt: skip
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise BadRequest(
            f"Could not start a Spark session on '{master}': nothing answers on "
            f"{host}:{port} ({exc.strerror or exc}). Start the Spark Connect server "
            "(`$SPARK_HOME/sbin/start-connect-server.sh`) or fix --spark-master.",
            code="spark_unavailable",
        ) from None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """PySpark warns that it does not yet support pandas 3; seamline hands it no pandas."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas",
                                FutureWarning)  # fmt: skip
        yield


def is_remote(master: str) -> bool:
    return master.startswith("sc://")


def session(master: str = "local[*]", config: dict[str, str] | None = None) -> SparkSession:
    """A SparkSession for ``master``: ``local[N]``/``local[*]``, a cluster URL
    (``spark://``, ``yarn``, ``k8s://``) or a Spark Connect URL (``sc://host:15002``).

    An active session (e.g. under ``spark-submit``) is reused when ``master`` is empty.
    Every session runs in UTC, as the workspace stores timestamps.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    settings = {
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        # rows per Arrow batch handed to the kernels' partials (mapInArrow): Spark's 10,000
        # costs a Python round trip per 10,000 rows; 65,536 is one kernel chunk (~6 MB)
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        **(config or {}),
    }
    if not master:
        active = SparkSession.getActiveSession()
        if active is not None:
            return active
        master = "local[*]"
    builder = SparkSession.builder.appName("seamline")
    if is_remote(master):
        require_connect_client(master)
        require_listening(master)
        builder = builder.remote(master)
        settings = {k: v for k, v in settings.items() if k.startswith("spark.sql.")}
    else:
        # pyspark marks a process as Spark Connect (an environment variable its children
        # inherit) once it made a remote session: a classic master asked for here wins
        os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)
        builder = builder.master(master)
        if master.startswith("local"):  # Python workers (phone normalising) use this interpreter
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    for key, value in settings.items():
        builder = builder.config(key, value)
    try:
        with quiet():
            spark = builder.getOrCreate()
        if not is_remote(master):
            spark.sparkContext.setLogLevel("ERROR")
        return spark
    except Exception as exc:  # noqa: BLE001 - Java missing, bad master URL, cluster down
        raise BadRequest(
            f"Could not start a Spark session on '{master}': {str(exc).splitlines()[0]} "
            "Check --spark-master (or SEAMLINE_SPARK_MASTER) and that Java 17+ is installed.",
            code="spark_unavailable",
        ) from None


def _join(lake: str, *parts: str) -> str:
    return "/".join([lake.rstrip("/"), *parts])


def _is_local(lake: str) -> bool:
    return "://" not in lake or lake.startswith("file://")


def collectors(lake: str) -> list[str] | None:
    """The collectors that published to a local lake (from the manifests); None if unknown."""
    if not _is_local(lake):
        return None
    folder = Path(lake.removeprefix("file://")) / "_manifest"
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            found.append(str(json.loads(path.read_text())["collector"]))
        except (OSError, ValueError, KeyError):
            continue
    return found


class SparkEngine:
    """The analytics engine over a lake on a Spark session. See the module docstring.

    >>> engine = SparkEngine(session("local[2]"), "/data/lake")   # doctest: +SKIP
    >>> engine.query_arrow("SELECT count(*) AS n FROM events_resolved")  # doctest: +SKIP
    """

    dialect = "spark"
    #: rows of whole persons a partition gathers per partial (None: the default)
    segment_rows: int | None = None

    def __init__(self, spark: SparkSession, lake: str | Path):
        self.spark = spark
        self.lake = str(lake)
        if _is_local(self.lake):
            folder = Path(self.lake.removeprefix("file://"))
            if not any((folder / "events").glob("event_date=*/collector=*/*.parquet")):
                raise BadRequest(
                    f"'{lake}' holds no lake events; write one with `seamline lake export "
                    f"{lake}` (or `seamline serve --lake {lake}`).",
                    code="empty_lake",
                )
        self._register()

    # -- views --------------------------------------------------------------------------
    def _read(self, table: str) -> DataFrame:
        path = _join(self.lake, table)
        return self.spark.read.option("basePath", path).parquet(path)

    def _register(self) -> None:
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        events = self._read("events")
        known = collectors(self.lake)
        if known is None or len(known) != 1:
            # several collectors may hold the same (source, message_id): keep one copy
            first = Window.partitionBy("source", "message_id").orderBy("received_at", "collector")
            events = (events.withColumn("_copy", F.row_number().over(first))
                      .where(F.col("_copy") == 1).drop("_copy"))  # fmt: skip
        overrides = self._read("person_overrides").select(
            F.col("collector").alias("_o_collector"), "old_person_id", "new_person_id"
        )
        ingest = F.coalesce(F.col("ingest_person_id"), F.col("person_id"))
        resolved = (
            events.join(
                F.broadcast(overrides),
                (F.col("_o_collector") == F.col("collector"))
                & (F.col("old_person_id") == F.col("ingest_person_id")),
                "left",
            )
            .withColumn("resolved_person_id", F.coalesce(F.col("new_person_id"), ingest))
            .withColumn("source_id", F.col("source"))
            .drop("_o_collector", "old_person_id", "new_person_id")
        )
        resolved.createOrReplaceTempView("events_resolved")
        self.events = resolved
        (events.select(F.col("source").alias("source_id"), F.col("source").alias("name"))
         .distinct().createOrReplaceTempView("sources"))  # fmt: skip

    # -- queries ----------------------------------------------------------------------------
    def query_arrow(self, sql: str) -> pa.Table:
        """Run Spark SQL over the lake views; the rows come back in ORDER BY order."""
        with quiet():
            table = self.spark.sql(sql).toArrow()
        return _plain_timestamps(table)

    def run_kernel(self, sql: str, plan: KernelPlan) -> Result:
        """An analysis kernel over the rows of ``sql``, IN Spark: partials per partition of
        persons on the executors, merged and finished here (:mod:`.spark_kernels`). The
        partitions: ``spark.sql.shuffle.partitions``."""
        from seamline.store.spark_kernels import run_kernel

        partitions = int(self.spark.conf.get("spark.sql.shuffle.partitions") or "200")
        with quiet():
            return run_kernel(self.spark, sql, plan, partitions, self.segment_rows)

    def frame(self, table: str) -> DataFrame:
        """A lake table (``identities``, ``person_overrides``) as a DataFrame."""
        return self._read(table)

    def close(self) -> None:
        """Drop the views; the session stays up for its owner."""
        for view in ("events_resolved", "sources"):
            self.spark.catalog.dropTempView(view)


def _plain_timestamps(table: pa.Table) -> pa.Table:
    """Spark hands timestamps back as UTC-zoned Arrow; the kernels take naive UTC like DuckDB."""
    fields = []
    changed = False
    for field in table.schema:
        if pa.types.is_timestamp(field.type) and field.type.tz is not None:
            fields.append(pa.field(field.name, pa.timestamp(field.type.unit), field.nullable))
            changed = True
        else:
            fields.append(field)
    return table.cast(pa.schema(fields)) if changed else table


def default_config(partitions: int | None = None) -> dict[str, Any]:
    """Session settings for a small local run (tests, laptops): few shuffle partitions."""
    config: dict[str, Any] = {"spark.ui.enabled": "false", "spark.driver.host": "127.0.0.1"}
    if partitions:
        config["spark.sql.shuffle.partitions"] = str(partitions)
    return config
