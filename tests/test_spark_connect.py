"""The Spark engine through a real Spark Connect server (``sc://``), as a cluster runs it.

A Spark Connect server (PySpark's own, in ``local[2]``) listens on 127.0.0.1; the
analyses, the identity rebuild and the CLI reach it only through its gRPC URL, and give
the same answers as DuckDB. The executors' Python (the kernels' ``mapInArrow`` partials,
the phone step) runs in the server's Python workers, this interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import seamline
from seamline.identity import ID_TYPES
from seamline.settings import Settings
from seamline.store import identity as identity_tables
from tests.conftest import free_port, run_cli

pytest.importorskip("pyspark")
pytest.importorskip("grpc")
from seamline.store.spark import session
from tests.test_spark_contract import ANALYSES, END, built, duck  # noqa: F401 - fixtures

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def connect_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import pyspark

    home = Path(pyspark.__file__).parent
    port = free_port()
    log_path = tmp_path_factory.mktemp("connect") / "server.log"
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
    env.pop("SPARK_CONNECT_MODE_ENABLED", None)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(home / "bin" / "spark-submit"), "--class",
             "org.apache.spark.sql.connect.service.SparkConnectServer", "--name",
             "seamline-tests", "--master", "local[2]",
             "--conf", "spark.connect.grpc.binding.address=127.0.0.1",
             "--conf", f"spark.connect.grpc.binding.port={port}",
             "--conf", "spark.driver.host=127.0.0.1", "--conf", "spark.ui.enabled=false",
             "--conf", "spark.sql.shuffle.partitions=2"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the Connect server exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"no Connect server:\n{log_path.read_text()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        yield f"sc://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def remote(connect_url: str) -> Iterator[Any]:
    spark = session(connect_url)
    from pyspark.sql.utils import is_remote

    assert is_remote(), "the session must be a Spark Connect client"
    yield spark
    spark.stop()
    os.environ.pop("SPARK_CONNECT_MODE_ENABLED", None)  # pyspark's mark on this process


def test_every_analysis_over_spark_connect_matches_duckdb(
    built: tuple[Path, Path],  # noqa: F811 - the contract suite's fixture
    duck: seamline.Workspace,  # noqa: F811
    remote: Any,
) -> None:
    with seamline.open_lake(built[1], spark=remote, settings=Settings.load(built[0])) as lake:
        for name, analysis in ANALYSES.items():
            expected = analysis(duck).to_dict()
            assert analysis(lake).to_dict() == expected, name
            assert any(value for value in expected.values() if isinstance(value, list | dict))


def test_identity_rebuild_over_spark_connect(
    built: tuple[Path, Path],  # noqa: F811
    duck: seamline.Workspace,  # noqa: F811
    remote: Any,
    tmp_path: Path,
) -> None:
    with duck.store.cursor() as cur:
        expected = identity_tables.rebuild(
            cur, duck.rules.blocked_list(), {t: rank for rank, t in enumerate(ID_TYPES)},
        )  # fmt: skip
        duck_map = dict(cur.execute("SELECT node, comp FROM _cc").fetchall())
    with seamline.open_lake(built[1], spark=remote, settings=Settings.load(built[0])) as lake:
        got = lake.rebuild_identity(write_to=tmp_path / "person_map")
    spark_map = pq.read_table(tmp_path / "person_map").to_pydict()
    assert dict(zip(spark_map["node"], spark_map["comp"], strict=True)) == duck_map
    got.pop("person_map")
    for report in (got, expected):
        for example in report["examples"]:
            example["persons"] = sorted(example["persons"])
    assert got == expected
    assert duck_map["email:ana@example.com"] == duck_map["user_id:ana"]


def test_cli_takes_a_connect_url(built: tuple[Path, Path], duck: seamline.Workspace,  # noqa: F811
                                 connect_url: str) -> None:  # fmt: skip
    got = run_cli(built[0], "journeys", "--to", "2026-11-20", "--engine", "spark", "--lake",
                  str(built[1]), "--spark-master", connect_url)  # fmt: skip
    expected = duck.journeys(end=END).to_dict()
    assert got == json.loads(json.dumps(expected, default=str))
    assert got["edges"]


def test_a_connect_url_nobody_serves_is_a_clear_error(built: tuple[Path, Path]) -> None:  # noqa: F811
    result = run_cli(built[0], "funnel", "App Opened", "--engine", "spark", "--lake",
                     str(built[1]), "--spark-master", f"sc://127.0.0.1:{free_port()}",
                     check=False)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "Could not start a Spark session on 'sc://127.0.0.1:" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_cli(built[0], "funnel", "App Opened", "--engine", "spark", "--lake",
                     str(built[1]), "--spark-master", "sc://127.0.0.1:port",
                     check=False)  # fmt: skip
    assert result.returncode == 1 and "is not a Spark Connect URL" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_connect_client_names_the_extra(built: tuple[Path, Path],  # noqa: F811
                                                  tmp_path: Path) -> None:  # fmt: skip
    shim = tmp_path / "shim" / "grpc"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named grpc')\n")
    paths = [str(tmp_path / "shim"), str(Path(__file__).parent.parent)]
    env = {"PYTHONPATH": os.pathsep.join([*paths, os.environ.get("PYTHONPATH", "")])}
    result = run_cli(built[0], "journeys", "--engine", "spark", "--lake", str(built[1]),
                     "--spark-master", "sc://127.0.0.1:15002", check=False, env=env)  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "pip install 'seamline[spark-connect]'" in result.stderr
    assert "Traceback" not in result.stderr
