"""Result objects: the JSON contract, plus pandas and Arrow views of the main table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa


@dataclass
class Result:
    """An analysis result. ``to_dict()`` is the JSON contract of the CLI and the API."""

    data: dict[str, Any]
    table_key: str  # the list in ``data`` that is the result's main table

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def to_json(self) -> str:
        return json.dumps(self.data, default=str)

    def rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.data[self.table_key]
        return rows

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pylist(self.rows())

    def to_pandas(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows())

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.rows())} {self.table_key})"


class FunnelResult(Result):
    def to_pandas(self) -> pd.DataFrame:
        """Steps as rows; with a breakdown, one row per (breakdown value, step)."""
        frame = pd.DataFrame(self.rows())
        breakdown = self.data.get("breakdown")
        if not breakdown:
            return frame
        parts = [pd.DataFrame(steps).assign(breakdown=value) for value, steps in breakdown.items()]
        return pd.concat(parts, ignore_index=True)

    def to_arrow(self) -> pa.Table:
        return pa.Table.from_pandas(self.to_pandas(), preserve_index=False)


class JourneyResult(Result):
    pass
