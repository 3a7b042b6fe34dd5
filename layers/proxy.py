"""Which proxy a request goes through, read from HTTP_PROXY, HTTPS_PROXY and NO_PROXY as Go's
net/http reads them (`ProxyFromEnvironment`), so pybuild goes where docker and BuildKit go: the
upper-case name first, then the lower-case one; a proxy without a scheme is an http:// one; never
a proxy for localhost or a loopback address; NO_PROXY is `*` or a comma-separated list of hosts
(`example.com` covers its subdomains too, `.example.com` only them), `host:port`, IP addresses
and CIDR ranges. Only http:// proxies are spoken (https:// origins go through them with CONNECT).
"""
from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # these are imported only when a connection or NO_PROXY asks for them
    import http.client
    import ipaddress
    import ssl

_DEFAULT_PORTS = {"http": 80, "https": 443}


class ProxyError(ValueError):
    """A proxy setting pybuild cannot use."""


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int
    authorization: str | None  # the Proxy-Authorization header, from the URL's user:password


def proxy_for(scheme: str, netloc: str, environ: Mapping[str, str] = os.environ) -> Proxy | None:
    """The proxy a request to `scheme://netloc` goes through, if any."""
    name = "HTTPS_PROXY" if scheme == "https" else "HTTP_PROXY"
    setting = environ.get(name) or environ.get(name.lower())
    if not setting:
        return None
    parts = urlsplit(f"{scheme}://{netloc}")
    host, port = (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 80)
    if not _wanted(host, port, environ.get("NO_PROXY") or environ.get("no_proxy") or ""):
        return None
    return _parse(name, setting)


@dataclass(frozen=True)
class Route:
    """How to reach an origin: the connection to open, whether a request names its target as a
    whole URL (plain http through a proxy), and the headers every request on it adds."""

    connection: http.client.HTTPConnection
    absolute_form: bool
    headers: Mapping[str, str]

    def target(self, url: str) -> str:
        """What the request line names for `url`."""
        if self.absolute_form:
            return url
        parts = urlsplit(url)
        return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def connect(scheme: str, netloc: str, *, timeout: float, context: ssl.SSLContext | None,
            blocksize: int, environ: Mapping[str, str] = os.environ) -> Route:
    """A connection to `scheme://netloc`, through its proxy when the environment names one;
    `context` is needed for https only."""
    import http.client
    proxy = proxy_for(scheme, netloc, environ)
    if proxy is None:
        if scheme == "https":
            return Route(http.client.HTTPSConnection(netloc, timeout=timeout, context=context,
                                                     blocksize=blocksize), False, {})
        return Route(http.client.HTTPConnection(netloc, timeout=timeout, blocksize=blocksize),
                     False, {})
    headers = {"Proxy-Authorization": proxy.authorization} if proxy.authorization else {}
    if scheme == "https":
        connection = http.client.HTTPSConnection(proxy.host, proxy.port, timeout=timeout,
                                                 context=context, blocksize=blocksize)
        parts = urlsplit(f"https://{netloc}")
        connection.set_tunnel(parts.hostname or "", parts.port or 443, headers=headers)
        return Route(connection, False, {})
    return Route(http.client.HTTPConnection(proxy.host, proxy.port, timeout=timeout,
                                            blocksize=blocksize), True, headers)


def _parse(name: str, setting: str) -> Proxy:
    url = setting if "://" in setting else f"http://{setting}"
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise ProxyError(f"{name}={setting}: only http:// proxies are supported (not "
                         f"{parts.scheme}://)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProxyError(f"{name}={setting}: not a valid port") from None
    if not parts.hostname:
        raise ProxyError(f"{name}={setting}: no host")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    return Proxy(parts.hostname, port, authorization)


def _wanted(host: str, port: int, no_proxy: str) -> bool:
    """Whether a request to host:port goes through the proxy (Go's `useProxy`)."""
    if host == "localhost":
        return False
    address = _address(host)
    if address is not None and address.is_loopback:
        return False
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if not entry:
            continue
        if entry == "*":
            return False
        if "/" in entry:
            import ipaddress
            try:
                if address is not None and address in ipaddress.ip_network(entry, strict=False):
                    return False
            except ValueError:
                pass
            continue
        entry_host, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if _address(entry_host) is not None:
            if address is not None and address == _address(entry_host):
                return False
            continue
        entry_host = entry_host[1:] if entry_host.startswith("*.") else entry_host
        if entry_host.startswith("."):
            if host.endswith(entry_host):
                return False
        elif host == entry_host or host.endswith("." + entry_host):
            return False
    return True


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    import ipaddress
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _split_port(entry: str) -> tuple[str, int | None]:
    host, colon, port = entry.rpartition(":")
    if colon and port.isdigit() and (not host.count(":") or host.endswith("]")):
        return host.strip("[]"), int(port)
    return entry.strip("[]"), None
