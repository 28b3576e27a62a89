"""The contract suite: the same definitions on DuckDB (the workspace) and on Spark
``local[2]`` (the workspace exported to a Parquet lake) give identical answers.

One SparkSession for the module; a small demo workspace plus hand-written identity
cases (a shared device, an alias) built once. ``SEAMLINE_TEST_SPARK`` runs the suite on
another master instead, e.g. a Spark Connect server (``sc://127.0.0.1:15002``);
``test_spark_connect.py`` starts one and runs the analyses, the rebuild and the CLI on it.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from rich.console import Console

import seamline
from seamline.demo import build_demo, write_demo_settings
from seamline.identity import ID_TYPES
from seamline.settings import Settings
from seamline.store import identity as identity_tables
from tests.conftest import run_cli

pytest.importorskip("pyspark")
from seamline.store.spark import default_config, quiet, session

END = datetime(2026, 11, 20)


def identity_cases() -> list[dict[str, Any]]:
    """A device shared by two user ids (a hub), an alias, email and phone links."""
    at = "2026-11-10T10:00:0{}Z"
    return [
        {"type": "track", "event": "App Opened", "userId": "hub-a", "messageId": "h1",
         "context": {"device": {"id": "kiosk-1"}}, "timestamp": at.format(1)},
        {"type": "track", "event": "App Opened", "userId": "hub-b", "messageId": "h2",
         "context": {"device": {"id": "kiosk-1"}}, "timestamp": at.format(2)},
        {"type": "identify", "anonymousId": "anon-x", "messageId": "h3",
         "traits": {"email": " Ana@Example.com", "phone": "(415) 555-2671"},
         "timestamp": at.format(3)},
        {"type": "identify", "userId": "ana", "messageId": "h4",
         "traits": {"email": "ana@example.com"}, "timestamp": at.format(4)},
        {"type": "alias", "userId": "ana", "previousId": "anon-old", "messageId": "h5",
         "timestamp": at.format(5)},
        {"type": "track", "event": "Order Completed", "anonymousId": "anon-old",
         "messageId": "h6", "timestamp": at.format(6)},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("contract")
    data, lake = root / "ws", root / "lake"
    write_demo_settings(data)
    with seamline.open(data) as ws:
        build_demo(ws, people=80, seed=11, console=Console(quiet=True), now=END)
        ws.import_events("android-app", identity_cases())
        ws.lake_export(lake)
    return data, lake


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    spark = session(os.environ.get("SEAMLINE_TEST_SPARK", "local[2]"), default_config(partitions=2))
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def duck(built: tuple[Path, Path]) -> Iterator[seamline.Workspace]:
    with seamline.open(built[0]) as ws:
        yield ws


@pytest.fixture(scope="module")
def lake(built: tuple[Path, Path], spark: Any) -> Iterator[seamline.LakeWorkspace]:
    with seamline.open_lake(built[1], spark=spark, settings=Settings.load(built[0])) as lw:
        yield lw


ANALYSES = {
    "funnel_breakdown_exclusion": lambda w: w.funnel(
        ["App Opened", "Login Succeeded", "Payment Started", "Payment Succeeded"], "7d",
        "app_version", exclude=["Login Failed"], end=END),
    "funnel_by_source_filtered": lambda w: w.funnel(
        ["Home[channel=mobile]", "Payments"], "1d", "source", end=END),
    "funnel_json_property": lambda w: w.funnel(
        ["Login Succeeded[properties.method=password]", "Payment Succeeded"], "2d",
        "context.os.name", end=END),
    "journeys": lambda w: w.journeys(end=END),
    "journeys_by_unit": lambda w: w.journeys(lane="unit", min_people=2, end=END),
    "paths": lambda w: w.paths("App Opened", steps=3, end=END),
    "paths_before": lambda w: w.paths("Call Started", direction="before", end=END),
    "retention": lambda w: w.retention(period="day", periods=5, end=END),
    "outcomes": lambda w: w.outcomes(end=END),
    "seams": lambda w: w.seams(min_people=3, include_all=True, end=END),
}  # fmt: skip


@pytest.mark.parametrize("analysis", list(ANALYSES))
def test_same_answers_on_duckdb_and_spark(analysis: str, duck: seamline.Workspace,
                                          lake: seamline.LakeWorkspace) -> None:  # fmt: skip
    expected = ANALYSES[analysis](duck).to_dict()
    got = ANALYSES[analysis](lake).to_dict()
    assert got == expected
    # and not trivially: every analysis found something in the workspace
    assert any(value for value in expected.values() if isinstance(value, list | dict))


def test_partials_over_many_partitions_and_batches(
    duck: seamline.Workspace, lake: seamline.LakeWorkspace
) -> None:
    """The kernels' partials computed per partition IN Spark (persons spread over six
    partitions, each partition's rows in Arrow batches of 7 rows, cut into segments of
    about 25 rows without splitting a person) merge into DuckDB's answers exactly,
    medians and 90th percentiles included."""
    from pyspark.sql import functions as F

    from seamline.analytics import DateRange
    from seamline.analytics.query import sequence_query
    from seamline.store.spark_kernels import unordered

    conf = lake.engine.spark.conf
    saved = {key: conf.get(key) for key in ("spark.sql.shuffle.partitions",
                                            "spark.sql.execution.arrow.maxRecordsPerBatch")}
    conf.set("spark.sql.shuffle.partitions", "6")
    conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "7")
    lake.engine.segment_rows = 25
    try:
        query = sequence_query(DateRange(None, END), False, "channel", dialect="spark")
        body, keys = unordered(query)
        assert [k[0] for k in keys] == ["person", "ts", "_order2"]  # message_id, kept for ties
        spread = (lake.engine.spark.sql(body).repartition(6, "person")
                  .groupBy(F.spark_partition_id().alias("part"))
                  .agg(F.countDistinct("person").alias("people")).collect())  # fmt: skip
        assert len(spread) >= 4 and all(row["people"] > 1 for row in spread)
        got = {}
        for name in ("funnel_breakdown_exclusion", "journeys", "paths", "retention", "outcomes",
                     "seams"):  # one of each kernel (the others: see test_kernel_partials.py)
            got[name] = ANALYSES[name](lake).to_dict()
            assert got[name] == ANALYSES[name](duck).to_dict(), name
        assert any(e["median_seconds"] > 0 for e in got["journeys"]["edges"])
        assert got["funnel_breakdown_exclusion"]["steps"][1]["p90_seconds"] is not None
    finally:
        lake.engine.segment_rows = None
        for key, value in saved.items():
            conf.set(key, value)


def test_a_lake_published_to_mid_analysis_is_a_clean_conflict(
    lake: seamline.LakeWorkspace,
) -> None:
    """A Spark analysis reads the text columns' dictionaries in a first job. If the lake is
    published to before the main job (an export, another collector), the executors meet a
    value the dictionary lacks: a 409 naming the column and saying to run it again, never
    an executor's traceback. Here the dictionary is the one read before the last publish
    brought 'Payment Succeeded' in."""
    from seamline.analytics import DateRange
    from seamline.analytics.definitions import JourneyDefinition
    from seamline.analytics.query import sequence_query
    from seamline.analytics.runner import journey_plan
    from seamline.errors import Conflict
    from seamline.store.spark_kernels import dictionaries, run_kernel, unordered

    definition = JourneyDefinition(None, 1, None, DateRange(None, END), by="channel")
    plan = journey_plan(definition)
    sql = sequence_query(definition.dates, definition.include_identify, "channel",
                         dialect="spark")  # fmt: skip
    spark = lake.engine.spark
    with quiet():  # PySpark's warning about pandas 3 (seamline hands it no pandas)
        names = dictionaries(spark.sql(unordered(sql)[0]), plan.text)
        assert "Payment Succeeded" in names["event"]
        older = {**names, "event": [v for v in names["event"] if v != "Payment Succeeded"]}
        with pytest.raises(Conflict, match="lake changed while the analysis ran: 'event'") as e:
            run_kernel(spark, sql, plan, 2, names=older)
        assert e.value.code == "lake_changed" and "Run the analysis again" in str(e.value)
        # the dictionary read now gives the workspace's answer
        assert (run_kernel(spark, sql, plan, 2, names=names).to_dict()
                == lake.journeys(end=END).to_dict())  # fmt: skip


def test_identity_rebuild_gives_the_same_person_map(duck: seamline.Workspace,
                                                    lake: seamline.LakeWorkspace,
                                                    tmp_path: Path) -> None:  # fmt: skip
    rules = duck.rules
    with duck.store.cursor() as cur:
        expected = identity_tables.rebuild(
            cur, rules.blocked_list(), {t: rank for rank, t in enumerate(ID_TYPES)},
        )  # fmt: skip
        duck_map = dict(cur.execute("SELECT node, comp FROM _cc").fetchall())
    got = lake.rebuild_identity(write_to=tmp_path / "person_map")
    spark_map = pq.read_table(tmp_path / "person_map").to_pydict()
    assert dict(zip(spark_map["node"], spark_map["comp"], strict=True)) == duck_map
    assert got.pop("person_map") == str(tmp_path / "person_map")
    for report in (got, expected):
        for example in report["examples"]:
            example["persons"] = sorted(example["persons"])
    assert got == expected
    assert got["hubs"] == 1  # kiosk-1 links nobody
    assert duck_map["email:ana@example.com"] == duck_map["user_id:ana"]
    assert duck_map["anonymous_id:anon-old"] == duck_map["user_id:ana"]
    assert duck_map["user_id:hub-a"] != duck_map["user_id:hub-b"]


def chain_and_hub_cases() -> list[dict[str, Any]]:
    """A line of 200 identifiers (100 anonymous ids and 100 devices, each event linking one
    device to two neighbours), named so that neither the chain's order nor its reverse is
    the string order (min-label propagation with one pointer jump needs 72 rounds on it);
    a device shared by three user ids and an email shared by two (hubs), and a visitor
    seen only with them."""
    order = list(range(100))
    random.Random(7).shuffle(order)
    events: list[dict[str, Any]] = []

    def event(i: int, **ids: Any) -> None:
        events.append({"type": "track", "event": "Opened", "messageId": f"c{i}",
                       "timestamp": f"2026-11-10T10:{i // 60 % 60:02d}:{i % 60:02d}Z", **ids})

    for i, k in enumerate(order):  # anon k -- dev k -- anon (next k)
        event(2 * i, anonymousId=f"chain-a{k:03d}", context={"device": {"id": f"chain-d{k:03d}"}})
        if i + 1 < len(order):
            event(2 * i + 1, anonymousId=f"chain-a{order[i + 1]:03d}",
                  context={"device": {"id": f"chain-d{k:03d}"}})  # fmt: skip
    for n, user in enumerate(("hub-u1", "hub-u2", "hub-u3")):
        event(300 + n, userId=user, context={"device": {"id": "shared-tablet"}})
    for n, user in enumerate(("hub-u1", "hub-u2")):
        event(310 + n, userId=user, context={"traits": {"email": "family@example.com"}})
    # an anonymous visitor seen only on the shared tablet and with the family email
    event(320, anonymousId="hub-visitor", context={"device": {"id": "shared-tablet"},
                                                   "traits": {"email": "family@example.com"}})
    return events


def test_identity_rebuild_long_chain_and_hubs(tmp_path: Path, spark: Any) -> None:
    with seamline.open(tmp_path / "ws") as ws:
        ws.add_source("app", "mobile")
        ws.import_events("app", chain_and_hub_cases())
        ws.lake_export(tmp_path / "lake")
        with ws.store.cursor() as cur:
            expected = identity_tables.rebuild(
                cur, ws.rules.blocked_list(), {t: rank for rank, t in enumerate(ID_TYPES)})
            duck_map = dict(cur.execute("SELECT node, comp FROM _cc").fetchall())
        settings = ws.settings
    with seamline.open_lake(tmp_path / "lake", spark=spark, settings=settings) as lw:
        got = lw.rebuild_identity(write_to=tmp_path / "person_map")
    spark_map = pq.read_table(tmp_path / "person_map").to_pydict()
    assert dict(zip(spark_map["node"], spark_map["comp"], strict=True)) == duck_map
    got.pop("person_map")
    for example in expected["examples"]:  # DuckDB's list() comes in any order
        example["persons"] = sorted(example["persons"])
    assert got == expected
    chain = {comp for node, comp in duck_map.items() if node.split(":")[1].startswith("chain-")}
    assert chain == {"anonymous_id:chain-a000"}  # one component, its smallest node
    assert sum(1 for node in duck_map if ":chain-" in node) == 200
    assert got["hubs"] == 2  # the tablet and the family email link nobody
    assert "device_id:shared-tablet" not in duck_map
    assert "email:family@example.com" not in duck_map
    assert len({duck_map[f"user_id:hub-u{n}"] for n in (1, 2, 3)}) == 3
    assert duck_map["anonymous_id:hub-visitor"] == "anonymous_id:hub-visitor"


def test_two_collectors_publish_one_lake_without_duplicates(tmp_path: Path, spark: Any) -> None:
    lake_dir = tmp_path / "lake"
    first = [{"type": "track", "event": "Opened", "userId": f"u{i % 5}", "messageId": f"m{i}",
              "timestamp": f"2026-11-0{1 + i % 3}T10:00:{i:02d}Z"} for i in range(30)]  # fmt: skip
    # the second collector got 10 of the same messages again (a retried batch) and 5 new ones
    second = first[20:] + [dict(e, messageId=f"n{i}") for i, e in enumerate(first[:5])]
    for name, batch in (("a", first), ("b", second)):
        with seamline.open(tmp_path / name) as ws:
            ws.add_source("app", "mobile")
            ws.import_events("app", batch)
            ws.lake_export(lake_dir)
    with seamline.open_lake(lake_dir, spark=spark) as lw:
        rows = lw.engine.query_arrow(
            "SELECT count(*) AS n, count(DISTINCT source, message_id) AS d, "
            "count(DISTINCT collector) AS c FROM events_resolved").to_pylist()  # fmt: skip
        assert rows == [{"n": 35, "d": 35, "c": 2}]
        # person ids derive from the first identifier, so both collectors name u0..u4 alike
        edges = lw.journeys(end=END).to_dict()["edges"]
    assert [(e["from"], e["to"], e["people"], e["transitions"]) for e in edges] == [
        ("Opened", "Opened", 5, 30)]  # fmt: skip


def test_missing_pyspark_names_the_extra(built: tuple[Path, Path], tmp_path: Path) -> None:
    shim = tmp_path / "shim" / "pyspark"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named pyspark')\n")
    paths = [str(tmp_path / "shim"), str(Path(__file__).parent.parent)]
    env = {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    result = run_cli(built[0], "funnel", "App Opened", "--engine", "spark", "--lake",
                     str(built[1]), check=False, env=env)  # fmt: skip
    assert result.returncode == 1
    assert "pip install 'seamline[spark]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_engine_options_are_checked(built: tuple[Path, Path]) -> None:
    result = run_cli(built[0], "journeys", "--engine", "spark", check=False)
    assert result.returncode == 1 and "--lake DIR" in result.stderr
    result = run_cli(built[0], "journeys", "--lake", str(built[1]), check=False)
    assert result.returncode == 1 and "--engine spark" in result.stderr
    result = run_cli(built[0], "journeys", "--engine", "spark", "--lake",
                     str(built[0] / "nowhere"), check=False)  # fmt: skip
    assert result.returncode == 1 and "no such directory" in result.stderr


def test_cli_runs_on_spark_like_the_python_api(built: tuple[Path, Path],
                                              duck: seamline.Workspace) -> None:  # fmt: skip
    got = run_cli(built[0], "funnel", "App Opened", "Payment Started", "--within", "1d",
                  "--by", "channel", "--to", "2026-11-20", "--engine", "spark", "--lake",
                  str(built[1]), "--spark-master", "local[1]")  # fmt: skip
    expected = duck.funnel(["App Opened", "Payment Started"], "1d", "channel", end=END)
    assert got == json.loads(json.dumps(expected.to_dict(), default=str))
    assert got["steps"][0]["people"] > 0


def test_executor_code_imports_only_analytics_numpy_and_pyarrow() -> None:
    """What ``mapInArrow`` ships runs on the executors: seamline's kernels, NumPy, PyArrow;
    not DuckDB (the store), not PySpark's driver side."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import seamline.analytics.kernels, seamline.analytics.funnel, seamline.analytics.seams\n"
        "import seamline.analytics.journeys, seamline.analytics.paths\n"
        "import seamline.analytics.retention, seamline.analytics.outcomes\n"
        "tops = {m.split('.')[0] for m in sys.modules} - set(sys.stdlib_module_names)\n"
        "print(sorted(t for t in tops if not t.startswith('_')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent)  # fmt: skip
    imported = set(json.loads(out.stdout.replace("'", '"')))
    assert {"seamline", "numpy", "pyarrow"} <= imported
    assert imported - {"seamline", "numpy", "pyarrow", "cython_runtime"} == set()
