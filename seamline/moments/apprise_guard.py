"""The SSRF guard for Apprise destinations, whatever the service.

Apprise knows which of its services talk to a host the user names (``json://``,
``gotify://``, ``ntfy://host/topic``, ``mmost://``, ``matrix://``, ``mailto://...?smtp=``...)
and which talk to their provider's fixed API (``twilio://``, ``slack://``, ``tgram://``...):
a service whose URL templates contain ``{host}`` connects to that host. We ask Apprise to
parse the URL and check the host it will connect to (for e-mail, the SMTP server) with the
same :class:`~seamline.moments.destinations.DestinationPolicy` as webhooks, when the rule
is saved and again before every attempt. Apprise resolves and connects by itself, so the
connection cannot be pinned to the checked address (a DNS answer that changes between the
check and the connection is not caught, unlike for webhooks).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from seamline.moments.destinations import CheckedURL, DestinationPolicy, DestinationRefused


@dataclass(frozen=True)
class AppriseTarget:
    """Where an Apprise URL connects: ``None`` host for fixed-provider services."""

    service: str
    host: str | None
    port: int | None
    secure: bool
    smtp: bool = False


def _plugin(url: str) -> Any:
    with warnings.catch_warnings():  # some Apprise plugins import deprecated stdlib modules
        warnings.simplefilter("ignore", DeprecationWarning)
        import apprise

        return apprise.Apprise.instantiate(url, suppress_exceptions=True)


def target(url: str) -> AppriseTarget | None:
    """What Apprise makes of ``url``; None when it does not understand it."""
    plugin = _plugin(url)
    if plugin is None:
        return None
    cls = type(plugin)
    service = cls.__name__.removeprefix("Notify")
    tokens = getattr(cls, "template_tokens", {}) or {}
    if "host" not in tokens:
        return AppriseTarget(service, None, None, True)  # the provider's own API
    if getattr(plugin, "mode", None) == "cloud":  # ntfy://topic goes to ntfy.sh
        return AppriseTarget(service, None, None, True)
    smtp_host = getattr(plugin, "smtp_host", None)
    host = smtp_host or getattr(plugin, "host", None)
    port = getattr(plugin, "port", None)
    secure = bool(getattr(plugin, "secure", False))
    return AppriseTarget(service, str(host) if host else "", int(port) if port else None, secure,
                         smtp=bool(smtp_host))  # fmt: skip


def check(policy: DestinationPolicy, url: str, field: str) -> CheckedURL | None:
    """Refuse (:class:`DestinationRefused`, naming ``field``) an Apprise URL whose host is
    not allowed; None for services that only talk to their provider's fixed API."""
    found = target(url)
    if found is None:
        raise DestinationRefused(
            f"{field}: Apprise does not understand this URL; see "
            "https://github.com/caronc/apprise/wiki for the forms."
        )
    if found.host is None:
        return None
    if not found.host:
        raise DestinationRefused(f"{field}: the {found.service} URL has no host.")
    host = found.host.strip("[]")
    literal = f"[{host}]" if ":" in host else host
    port = f":{found.port}" if found.port else ""
    # SMTP is not HTTP: only the address rules apply; HTTP services follow the webhook rules
    # (plain http only to ranges the operator admitted).
    scheme = "https" if found.secure or found.smtp else "http"
    try:
        return policy.check_url(f"{scheme}://{literal}{port}/", field)
    except DestinationRefused as exc:
        detail = exc.message.split(" is refused: ", 1)[-1]
        raise DestinationRefused(f"{field}: the {found.service} host {host!r} is refused: "
                                 f"{detail}") from None  # fmt: skip
