"""Who sent a request and which base URL it used: ``Forwarded`` (RFC 7239) and ``X-Forwarded-For`` /
``-Proto`` / ``-Host`` count only when the peer is a trusted proxy (``FHIRBOX_TRUSTED_PROXIES``).

The pipeline resolves this once per request (``Forwarding.apply``) into ``Request.client_addr`` and
``Request.base_url``; policies (``remote-addr``), the throttling of client authentication, links and
the JWT ``iss`` all read those two attributes and nothing else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from fhirbox.http.request import Request

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_HOST = re.compile(r"\A(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_~%]+)(?::[0-9]{1,5})?\Z")
_PARAM = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^;,\s]*)\s*')


def parse_networks(spec: str | None) -> tuple[_Network, ...]:
    """``FHIRBOX_TRUSTED_PROXIES``: comma-separated addresses or CIDRs."""
    items = (item.strip() for item in (spec or "").split(","))
    return tuple(ipaddress.ip_network(item, strict=False) for item in items if item)


def node_address(node: str) -> str:
    """An address as a header names it, without quotes, brackets or port: ``"[2001:db8::1]:80"`` ->
    ``2001:db8::1``, ``192.0.2.1:8080`` -> ``192.0.2.1``; anything else (``unknown``, ``_hidden``) as is."""
    node = node.strip().strip('"').strip()
    if node.startswith("["):
        node = node[1:].partition("]")[0]
    elif node.count(":") == 1:
        node = node.partition(":")[0]
    try:
        return str(ipaddress.ip_address(node))
    except ValueError:
        return node


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header (RFC 7239 §4), leftmost first, parameter names in lower case."""
    elements: list[dict[str, str]] = []
    for element in _split_outside_quotes(value, ","):
        params: dict[str, str] = {}
        for pair in _split_outside_quotes(element, ";"):
            match = _PARAM.fullmatch(pair)
            if match is None:
                continue
            raw = match.group(2)
            if raw.startswith('"'):
                raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
            params.setdefault(match.group(1).lower(), raw)
        elements.append(params)
    return elements


def _split_outside_quotes(value: str, separator: str) -> Iterable[str]:
    part: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            yield "".join(part)
            part = []
            continue
        part.append(char)
    yield "".join(part)


def _list(value: str | None) -> list[str]:
    return [item.strip() for item in value.split(",")] if value else []


class Forwarding:
    """Resolves the client address and the public base URL of each request.

    From an untrusted peer (and from every peer when no proxy is trusted) the address is the peer's and
    the base URL is ``static_base_url``. From a trusted proxy, the forwarded addresses are walked from
    the right, skipping trusted proxies: the first untrusted one is the client. The base URL then comes
    from the forwarded proto and host, unless ``FHIRBOX_BASE_URL`` fixes it (``configured``).
    """

    def __init__(self, trusted_proxies: str | None, static_base_url: str, *, configured: bool) -> None:
        self.networks = parse_networks(trusted_proxies)
        self.static_base_url = static_base_url
        self.configured = configured

    def trusts(self, address: str) -> bool:
        if not self.networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.networks)

    def apply(self, request: Request) -> None:
        """Set ``request.client_addr`` and ``request.base_url``."""
        peer = request.client_addr
        request.base_url = self.static_base_url
        if not self.trusts(peer):
            return
        headers = request.headers
        forwarded = headers.get("forwarded")
        elements = parse_forwarded(forwarded) if forwarded else []
        if elements:
            chain = [node_address(element.get("for", "")) for element in elements]
            protos = [element.get("proto", "") for element in elements]
            hosts = [element.get("host", "") for element in elements]
        else:
            chain = [node_address(item) for item in _list(headers.get("x-forwarded-for"))]
            protos = _list(headers.get("x-forwarded-proto"))
            hosts = _list(headers.get("x-forwarded-host"))
        address, hops = peer, 0
        for hop in reversed(chain):
            if not self.trusts(address) or not hop:
                break
            address, hops = hop, hops + 1
        request.client_addr = address
        if not self.configured:
            request.base_url = self._base_url(request, protos, hosts, max(hops, 1))
            request.base_url_forwarded = True

    def _base_url(self, request: Request, protos: list[str], hosts: list[str], hops: int) -> str:
        """The proto and host the outermost trusted proxy received (the one ``hops`` from the right of
        a per-hop list; a single value is the one every proxy passed on)."""
        proto = _pick(protos, hops).lower()
        host = _pick(hosts, hops) or request.headers.get("host", "")
        if proto not in ("http", "https"):
            proto = str(request.scope.get("scheme", "http"))
        if not host or _HOST.fullmatch(host) is None:
            return _with_scheme(self.static_base_url, proto)
        return f"{proto}://{host}"


def _pick(values: list[str], hops: int) -> str:
    if not values:
        return ""
    return values[max(len(values) - hops, 0)]


def _with_scheme(url: str, scheme: str) -> str:
    return scheme + url[url.index(":") :]
