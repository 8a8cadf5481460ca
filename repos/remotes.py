"""Which git remotes qai may reach, and how git is told to reach only that one.

Push and import take a URL from the user, so they could aim the server at itself or at the
network behind it. Only https remotes on public addresses are allowed, unless
QAI_GIT_ALLOWED_HOSTS names the host (self-hosted servers, tests), which also allows plain http.
The name is resolved here and every address checked; git is then pinned to the checked address
(`http.curloptResolve`) and may not follow redirects, so it cannot be sent elsewhere afterwards.
A token reaches git as an `http.extraHeader` in its environment: never in the URL, on a command
line, in a config file or in a message.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from repos.gitcmd import config_env
from runtime.settings import Settings

DEFAULT_PORTS = {"https": 443, "http": 80}


class RemoteRefused(ValueError):
    """The URL may not be used; the message says why, in words for the user."""


class RemoteUnreachable(ConnectionError):
    """The remote's name does not resolve."""


@dataclass(frozen=True)
class Remote:
    url: str
    """The URL git is given (no credentials in it)."""
    scheme: str
    host: str
    port: int
    address: str
    """The checked address git is pinned to."""

    def git_env(self, token: str | None) -> dict[str, str]:
        """The environment for one git command against this remote, with `token` if given."""
        pin = f"[{self.address}]" if ":" in self.address else self.address
        pairs = [
            ("http.curloptResolve", f"{self.host}:{self.port}:{pin}"),
            ("http.followRedirects", "false"),
            ("http.lowSpeedLimit", "1000"),
            ("http.lowSpeedTime", "30"),
            ("credential.helper", ""),
            ("protocol.allow", "never"),
            (f"protocol.{self.scheme}.allow", "always"),
        ]
        if token:
            basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
            pairs.append(("http.extraHeader", f"Authorization: Basic {basic}"))
        return {**config_env(pairs), "GIT_ALLOW_PROTOCOL": self.scheme}


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def is_allowed_host(settings: Settings, host: str, port: int) -> bool:
    names = settings.git_allowed_hosts
    return host.lower() in names or f"{host.lower()}:{port}" in names


async def check_remote(settings: Settings, url: str) -> Remote:
    """The remote `url` names, once it is allowed and resolved; RemoteRefused if not allowed."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise RemoteRefused(f"{text!r} is not a valid URL") from None
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if scheme not in DEFAULT_PORTS or not host:
        raise RemoteRefused(
            "the remote must be an https:// URL, such as https://github.com/you/app.git"
        )
    if parts.username is not None or parts.password is not None:
        raise RemoteRefused(
            "the remote URL must not hold credentials; send the token in the `token` field"
        )
    if parts.query or parts.fragment:
        raise RemoteRefused("the remote URL must not have a query or a fragment")
    port = port or DEFAULT_PORTS[scheme]
    allowed = is_allowed_host(settings, host, port)
    if scheme == "http" and not allowed:
        raise RemoteRefused(
            f"plain http is allowed only for hosts named in QAI_GIT_ALLOWED_HOSTS; "
            f"use https://{parts.netloc}{parts.path}"
        )
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
    except (socket.gaierror, UnicodeError):
        raise RemoteUnreachable(f"the remote's host {host!r} could not be found") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise RemoteUnreachable(f"the remote's host {host!r} has no address")
    if not allowed:
        private = [address for address in addresses if not _public(address)]
        if private:
            raise RemoteRefused(
                f"the remote's host {host!r} resolves to {private[0]}, a loopback, private or "
                "link-local address; only public addresses are allowed unless "
                "QAI_GIT_ALLOWED_HOSTS names the host"
            )
    clean = urlunsplit((scheme, parts.netloc, parts.path, "", ""))
    return Remote(url=clean, scheme=scheme, host=host, port=port, address=str(addresses[0]))


def scrub(text: str, token: str | None) -> str:
    """`text` without the token (plain or as git would have sent it) in it."""
    if not token:
        return text
    basic = base64.b64encode(f"x-access-token:{token}".encode()).decode()
    return text.replace(token, "***").replace(basic, "***")


def git_failure(stderr: str, token: str | None, *, pushing: bool) -> tuple[int, str]:
    """A failed push's or fetch's status and words, from what git said."""
    said = scrub(stderr, token)
    lower = said.lower()
    if "[rejected]" in lower or "non-fast-forward" in lower or "fetch first" in lower:
        return 409, (
            "the remote branch has commits this project does not have (a non-fast-forward); "
            'push with "force": true to replace them'
        )
    if any(
        sign in lower
        for sign in (
            "authentication failed",
            "could not read username",
            "could not read password",
            "returned error: 401",
            "returned error: 403",
            "permission to",
            "denied",
        )
    ):
        what = "write to" if pushing else "read"
        return 403, (
            f"authentication failed: the remote refused the token (it must be allowed to {what} "
            "the repository)"
        )
    if any(
        sign in lower
        for sign in ("returned error: 404", "repository not found", "not found", "does not exist")
    ):
        return 404, "the remote repository was not found"
    if "couldn't find remote ref" in lower:
        return 404, "that branch, tag or commit was not found in the repository"
    if any(
        sign in lower
        for sign in (
            "could not resolve host",
            "failed to connect",
            "couldn't connect",
            "connection refused",
            "timed out",
            "took longer",
            "ssl",
            "operation too slow",
            "empty reply",
            "recv failure",
            "returned error: 5",
        )
    ):
        return 502, "the remote is unreachable"
    last = next(
        (line for line in reversed(said.splitlines()) if line.startswith(("fatal:", "error:"))),
        "",
    )
    words = last.partition(":")[2].strip() or "git failed"
    return 502, f"the remote refused: {words}"
