"""Storage: the DuckDB workspace file, its schema and the single write path."""

from seamline.store.database import SCOPES, Source, Store, Token
from seamline.store.writer import AppendResult, Writer

__all__ = ["SCOPES", "AppendResult", "Source", "Store", "Token", "Writer"]
