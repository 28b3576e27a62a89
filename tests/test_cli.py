"""The CLI contract: JSON shapes, one-line errors, and working while a server owns the file."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import Server, run_cli


def test_sources_and_tokens_contract(data_dir: Path) -> None:
    source = run_cli(
        data_dir, "sources", "add", "ios-app", "--channel", "mobile", "--unit", "cards"
    )
    assert set(source) == {"name", "channel", "unit", "write_key"}
    assert source["write_key"].startswith("sl_wk_") and source["unit"] == "cards"
    listed = run_cli(data_dir, "sources", "list")
    assert [s["name"] for s in listed] == ["ios-app"]
    token = run_cli(data_dir, "tokens", "add", "analyst", "--scope", "read")
    assert set(token) == {"name", "scope", "token"} and token["token"].startswith("sl_sk_")
    tokens = run_cli(data_dir, "tokens", "list")
    assert tokens[0]["name"] == "analyst" and token["token"] not in str(tokens)
    plain = run_cli(data_dir, "sources", "add", "web", "--channel", "web", as_json=False)
    assert plain.stdout.strip().startswith("sl_wk_")


def test_stats_contract_on_empty_workspace(data_dir: Path) -> None:
    stats = run_cli(data_dir, "stats")
    assert {"events", "persons", "failed_events", "dropped_unknown_key", "sources"} <= set(stats)
    assert stats["events"] == 0


def test_errors_are_one_line_without_traceback(data_dir: Path) -> None:
    run_cli(data_dir, "sources", "add", "ios", "--channel", "mobile")
    duplicate = run_cli(data_dir, "sources", "add", "ios", "--channel", "mobile", check=False)
    assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
    bad = run_cli(data_dir, "sources", "add", "x", "--channel", "mobil", check=False)
    assert bad.returncode == 1 and "Did you mean 'mobile'" in bad.stderr
    for result in (duplicate, bad):
        assert "Traceback" not in result.stderr and result.stdout == ""


def test_cli_goes_through_running_server(server: Server) -> None:
    key = server.add_source("android-app", "mobile")
    assert key.startswith("sl_wk_")
    assert [s["name"] for s in server.cli("sources", "list")] == ["android-app"]
    assert server.cli("stats")["sources"][0]["name"] == "android-app"
    second = run_cli(server.data, "serve", "--port", "1", as_json=False, check=False)
    assert second.returncode == 1 and "already owns" in second.stderr
