"""Who may use the demo: the Host allowlist and the access token (no aiohttp here).

* **Host allowlist.** A request is served only if its ``Host`` header names this server:
  the bound address, ``localhost``, ``127.0.0.1``, ``[::1]``, and the names given with
  ``--allow-host``. This defeats DNS rebinding: a page on ``evil.example`` whose name
  resolves to 127.0.0.1 reaches the server with ``Host: evil.example`` and is refused
  (its ``Origin`` matches its own ``Host``, so an Origin check alone lets it in). When the
  server binds a wildcard address (``0.0.0.0``, ``::``) the machine's host name and IP
  literals are allowed too: a page can only be *rebound* under a domain name, so a Host
  that is an IP address is the address the browser really connected to.
* **Access token**, as Jupyter does it: a random token, printed in the URL
  (``/?token=...``), required on every request (page, files, WebSocket, ``/api/status``)
  as the ``token`` query parameter, an ``Authorization: token ...`` header, or a cookie
  that the server sets on the first request that carried it. On by default whenever the
  server binds beyond loopback; ``--token`` turns it on for loopback too, ``--no-token``
  off. Tokens are compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from typing import Iterable, Mapping

from .limits import TOKEN_BYTES

__all__ = ["LOOPBACK_HOSTS", "AccessPolicy", "is_loopback", "is_wildcard", "needs_token", "new_token", "browser_urls"]

# Names every server answers to (bracket-less: the form urlsplit(...).hostname gives).
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine (127.0.0.0/8, ::1, localhost)."""
    ip = _ip(host)
    return ip.is_loopback if ip is not None else host.lower() == "localhost"


def is_wildcard(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_unspecified


def needs_token(bind_host: str, asked: bool | None) -> bool:
    """Jupyter's rule: a token whenever the server is reachable from elsewhere; on loopback when asked (``--token``).

    ``asked``: True (``--token``), False (``--no-token``) or None (neither flag).
    """
    return asked if asked is not None else not is_loopback(bind_host)


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def _hostname_of(host_header: str) -> str | None:
    """The host part of a ``Host`` header, lower-case, IPv6 without brackets; None if it does not parse."""
    host_header = host_header.strip()
    if not host_header or any(c in host_header for c in "/?#@ \t"):
        return None
    if host_header.startswith("["):
        end = host_header.find("]")
        if end < 0:
            return None
        name, rest = host_header[1:end], host_header[end + 1:]
        if _ip(name) is None:
            return None
    else:
        name, colon, port = host_header.partition(":")
        rest = colon + port
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name.lower().rstrip(".") or None


class AccessPolicy:
    """The allowlist and (optional) token of one server.

    Args:
        bind_host: the address the server binds.
        port: the bound port (names the cookie: cookies are not per port, two demos on one
            machine must not overwrite each other's).
        allow_hosts: extra names from ``--allow-host``.
        token: the access token, or None (no token).
    """

    def __init__(self, bind_host: str, port: int, allow_hosts: Iterable[str] = (), token: str | None = None):
        names = {*LOOPBACK_HOSTS, *(h.strip("[]").lower().rstrip(".") for h in allow_hosts)}
        self.wildcard = is_wildcard(bind_host)
        if not self.wildcard:
            names.add(bind_host.strip("[]").lower())
        else:
            names.add(socket.gethostname().lower())
            names.add(socket.getfqdn().lower())
        self.allowed = frozenset(n for n in names if n)
        self.token = token
        self._token_bytes = None if token is None else token.encode()
        self.cookie_name = f"vidprune-demo-{port}"

    def host_problem(self, host_header: str | None) -> str | None:
        """Why a request with this ``Host`` header is refused, or None if it is allowed."""
        if host_header is None:
            return "the request has no Host header"
        name = _hostname_of(host_header)
        if name is None:
            return f"the Host header {host_header[:100]!r} is not a host name"
        if name in self.allowed or (self.wildcard and _ip(name) is not None):
            return None
        return (f"this server does not answer to the host name {name[:100]!r} (it answers to "
                f"{', '.join(sorted(self.allowed))}); if that name is yours, start it with --allow-host {name[:100]}")

    def token_ok(self, query: Mapping[str, str], cookies: Mapping[str, str], authorization: str | None) -> bool:
        """Whether the request carries the token (query ``token``, the cookie, or ``Authorization: token T``)."""
        if self._token_bytes is None:
            return True
        given = [query.get("token"), cookies.get(self.cookie_name)]
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() in ("token", "bearer"):
                given.append(value.strip())
        # every candidate is compared (no early exit on the first mismatch), each in constant time
        ok = False
        for candidate in given:
            if candidate is not None:
                ok |= hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token_bytes)
        return ok

    def token_problem(self) -> str:
        return ("this demo needs its access token: open the URL the server printed when it started "
                "(it ends in /?token=...)")


def browser_urls(bind_host: str, port: int, token: str | None = None) -> list[str]:
    """URLs a browser can open for a server bound to ``bind_host:port`` (a wildcard is not one of them).

    A wildcard bind gives the machine's host name and 127.0.0.1 (for this machine).
    """
    suffix = "/" if token is None else f"/?token={token}"
    if is_wildcard(bind_host):
        hosts = [socket.gethostname(), "127.0.0.1" if ":" not in bind_host else "[::1]"]
    else:
        hosts = [f"[{bind_host}]" if ":" in bind_host else bind_host]
    return [f"http://{h}:{port}{suffix}" for h in dict.fromkeys(hosts)]
