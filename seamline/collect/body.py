"""Read a request body within a size limit, gunzipping as a stream.

The limit applies to the *decompressed* bytes and reading stops as soon as it is
passed, so a small gzip bomb cannot fill memory. Chunked bodies (Kotlin streams
gzip with no Content-Length) are read the same way.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

from seamline.errors import BadRequest


def _too_large(limit: int) -> BadRequest:
    return BadRequest(
        f"Request body is larger than {limit} bytes (after decompression); "
        "send smaller batches.",
        code="request_too_large",
    )


async def read_limited(chunks: AsyncIterator[bytes], *, gzip: bool, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    inflater = zlib.decompressobj(wbits=47) if gzip else None  # 47: gzip or zlib header
    async for chunk in chunks:
        if not chunk:
            continue
        if inflater is None:
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            parts.append(chunk)
            continue
        try:
            data = inflater.decompress(chunk, limit + 1 - size)
            while True:
                size += len(data)
                if size > limit:
                    raise _too_large(limit)
                parts.append(data)
                if not inflater.unconsumed_tail:
                    break
                data = inflater.decompress(inflater.unconsumed_tail, limit + 1 - size)
        except zlib.error as exc:
            raise BadRequest(
                f"Content-Encoding says gzip but the body is not valid gzip ({exc}).",
                code="invalid_gzip",
            ) from None
    if inflater is not None:
        try:
            tail = inflater.flush()
        except zlib.error as exc:
            raise BadRequest(f"The gzip body is truncated ({exc}).", code="invalid_gzip") from None
        size += len(tail)
        if size > limit:
            raise _too_large(limit)
        parts.append(tail)
        if not inflater.eof:
            raise BadRequest("The gzip body is truncated.", code="invalid_gzip")
    return b"".join(parts)
