"""Callback URLs, safe against server-side request forgery. A callback URL is a client telling our
workers where to send a request, so it must never name something only our network can reach.

Rules: ``https`` only (``http`` when ``callback_allow_http``); every address the host resolves to
must be public — loopback, private (RFC 1918, ULA), link-local, CGNAT (100.64/10), multicast,
unspecified, reserved and the cloud metadata endpoints are refused unless they fall inside
``callback_allowed_networks``. IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4,
Teredo) must pass as themselves and as that IPv4 address.

The URL is checked when a job is submitted (a 422 with a code) and again at delivery: DNS may
answer differently by then (rebinding). At delivery the worker resolves the name, checks every
address, and connects to the address it checked — the URL's host is replaced by the IP, the
``Host`` header and TLS SNI/certificate check keep the name — so no second lookup happens between
the check and the connection. Redirects are not followed and proxy variables are ignored.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from typing import Union

import httpx

from jobs.settings import Settings

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]

INVALID = "callback_url_invalid"
INSECURE = "callback_url_insecure"
FORBIDDEN = "callback_url_forbidden"
UNRESOLVABLE = "callback_url_unresolvable"

# Instance metadata and host agents of the big clouds; 168.63.129.16 (Azure) is a public address.
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "168.63.129.16", "192.0.0.192")
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class CallbackRejected(ValueError):
    """A callback URL we will not call; ``code`` is one of the four codes above."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip.teredo is not None:
            return ip.teredo[1]
    return ip


def address_problem(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address a webhook may go to, or None."""
    inner = _embedded_ipv4(ip)
    for candidate in {ip, inner}:
        if candidate in METADATA:
            return "a cloud metadata address"
        if candidate.is_loopback:
            return "a loopback address"
        if candidate.is_link_local:
            return "a link-local address"
        if candidate.is_multicast:
            return "a multicast address"
        if candidate.is_unspecified:
            return "the unspecified address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in CGNAT:
            return "a carrier-grade NAT address"
        if candidate.is_private:
            return "a private address"
        if candidate.is_reserved or not candidate.is_global:
            return "not a public address"
    return None


def allowed_networks(settings: Settings) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [
        ipaddress.ip_network(part.strip(), strict=False)
        for part in settings.callback_allowed_networks.split(",")
        if part.strip()
    ]


def pinned_names(settings: Settings) -> dict[str, IPAddress]:
    pins: dict[str, IPAddress] = {}
    for entry in settings.callback_resolve.split(","):
        if not entry.strip():
            continue
        host, sep, address = entry.partition("=")
        if not sep:
            raise ValueError(f"VOXMILL_CALLBACK_RESOLVE entry {entry!r} is not host=ip")
        pins[host.strip().lower().rstrip(".")] = ipaddress.ip_address(address.strip())
    return pins


def parse(url: str, settings: Settings) -> httpx.URL:
    if not url or len(url) > 2048 or any(ord(c) < 0x21 or c == "\x7f" for c in url):
        raise CallbackRejected(INVALID, "the callback URL is empty, too long, or contains spaces or control characters")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")
        port = parsed.port
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise CallbackRejected(INVALID, "the callback URL cannot be parsed") from None
    if parsed.scheme not in ("https", "http"):
        raise CallbackRejected(INVALID, "a callback URL starts with https://")
    if parsed.scheme == "http" and not settings.callback_allow_http:
        raise CallbackRejected(INSECURE, "callback URLs must use https")
    if not host or (port is not None and not 0 < port < 65536):
        raise CallbackRejected(INVALID, "the callback URL has no usable host and port")
    return parsed


def resolve(url: httpx.URL, settings: Settings) -> list[IPAddress]:
    """Every address the URL's host stands for (an IP literal stands for itself)."""
    host = url.raw_host.decode("ascii").lower().rstrip(".")
    pins = pinned_names(settings)
    if host in pins:
        return [pins[host]]
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise CallbackRejected(UNRESOLVABLE, f"the callback host {host!r} does not resolve: {exc}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        # A scoped IPv6 address comes back as "fe80::1%eth0"; the scope does not change the verdict.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise CallbackRejected(UNRESOLVABLE, f"the callback host {host!r} has no address")
    return addresses


def check_addresses(addresses: list[IPAddress], settings: Settings) -> None:
    allowed = allowed_networks(settings)
    for address in addresses:
        if any(address.version == net.version and address in net for net in allowed):
            continue
        problem = address_problem(address)
        if problem:
            raise CallbackRejected(FORBIDDEN, f"the callback host resolves to {address}, {problem}")


@dataclass(frozen=True)
class Target:
    """A checked callback: the URL as given and the address to connect to."""

    url: httpx.URL
    address: IPAddress


def check(url: str, settings: Settings) -> Target:
    """Parse, resolve and check a callback URL; raises CallbackRejected."""
    parsed = parse(url, settings)
    addresses = resolve(parsed, settings)
    check_addresses(addresses, settings)
    return Target(parsed, addresses[0])


def post(target: Target, body: bytes, headers: dict[str, str], timeout_s: float) -> httpx.Response:
    """POST to the checked address, naming the original host in ``Host`` and TLS."""
    url = target.url
    host = url.raw_host.decode("ascii")
    pinned = url.copy_with(host=str(target.address))
    extensions: dict[str, str] = {}
    if url.scheme == "https":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            extensions["sni_hostname"] = host  # SNI and the certificate check use the name
    with httpx.Client(trust_env=False, timeout=timeout_s, follow_redirects=False) as client:
        request = client.build_request(
            "POST", pinned, content=body, headers={**headers, "Host": url.netloc.decode("ascii")}, extensions=extensions
        )
        return client.send(request)
