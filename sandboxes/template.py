"""Build the sandbox template (the Next.js app under `sandbox-templates/`) for the local backend.

The result is a ready directory `<QAI_DATA_DIR>/templates/<name>-<hash>/` with `node_modules`
installed, which local sandboxes use as the read-only lower layer of their overlay. The hash covers
every input (sources, package.json, package-lock.json, the Node version and this recipe), so a
build is reused until one of them changes. The `.qai-template-ready` marker is written last: a
directory without it is an unfinished build and is never handed out.

    python -m sandboxes.template build     # builds if needed, prints the path
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from runtime.logs import get_logger
from runtime.processes import (
    StopRequested,
    free_port,
    parent_death_signal,
    raise_on_stop_signals,
    stop_process_group,
)
from runtime.settings import Settings
from sandboxes.manifest import (
    NOT_COPIED,
    PROJECT_ROOT,
    TemplateError,
    TemplateManifest,
    load_manifest,
    template_source,
)

log = get_logger(__name__)

READY_MARKER = ".qai-template-ready"
SANDBOX_UID = SANDBOX_GID = 201_000
"""The sandbox user (uid 1000 inside) as the host sees it through the sandbox's user namespace
(`sandboxes.local.layout.HOST_SANDBOX_UID`)."""

# Bump when the build steps below change in a way that changes the result.
RECIPE_VERSION = "4"  # 4: files owned by the user namespace's uid 201000; tsgo for the type check
# Never part of a build's inputs or of the built app.
IGNORED_NAMES = frozenset({"node_modules", ".next", "tsconfig.tsbuildinfo"})
TSGO_BUILD_INFO = ".next/qai-tsgo.tsbuildinfo"
"""Under `.next`, which snapshots leave out; built with the template, so even a sandbox's first
type check is incremental (TypeScript 5's `tsconfig.tsbuildinfo` has another format)."""
TSGO_ARGS = [
    "node_modules/.bin/tsgo", "--noEmit", "-p", ".", "--pretty", "false",
    "--noUncheckedSideEffectImports", "false", "--types", "*",
    "--tsBuildInfoFile", TSGO_BUILD_INFO,
]  # fmt: skip
"""The draft's type check with TypeScript 7, the native compiler (`@typescript/native-preview`,
many times cheaper than `tsc` 5, which stays for `next build`), with TypeScript 5's defaults
where 7 changed them, so both report the same errors: side-effect imports such as
`import "./globals.css"` unchecked, and every `@types` package visible."""

NPM_CI_TIMEOUT = 900.0
WARMUP_TIMEOUT = 300.0
OUTPUT_TAIL_LINES = 30
OUTPUT_HEAD_LINES = 10


def _input_files(source: Path) -> list[Path]:
    """Every file of the template source, relative, sorted; build outputs excluded."""
    files: list[Path] = []
    for root, dirs, names in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in IGNORED_NAMES)
        for file_name in names:
            if file_name not in IGNORED_NAMES:
                files.append((Path(root) / file_name).relative_to(source))
    return sorted(files)


def _node_version() -> str:
    try:
        done = subprocess.run(
            ["node", "--version"], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise TemplateError(f"Node.js is needed to build the sandbox template: {error}") from error
    return done.stdout.strip()


def template_hash(name: str = "nextjs", *, node_version: str | None = None) -> str:
    """Hash of everything the build depends on; a new value means a new build directory."""
    source = template_source(name)
    digest = hashlib.sha256()
    digest.update(f"recipe={RECIPE_VERSION}\nnode={node_version or _node_version()}\n".encode())
    for relative in _input_files(source):
        path = source / relative
        digest.update(f"{relative.as_posix()}\0{os.access(path, os.X_OK)}\0".encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def template_dir(settings: Settings, name: str = "nextjs", *, digest: str | None = None) -> Path:
    return settings.data_dir / "templates" / f"{name}-{digest or template_hash(name)}"


def is_ready(path: Path) -> bool:
    return (path / READY_MARKER).is_file()


def ensure_template(settings: Settings, name: str = "nextjs") -> Path:
    """Return the ready build of template `name`, building it first if its inputs changed.

    Safe to call from several processes at once: one builds, the others wait on a file lock and
    then find the ready marker. Blocking; async callers use `asyncio.to_thread`.
    """
    node_version = _node_version()
    digest = template_hash(name, node_version=node_version)
    target = template_dir(settings, name, digest=digest)
    if is_ready(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target.parent / f".{name}.lock"):
        if is_ready(target):  # built by another process while we waited
            return target
        _build(name, target, digest=digest, node_version=node_version)
    return target


def ready_template(settings: Settings, name: str = "nextjs") -> Path | None:
    """The ready build of template `name` for its current inputs, or None if it needs a build."""
    target = template_dir(settings, name)
    return target if is_ready(target) else None


async def ensure_template_stoppable(settings: Settings, name: str = "nextjs") -> Path:
    """`ensure_template` for async callers that may be cancelled (a stop signal at start-up).

    A ready build is found in a thread (it only hashes the inputs). A build, or the wait for
    another process's build, runs in a child process (`python -m sandboxes.template build`):
    unlike a thread, it can be stopped at once, and it stops npm and the dev server on its way
    out. Its log lines pass through to our stderr.
    """
    found = await asyncio.to_thread(ready_template, settings, name)
    if found is not None:
        return found
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandboxes.template",
        "build",
        "--name",
        name,
        cwd=PROJECT_ROOT,
        env={**os.environ, "QAI_DATA_DIR": str(settings.data_dir)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        process_group=0,
        preexec_fn=parent_death_signal(signal.SIGTERM),
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        error: list[str] = []
        async for raw in process.stderr:
            line = raw.decode(errors="replace")
            if error or line.startswith("qai: "):
                error.append(line)  # the build's failure, raised below rather than printed
            else:
                sys.stderr.write(line)
                sys.stderr.flush()
        path = (await process.stdout.read()).decode().strip()
        code = await process.wait()
    except BaseException:
        # Cancelled: the build removes its unfinished directory and its children, then exits.
        await stop_process_group(process, sig=signal.SIGTERM, grace=30.0)
        raise
    if code != 0:
        raise TemplateError(
            "".join(error).removeprefix("qai: ").strip()
            or f"the template build exited with code {code}"
        )
    return Path(path)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("template.build.waiting", reason="another process is building it")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _build(name: str, target: Path, *, digest: str, node_version: str) -> None:
    manifest = load_manifest(name)
    source = template_source(name)
    staging = target.with_name(f".{target.name}.building")
    started = time.monotonic()
    log.info("template.build.start", template=name, hash=digest, path=str(target))
    # Leftovers of a build that crashed; we hold the lock, so nobody else is writing them.
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.mkdir(parents=True)
        for relative in _input_files(source):
            if relative.parts[0] in NOT_COPIED:
                continue
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / relative, destination)

        env = _build_env(manifest)
        npm_started = time.monotonic()
        _run_step(
            "npm ci",
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=staging,
            env=env,
            timeout=NPM_CI_TIMEOUT,
        )
        npm_seconds = time.monotonic() - npm_started

        warm_started = time.monotonic()
        _warm_up(staging, manifest, env)
        warm_seconds = time.monotonic() - warm_started

        _prune_next_dir(staging / ".next")
        # A type check now leaves tsconfig.tsbuildinfo, so a sandbox's first `tsc --noEmit`
        # (a run's check of its draft) is incremental: seconds less on every run.
        (staging / "tsconfig.tsbuildinfo").unlink(missing_ok=True)
        _run_step(
            "tsc --noEmit",
            ["npx", "--no-install", "tsc", "--noEmit", "-p", "."],
            cwd=staging,
            env=env,
            timeout=WARMUP_TIMEOUT,
        )
        if (staging / "node_modules" / ".bin" / "tsgo").exists():
            _run_step(  # the native compiler's own build info, for the check of each draft
                "tsgo --noEmit",
                TSGO_ARGS,
                cwd=staging,
                env=env,
                timeout=WARMUP_TIMEOUT,
            )
        _chown_tree(staging)
        staging.rename(target)
        marker = {
            "template": name,
            "hash": digest,
            "node": node_version,
            "built_at": time.time(),
            "npm_ci_seconds": round(npm_seconds, 2),
            "warmup_seconds": round(warm_seconds, 2),
            "total_seconds": round(time.monotonic() - started, 2),
        }
        (target / READY_MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        _chown(target / READY_MARKER)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("template.build.done", **marker)


def _build_env(manifest: TemplateManifest) -> dict[str, str]:
    env = dict(os.environ)
    env.update(manifest.env)
    env.update(
        {
            "NEXT_TELEMETRY_DISABLED": "1",
            "npm_config_update_notifier": "false",
            "npm_config_fund": "false",
            "npm_config_audit": "false",
        }
    )
    return env


def _tail(text: str, lines: int = OUTPUT_TAIL_LINES) -> str:
    """The end of a tool's output, plus its start when long: npm puts the cause of a usage
    error first and a page of help after it."""
    all_lines = text.rstrip().splitlines()
    if len(all_lines) <= lines + OUTPUT_HEAD_LINES:
        return "\n".join(all_lines)
    skipped = len(all_lines) - lines - OUTPUT_HEAD_LINES
    return "\n".join(
        [*all_lines[:OUTPUT_HEAD_LINES], f"[... {skipped} lines ...]", *all_lines[-lines:]]
    )


def _run_step(
    step: str, argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> None:
    try:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    except FileNotFoundError as error:
        raise TemplateError(f"template build: {step} needs {argv[0]!r} on PATH") from error
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_session(process)
        output, _ = process.communicate()
        raise TemplateError(
            f"template build: {step} took longer than {timeout:.0f} s; last output:\n"
            f"{_tail(output)}"
        ) from None
    except BaseException:
        # Stopped (a signal or Ctrl-C): npm runs install scripts as its own children, in its
        # session, so the whole session goes, not only npm.
        _kill_session(process)
        raise
    if process.returncode != 0:
        raise TemplateError(
            f"template build: {step} failed with exit code {process.returncode}; its output:\n"
            f"{_tail(output)}"
        )


def _kill_session(process: subprocess.Popen[str]) -> None:
    """SIGKILL a child started with `start_new_session` and everything in its group; reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _warm_up(app: Path, manifest: TemplateManifest, env: dict[str, str]) -> None:
    """Start the dev server once and request the first page until it compiles (compile_page.sh).

    This proves the template compiles under Next.js + Tailwind and lets Next write its first-run
    files (next-env.d.ts, tsconfig tweaks). It binds a free loopback port, not the template's port,
    so a build never collides with a running dev server.
    """
    port = free_port()
    next_bin = app / "node_modules" / ".bin" / "next"
    log_path = app / ".next-warmup.log"
    url = f"http://127.0.0.1:{port}{manifest.ready_path}"
    with log_path.open("w+", encoding="utf-8") as output:
        server = subprocess.Popen(
            [str(next_bin), "dev", "--turbopack", "--port", str(port), "--hostname", "127.0.0.1"],
            cwd=app,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            failure = _wait_for_page(url, server, WARMUP_TIMEOUT)
        finally:
            _stop(server)
        if failure is not None:
            output.seek(0)
            raise TemplateError(
                f"template build: dev server warm-up failed: {failure}; last output:\n"
                f"{_tail(output.read())}"
            )
    log_path.unlink()


def _wait_for_page(url: str, server: subprocess.Popen[bytes], timeout: float) -> str | None:
    """None once `url` answers 200; otherwise why it never did."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            return f"the dev server exited with code {server.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=max(1.0, deadline - time.monotonic())) as r:
                if r.status == 200:
                    return None
                last = f"HTTP {r.status}"
        except urllib.error.HTTPError as error:
            # A compile error answers 500 at once; retrying will not fix the sources.
            return f"{url} answered HTTP {error.code}"
        except (OSError, TimeoutError) as error:
            last = str(error)
        time.sleep(0.1)
    return f"{url} did not answer 200 within {timeout:.0f} s ({last})"


def _stop(server: subprocess.Popen[bytes]) -> None:
    """Stop the dev server and its workers (they share its session)."""
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, sig)
        try:
            server.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers may outlive the leader for a moment; the group must be empty before we move the dir.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)


def _prune_next_dir(next_dir: Path) -> None:
    """Keep only `.next/types` (route types next-env.d.ts refers to, so `tsc` passes at once).

    Next 15's Turbopack keeps no persistent dev cache (that is canary-only), so the rest of what
    the warm-up leaves is not reused; it only holds source maps naming this host path.
    """
    if not next_dir.is_dir():
        return
    for child in next_dir.iterdir():
        if child.name == "types":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        os.lchown(path, SANDBOX_UID, SANDBOX_GID)


def _chown_tree(root: Path) -> None:
    """Make the build the sandbox user's, so it may write in its workspace (root only)."""
    if os.geteuid() != 0:
        log.debug("template.chown.skipped", reason="not root; files keep the builder's uid")
        return
    _chown(root)
    for parent, dirs, files in os.walk(root):
        for entry in (*dirs, *files):
            os.lchown(os.path.join(parent, entry), SANDBOX_UID, SANDBOX_GID)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandboxes.template", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the template if needed and print its path")
    build.add_argument("--name", default="nextjs")
    show = commands.add_parser("manifest", help="print the template's manifest as JSON")
    show.add_argument("--name", default="nextjs")
    args = parser.parse_args(argv)

    from runtime.logs import configure_logging
    from runtime.settings import settings_or_exit

    settings = settings_or_exit()
    configure_logging(settings.qai_log_format, settings.qai_log_level)
    # A stop signal unwinds the build, which removes its unfinished directory and kills npm or
    # the dev server (each in a session of its own, so no signal reaches them otherwise).
    raise_on_stop_signals()
    try:
        if args.command == "build":
            print(ensure_template(settings, args.name))
        else:
            print(load_manifest(args.name).model_dump_json(indent=2))
    except TemplateError as error:
        print(f"qai: {error}", file=sys.stderr)
        return 1
    except StopRequested as stop:
        log.info("template.build.stopped", signal=stop.signal.name)
        return 128 + stop.signal
    return 0


if __name__ == "__main__":
    sys.exit(main())
