"""A git server for tests: git's own `git http-backend` (CGI) behind a small HTTP server on
loopback, with HTTP Basic auth, serving bare repositories under one directory (pushes allowed).
Every request line and header it receives is kept in `log`, so tests can look for secrets."""

from __future__ import annotations

import asyncio
import base64
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from repos.gitcmd import clean_env, config_env


@dataclass
class GitServer:
    root: Path
    password: str | None
    port: int = 0
    log: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def bare(self, name: str) -> Path:
        path = self.root / name
        subprocess.run(
            ["git", "init", "--quiet", "--bare", "--initial-branch=main", str(path)],
            check=True,
            env=clean_env(),
        )
        return path


def _handler(server: GitServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            server.log.append(format % args)

        def _body(self) -> bytes:
            if self.headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().strip().split(b";")[0], 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("content-length") or 0))

        def _serve(self) -> None:
            server.log.append(f"{self.command} {self.path} {dict(self.headers.items())}")
            body = self._body() if self.command == "POST" else b""
            if server.password is not None and not self._authorized():
                self._reply(401, b"authentication required\n", {"WWW-Authenticate": "Basic"})
                return
            url = urlsplit(self.path)
            env = clean_env(
                {
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": url.path,
                    "QUERY_STRING": url.query,
                    "CONTENT_TYPE": self.headers.get("content-type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "tester",
                    "REMOTE_ADDR": "127.0.0.1",
                    "HTTP_CONTENT_ENCODING": self.headers.get("content-encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("git-protocol", ""),
                    **config_env([("http.receivepack", "true")]),
                }
            )
            done = subprocess.run(
                ["git", "http-backend"], input=body, capture_output=True, env=env, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = done.stdout.partition(b"\n\n")
            status, headers = 200, {}
            for line in head.decode("latin-1").splitlines():
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.strip().split()[0])
                elif name:
                    headers[name.strip()] = value.strip()
            self._reply(status, payload, headers)

        def _authorized(self) -> bool:
            scheme, _, given = self.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "basic":
                return False
            _, _, password = base64.b64decode(given).decode().partition(":")
            return password == server.password

        def _reply(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _serve
        do_POST = _serve

    return Handler


@contextmanager
def git_server(root: Path, password: str | None = None) -> Iterator[GitServer]:
    root.mkdir(parents=True, exist_ok=True)
    state = GitServer(root=root, password=password)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def run_git(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run the git client as a user would (no host config), returning stdout; raises on failure."""
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=clean_env(
            {
                "GIT_AUTHOR_NAME": "t",
                "GIT_AUTHOR_EMAIL": "t@t",
                "GIT_PROTOCOL_FROM_USER": "1",
                **(env or {}),
            }
        )
        | {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"},
        check=False,
    )
    if done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, args, done.stdout, done.stderr)
    return done.stdout


def git_fails(*args: str, cwd: Path | None = None) -> str:
    """Run git expecting failure; returns what it said on stderr."""
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, env=clean_env(), check=False
    )
    assert done.returncode != 0, (args, done.stdout)
    return done.stderr


async def agit(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """`run_git` off the event loop (the API under test serves on the same loop)."""
    return await asyncio.to_thread(run_git, *args, cwd=cwd, env=env)


async def agit_fails(*args: str, cwd: Path | None = None) -> str:
    return await asyncio.to_thread(git_fails, *args, cwd=cwd)


async def publish(server: GitServer, name: str, files: dict[str, bytes], tmp: Path, **extra):
    """A repository `name` on the server with `files` in one commit; its commit id."""
    work = tmp / f"work-{name}"
    await agit("init", "--quiet", "--initial-branch=main", str(work))
    for path, data in files.items():
        target = work / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if data.startswith(b"-> "):
            target.symlink_to(data[3:].decode())
        else:
            target.write_bytes(data)
    await agit("add", "-A", cwd=work)
    for path, commit in extra.get("submodules", {}).items():
        await agit("update-index", "--add", "--cacheinfo", f"160000,{commit},{path}", cwd=work)
    await agit("commit", "--quiet", "-m", "the app", cwd=work)
    await agit("clone", "--quiet", "--bare", str(work), str(server.root / f"{name}.git"))
    return (await agit("rev-parse", "HEAD", cwd=work)).strip()
