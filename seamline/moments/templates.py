"""Message bodies from the triggering event and the person's traits, in a Jinja2 sandbox.

Rules are written by operators, but the values rendered into them come from events
that anyone holding a public write key can send; the sandbox keeps both from reaching
Python internals. A template sees:

- ``event``: the trigger event (``event.event``, ``event.properties``, ``event.channel``,
  ``event.timestamp``, ``event.context``, ``event.user_id``, ...);
- ``person``: ``person.id`` and ``person.traits`` (identify traits merged, latest wins);
- ``moment``: ``moment.name``, ``moment.instance_id``, ``moment.delivery_id``,
  ``moment.fired_at``.

``{{ event.properties | tojson }}`` writes JSON safely.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import TemplateError, Undefined
from jinja2.sandbox import SandboxedEnvironment

MAX_OUTPUT = 64 * 1024


class TemplateProblem(ValueError):
    pass


class _Quiet(Undefined):
    """Missing traits render as nothing, as in most messaging tools."""

    __slots__ = ()


@lru_cache(maxsize=1)
def _environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(autoescape=False, undefined=_Quiet, keep_trailing_newline=True)


def check(text: str) -> None:
    """Raise :class:`TemplateProblem` when ``text`` does not compile."""
    try:
        _environment().from_string(text)
    except TemplateError as exc:
        raise TemplateProblem(f"template error: {exc}") from None


@lru_cache(maxsize=2048)
def _compiled(text: str) -> Any:
    return _environment().from_string(text)


def render(text: str, context: dict[str, Any]) -> str:
    """Render with the sandbox; :class:`TemplateProblem` on errors or oversized output."""
    try:
        output = str(_compiled(text).render(context))
    except TemplateError as exc:  # SecurityError is a TemplateError
        raise TemplateProblem(f"template error: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise TemplateProblem(f"template error: {type(exc).__name__}: {exc}") from None
    if len(output) > MAX_OUTPUT:
        raise TemplateProblem(f"the rendered body is over {MAX_OUTPUT} characters")
    return output
