"""Where moments may send: the SSRF guard for webhook and notification URLs.

A destination is checked when its rule is saved and again before every attempt:

1. only ``http`` and ``https``; no user-info (``http://evil@127.0.0.1/``), no control
   characters, a host that parses (``2130706433``, ``0177.0.0.1``, ``0x7f000001`` and
   ``127.1`` are read as the IPv4 address they spell, as the C resolver would);
2. the host is resolved and **every** address is checked: loopback, private, CGNAT,
   link-local, multicast, reserved, unspecified and documentation ranges are refused, as are
   IPv4-mapped, 6to4 and NAT64 addresses that embed one;
3. cloud metadata endpoints (169.254.169.254, fd00:ec2::254, 100.100.100.200,
   metadata.google.internal, ...) are refused always, whatever the operator allows;
4. the operator may admit ranges with ``allow_destinations`` (CIDRs); plain ``http`` is
   allowed only when every address is in an admitted range;
5. the sender connects to the address that was checked (the URL's host becomes the
   ``Host`` header and the TLS server name), so a DNS answer that changes between the
   check and the connection (rebinding) cannot redirect it. Redirects are not followed.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from seamline.errors import BadRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",  # AWS time sync over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
    )
)
METADATA_HOSTS = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "metadata.azure.com",
    "instance-data", "instance-data.ec2.internal", "metadata.platformequinix.com",
    "metadata.tencentyun.com", "kubernetes.default.svc",
})  # fmt: skip
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_CGNAT = ipaddress.ip_network("100.64.0.0/10")


class DestinationRefused(BadRequest):
    code = "destination_refused"


def system_resolver(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to (A and AAAA), via the system resolver."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def parse_networks(
    text: str | list[str], setting: str = "allow_destinations"
) -> tuple[Network, ...]:
    """``"127.0.0.0/8, 10.1.0.0/16"`` -> networks; a bad entry names the setting."""
    items = text if isinstance(text, list) else str(text).replace(";", ",").split(",")
    networks: list[Network] = []
    for item in items:
        item = str(item).strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise BadRequest(
                f"Setting '{setting}': {item!r} is not a CIDR range; write e.g. "
                "'10.20.0.0/16,127.0.0.1/32'.",
                code="invalid_setting",
            ) from None
    return tuple(networks)


@dataclass(frozen=True)
class CheckedURL:
    """A destination that passed the guard, with the addresses it was checked against."""

    url: str
    scheme: str
    host: str  # as written (lower case, IDNA), without brackets
    port: int
    target: str  # path and query
    addresses: tuple[IPAddress, ...]

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def pinned_url(self, address: IPAddress) -> str:
        """The URL with its host replaced by a checked address (connect there)."""
        literal = f"[{address}]" if address.version == 6 else str(address)
        return f"{self.scheme}://{literal}:{self.port}{self.target}"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if int(address) >> 32 == 0 and int(address) > 1:  # deprecated IPv4-compatible ::a.b.c.d
        return ipaddress.IPv4Address(int(address))
    return None


def _blocked_reason(address: IPAddress) -> str | None:
    if address.is_unspecified:
        return "unspecified address"
    if address.is_loopback:
        return "loopback address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _CGNAT:
        return "carrier-grade NAT address"
    if address.is_private:
        return "private address"
    if address.is_reserved:
        return "reserved address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local address"
    if not address.is_global:
        return "non-public address"
    return None


@dataclass(frozen=True)
class DestinationPolicy:
    """The guard; ``allowed`` comes from the ``allow_destinations`` setting."""

    allowed: tuple[Network, ...] = ()
    resolver: Resolver = field(default=system_resolver, compare=False)

    @classmethod
    def from_setting(cls, text: str, resolver: Resolver | None = None) -> DestinationPolicy:
        return cls(parse_networks(text), resolver or system_resolver)

    def admits(self, address: IPAddress) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed)

    def check_address(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None."""
        if address in METADATA_ADDRESSES:
            return f"{address} is a cloud metadata address (always refused)"
        inner = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        if inner is not None:
            if inner in METADATA_ADDRESSES:
                return f"{address} embeds the cloud metadata address {inner} (always refused)"
            if self.admits(inner):
                return None
            reason = _blocked_reason(inner)
            if reason:
                return f"{address} embeds {inner}, a {reason}"
        if self.admits(address):
            return None
        reason = _blocked_reason(address)
        return f"{address} is a {reason}" if reason else None

    def check_url(
        self,
        url: str,
        field: str = "url",
        *,
        schemes: tuple[str, ...] = ("http", "https"),
        resolve: bool = True,
    ) -> CheckedURL:
        """Parse, resolve and check ``url``; :class:`DestinationRefused` names the field."""

        def refuse(problem: str) -> DestinationRefused:
            shown = url if len(url) <= 200 else url[:200] + "..."
            return DestinationRefused(f"{field}: {shown!r} is refused: {problem}.")

        if not isinstance(url, str) or not url.strip():
            raise DestinationRefused(f"{field}: a destination URL is required.")
        if any(ord(c) < 33 or ord(c) == 127 for c in url) or "\\" in url:
            raise refuse("it contains spaces, control characters or backslashes")
        try:
            parts = urlsplit(url)
            port_value = parts.port
        except ValueError as exc:
            raise refuse(f"it does not parse ({exc})") from None
        scheme = parts.scheme.lower()
        if scheme not in schemes:
            raise refuse(f"only {' and '.join(schemes)} destinations are allowed")
        if "@" in parts.netloc:
            raise refuse(
                "user-info in URLs is not allowed; put credentials in headers or the secret"
            )
        raw_host = parts.hostname or ""
        if not raw_host:
            raise refuse("it has no host")
        host = raw_host.rstrip(".").lower()
        if "%" in host:
            raise refuse("IPv6 zone identifiers are not allowed")
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise refuse("the host name is not valid") from None
        port = port_value or (443 if scheme == "https" else 80)
        if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
            raise refuse("it is a cloud metadata host (always refused)")
        literal = self._literal(host)
        if literal is None and _NUMERIC_HOST.match(host):
            raise refuse("the host looks like a number but is not a valid IP address")
        if literal is None and ":" in host:
            raise refuse("the host is not a valid IPv6 address")
        if literal is not None:
            addresses: tuple[IPAddress, ...] = (literal,)
        elif not resolve:
            addresses = ()
        else:
            try:
                found = self.resolver(host, port)
            except (OSError, UnicodeError) as exc:
                raise refuse(f"the host does not resolve ({type(exc).__name__})") from None
            parsed = []
            for item in found:
                try:
                    parsed.append(ipaddress.ip_address(str(item).split("%", 1)[0]))
                except ValueError:
                    raise refuse(f"the resolver answered {item!r}, not an address") from None
            if not parsed:
                raise refuse("the host resolves to no address")
            addresses = tuple(parsed)
        for address in addresses:
            reason = self.check_address(address)
            if reason:
                raise refuse(reason)
        if scheme == "http" and not (addresses and all(self.admits(a) for a in addresses)):
            raise refuse(
                "plain http is only allowed to ranges admitted by allow_destinations "
                "(SEAMLINE_ALLOW_DESTINATIONS); use https"
            )
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return CheckedURL(url, scheme, host, port, target, addresses)

    @staticmethod
    def _literal(host: str) -> IPAddress | None:
        """An IP literal in any spelling the C library accepts, else None."""
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            pass
        if _NUMERIC_HOST.match(host):
            try:
                return ipaddress.IPv4Address(socket.inet_aton(host))
            except OSError:
                return None
        return None
