"""Turn one HTTP body into a list of raw events plus the batch-level fields.

Request-level problems (not JSON, wrong top-level shape, too large) raise
:class:`BadRequest` -> 400, the only status every Segment SDK discards.
Per-event problems are left to :mod:`seamline.events.normalise`, which keeps
good events and records bad ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from seamline.errors import BadRequest


class _Batch(msgspec.Struct):
    batch: list[msgspec.Raw]
    sentAt: Any = None
    writeKey: Any = None
    context: Any = None
    integrations: Any = None


class _Single(msgspec.Struct):
    sentAt: Any = None
    writeKey: Any = None


T = TypeVar("T")
_batch_decoder = msgspec.json.Decoder(_Batch)
_single_decoder = msgspec.json.Decoder(_Single)


@dataclass
class ParsedRequest:
    """Raw events of one request, with the batch-level values that apply to each."""

    events: list[bytes]
    sent_at: Any = None
    write_key: str | None = None
    context: dict[str, Any] = field(default_factory=dict)
    integrations: dict[str, Any] = field(default_factory=dict)


def _explain(exc: Exception) -> str:
    text = str(exc)
    if "truncated" in text:
        # msgspec reports a lone UTF-16 surrogate escape as truncated input.
        text += " (or it holds a lone UTF-16 surrogate such as \\ud800)"
    return text


def _too_deep() -> BadRequest:
    return BadRequest(
        "Request body is nested too deeply to parse; flatten its properties.", code="too_deep"
    )


def _decode(decoder: msgspec.json.Decoder[T], body: bytes, what: str, fix: str, code: str) -> T:
    """Decode with one error per failure kind: wrong shape, not JSON, nested too deep."""
    try:
        return decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise BadRequest(f"{what} has the wrong shape: {exc}. {fix}", code=code) from None
    except msgspec.DecodeError as exc:
        raise BadRequest(
            f"Request body is not valid JSON: {_explain(exc)}.", code="invalid_json"
        ) from None
    except RecursionError:
        raise _too_deep() from None


def parse_request(
    body: bytes, *, batch: bool, max_events: int, max_event_bytes: int
) -> ParsedRequest:
    """Parse a batch body (``{"batch": [...]}``) or a single-event body."""
    if not body.strip():
        raise BadRequest("Request body is empty; send a JSON object.", code="empty_body")
    try:
        # The batch decoder keeps events as raw bytes and does not check their strings,
        # so bytes that are not UTF-8 would only surface (as a 500) when an event is decoded.
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadRequest(
            f"Request body is not valid JSON: it is not UTF-8 ({exc.reason} at byte {exc.start}).",
            code="invalid_json",
        ) from None
    if batch:
        envelope = _decode(
            _batch_decoder, body, "Batch body", 'Send {"batch": [event, ...]}.', "invalid_batch"
        )
        if len(envelope.batch) > max_events:
            raise BadRequest(
                f"Batch has {len(envelope.batch)} events; the limit is {max_events}. "
                "Split it into smaller batches.",
                code="batch_too_large",
            )
        raws = [bytes(raw) for raw in envelope.batch]
        for index, raw in enumerate(raws):
            if len(raw) > max_event_bytes:
                raise BadRequest(
                    f"Event batch[{index}] is {len(raw)} bytes; the limit is {max_event_bytes}. "
                    "Trim its properties.",
                    code="event_too_large",
                )
        return ParsedRequest(
            events=raws,
            sent_at=envelope.sentAt,
            write_key=envelope.writeKey if isinstance(envelope.writeKey, str) else None,
            context=envelope.context if isinstance(envelope.context, dict) else {},
            integrations=envelope.integrations if isinstance(envelope.integrations, dict) else {},
        )
    single = _decode(
        _single_decoder, body, "Event body", "Send one event as a JSON object.", "invalid_event"
    )
    if len(body) > max_event_bytes:
        raise BadRequest(
            f"Event is {len(body)} bytes; the limit is {max_event_bytes}. Trim its properties.",
            code="event_too_large",
        )
    return ParsedRequest(
        events=[body],
        sent_at=None,  # a single event carries its own sentAt
        write_key=single.writeKey if isinstance(single.writeKey, str) else None,
    )


def first_event_write_key(raw: bytes) -> str | None:
    """analytics.js puts ``writeKey`` on every event; the last resort for key lookup."""
    try:
        value = msgspec.json.decode(raw, type=_Single).writeKey
    except msgspec.MsgspecError:
        return None
    return value if isinstance(value, str) else None
