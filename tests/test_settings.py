"""Settings are data: every one documented, env vars applied, bad values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from seamline.errors import BadRequest
from seamline.settings import SETTINGS, Settings

README = Path(__file__).parent.parent / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [s.env for s in SETTINGS if s.env not in text]
    assert not missing, f"document these in README.md: {missing}"


def test_env_overrides_and_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SEAMLINE_MAX_BATCH_EVENTS", "10")
    assert Settings.load(tmp_path).max_batch_events == 10
    monkeypatch.setenv("SEAMLINE_MAX_BATCH_EVENTS", "ten")
    with pytest.raises(BadRequest, match="max_batch_events"):
        Settings.load(tmp_path)
    monkeypatch.delenv("SEAMLINE_MAX_BATCH_EVENTS")
    monkeypatch.setenv("SEAMLINE_PARSE_NICE", "20")
    with pytest.raises(BadRequest, match="'parse_nice' must be between 0 and 19, got 20"):
        Settings.load(tmp_path)
    monkeypatch.setenv("SEAMLINE_PARSE_NICE", "0")
    assert Settings.load(tmp_path).parse_nice == 0
    monkeypatch.delenv("SEAMLINE_PARSE_NICE")
    assert Settings.load(tmp_path).parse_nice == 10
    (tmp_path / "settings.json").write_text('{"max_batch_event": 5}')
    with pytest.raises(BadRequest, match="Did you mean 'max_batch_events'"):
        Settings.load(tmp_path)
