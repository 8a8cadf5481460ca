"""The qai command line: start projects, send follow-ups, and look at the results.

    python starter.py new "A todo app with filters"
    python starter.py new "Build this page" --image mock.png
    python starter.py send PROJECT_ID "Add a dark mode toggle"
    python starter.py send PROJECT_ID "Use this logo in the header" --image logo.png
    python starter.py show PROJECT_ID
    python starter.py list
    python starter.py import https://github.com/you/app.git [--ref main] ["Add a footer"]
    python starter.py push PROJECT_ID https://github.com/you/app.git [--branch main] [--force]

`import` and `push` read a token for the remote from QAI_GIT_TOKEN (never from the command line,
which other users can see); it is used for that one fetch or push.
    python starter.py publish PROJECT_ID [--version FRAGMENT_ID]
    python starter.py unpublish PROJECT_ID

`new` and `send` wait for the reply and show live progress; `--no-wait` returns at once with the
ids, `--json` prints one JSON object. The exit status is 0 for a RESULT, 1 for an ERROR and 2 for
bad input. Submitting and waiting are `submission.py`'s, shared with every other client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, NoReturn

from temporalio.service import RPCError

from contract import MessageOutcome
from repos.importing import ImportRefused
from repos.push import PushFailed, push_project
from runtime.preview_urls import publish_url
from runtime.settings import Settings, settings_or_exit
from runtime.temporal import TemporalConnectionError, connect_temporal
from storage import images, queries
from storage.db import Database
from storage.errors import ProjectNotFoundError, StorageError
from storage.image_files import MAX_IMAGE_BYTES, MAX_IMAGES
from storage.models import Message, MessageRole
from storage.views import Prices, message_usage
from submission import (
    ImageUpload,
    InvalidSubmission,
    Waiting,
    check_project_id,
    check_publish,
    check_submission,
    check_unpublish,
    import_project,
    outcome_of,
    send,
    signal_project,
    wait_for_publication,
    wait_for_reply,
    wait_unpublished,
)

EXIT_ERROR_REPLY = 1
EXIT_USAGE = 2


def ui_link(settings: Settings, workflow_id: str) -> str:
    return (
        f"http://localhost:{settings.qai_temporal_ui_port}/namespaces/"
        f"{settings.temporal_namespace}/workflows/{workflow_id}"
    )


class Progress:
    """One status line, rewritten in place on a terminal and printed on change elsewhere."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._last = ""

    def show(self, waiting: Waiting) -> None:
        if not self._enabled:
            return
        progress = waiting.progress
        if waiting.no_worker and (progress is None or progress.iteration == 0):
            text = waiting.no_worker
        elif progress is not None and progress.phase == "waiting":
            text = "waiting for a free sandbox (this host runs as many as it may)"
        elif progress is None or progress.iteration == 0:
            text = f"waiting for the agent ({progress.phase if progress else 'queued'})"
        else:
            text = f"iteration {progress.iteration} of {progress.max_iterations}"
            text += f" · running {progress.current_tool}" if progress.current_tool else ""
            phase = waiting.slot_wait or progress.phase
            text += f" · {phase}" if not progress.current_tool else ""
        line = f"{text} · {waiting.elapsed:.0f}s"
        if sys.stderr.isatty():
            sys.stderr.write("\r\033[K" + line)
            sys.stderr.flush()
        elif text != self._last:
            print(line, file=sys.stderr, flush=True)
        self._last = text

    def done(self) -> None:
        if self._enabled and sys.stderr.isatty():
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _fragment_json(message: Message | None) -> dict[str, Any] | None:
    if message is None or message.fragment is None:
        return None
    return {
        "sandbox_url": message.fragment.sandbox_url,
        "title": message.fragment.title,
        "files": message.fragment.files,
        "checks": message.fragment.checks,
    }


def _checks_line(checks: dict[str, Any] | None) -> str | None:
    """`passed`, `failed` with the remaining errors, or `skipped` with why; None before checks."""
    if not checks:
        return None
    status = checks["status"]
    if status == "failed":
        errors = checks["errors"]
        lines = [f"failed ({len(errors)} error{'s' if len(errors) != 1 else ''} left)"]
        lines += [
            f"          {e['file'] or ''}{':' + str(e['line']) if e['line'] else ''}"
            f" {e['message']}".rstrip()
            for e in errors[:5]
        ]
        return "\n".join(lines)
    if status == "skipped":
        return f"skipped ({'; '.join(checks['skipped'])})"
    return "passed"


def _print_outcome(
    settings: Settings, project_id: uuid.UUID, outcome: MessageOutcome, reply: Message | None
) -> None:
    if outcome.status.value == "RESULT":
        print(f"✔ {outcome.title or 'Done'}")
        print(f"\n{outcome.content}\n")
        if reply is not None and reply.fragment is not None:
            print(f"Preview:  {reply.fragment.sandbox_url}")
            print(f"Files:    {', '.join(sorted(reply.fragment.files)) or '(none)'}")
            checks = _checks_line(reply.fragment.checks)
            if checks:
                print(f"Checks:   {checks}")
    else:
        print(f"✘ {outcome.content}")
    print(f"Project:  {project_id}")
    if settings.qai_public_url:  # the web UI where users reach it
        print(f"Open:     {settings.qai_public_url}/projects/{project_id}")
    print(f"Run:      {ui_link(settings, outcome.workflow_id)}")
    usage = message_usage(reply, Prices.of(settings)) if reply is not None else None
    if usage is not None:
        print(f"Tokens:   {usage_line(usage)}")


def usage_line(usage: dict[str, Any]) -> str:
    """`12,345 (prompt 10,000 of which cached 2,048, completion 2,345), 5 model calls[, cost]`."""
    line = (
        f"{usage['total_tokens']:,} (prompt {usage['prompt_tokens']:,} of which cached "
        f"{usage['cached_tokens']:,}, completion {usage['completion_tokens']:,}), "
        f"{usage['model_calls']} model call{'s' if usage['model_calls'] != 1 else ''}"
    )
    if "cost" in usage:
        line += f", cost {usage['cost']:.4f}"
    return line


def read_images(paths: Sequence[str]) -> list[ImageUpload]:
    """The files named by `--image`, read (up to just past the size limit) for checking."""
    if len(paths) > MAX_IMAGES:
        raise InvalidSubmission(
            f"{len(paths)} images were attached; the limit is {MAX_IMAGES} per message"
        )
    uploads = []
    for name in paths:
        path = Path(name)
        try:
            with path.open("rb") as file:
                data = file.read(MAX_IMAGE_BYTES + 1)
        except FileNotFoundError:
            raise InvalidSubmission(f"{name}: no such file") from None
        except IsADirectoryError:
            raise InvalidSubmission(f"{name} is a directory, not an image") from None
        except OSError as error:
            raise InvalidSubmission(f"{name} cannot be read ({error.strerror})") from None
        uploads.append(ImageUpload(path.name, data))
    return uploads


GIT_TOKEN_VARIABLE = "QAI_GIT_TOKEN"


def _git_token() -> str | None:
    return os.environ.get(GIT_TOKEN_VARIABLE) or None


async def _push(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    project_id = check_project_id(args.project_id)
    pushed = await push_project(
        db,
        settings,
        project_id,
        remote_url=args.remote_url,
        branch=args.branch,
        token=_git_token(),
        force=args.force,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "remote_url": pushed.remote_url,
                    "branch": pushed.branch,
                    "commit": pushed.commit,
                    "versions": pushed.versions,
                    "forced": pushed.forced,
                }
            )
        )
    else:
        state = "already up to date" if pushed.up_to_date else f"{pushed.versions} version(s)"
        print(f"✔ Pushed {pushed.remote_url} {pushed.branch} at {pushed.commit[:12]} ({state})")
    return 0


async def _import(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    client = await connect_temporal(settings)
    imported = await import_project(
        client, db, settings, args.repo_url, ref=args.ref, token=_git_token(), prompt=args.prompt
    )
    ids = {
        "project_id": str(imported.project_id),
        "imported_message_id": str(imported.imported_message_id),
        "commit": imported.commit,
        "files": imported.fetched.files,
    }
    if imported.submission is None or args.no_wait:
        if imported.submission is not None:
            ids["message_id"] = str(imported.submission.message_id)
        if args.json:
            print(json.dumps(ids))
        else:
            print(f"✔ Imported {imported.fetched.url} at {imported.commit}")
            print(f"Project:  {imported.project_id}")
        return 0
    if not args.json:
        print(f"✔ Imported {imported.fetched.url} at {imported.commit}", file=sys.stderr)
    progress = Progress(not args.json)
    message_id = imported.submission.message_id
    try:
        reply = await wait_for_reply(client, db, settings, message_id, on_wait=progress.show)
    finally:
        progress.done()
    outcome = outcome_of(reply, message_id)
    if args.json:
        print(
            json.dumps(
                {
                    **ids,
                    "message_id": str(message_id),
                    "status": outcome.status.value,
                    "content": outcome.content,
                    "fragment": _fragment_json(reply),
                },
                ensure_ascii=False,
            )
        )
    else:
        _print_outcome(settings, imported.project_id, outcome, reply)
    return 0 if outcome.status.value == "RESULT" else EXIT_ERROR_REPLY


async def _create_or_send(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    project_id = check_project_id(args.project_id) if args.command == "send" else None
    uploads = read_images(args.image)
    try:
        submitted = await check_submission(db, args.prompt, project_id=project_id, uploads=uploads)
        client = await connect_temporal(settings)
    except ProjectNotFoundError as missing:
        # Its row may be missing only because no worker has recorded its first message yet.
        try:
            client = await connect_temporal(settings)
        except TemporalConnectionError:
            raise missing from None
        submitted = await check_submission(
            db, args.prompt, project_id=project_id, client=client, uploads=uploads
        )
    await send(client, db, settings, submitted)
    if args.no_wait:
        ids = {
            "project_id": str(submitted.project_id),
            "message_id": str(submitted.message_id),
            "workflow_id": submitted.workflow_id,
        }
        print(json.dumps(ids) if args.json else "\n".join(f"{k}: {v}" for k, v in ids.items()))
        return 0
    progress = Progress(not args.json)
    try:
        reply = await wait_for_reply(
            client, db, settings, submitted.message_id, on_wait=progress.show
        )
    finally:
        progress.done()
    outcome = outcome_of(reply, submitted.message_id)
    if args.json:
        print(
            json.dumps(
                {
                    "project_id": str(submitted.project_id),
                    "message_id": str(submitted.message_id),
                    "workflow_id": outcome.workflow_id,
                    "status": outcome.status.value,
                    "content": outcome.content,
                    "fragment": _fragment_json(reply),
                    "usage": message_usage(reply, Prices.of(settings)) if reply else None,
                },
                ensure_ascii=False,
            )
        )
    else:
        _print_outcome(settings, submitted.project_id, outcome, reply)
    return 0 if outcome.status.value == "RESULT" else EXIT_ERROR_REPLY


async def _show(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    project_id = check_project_id(args.project_id)
    async with db.session() as session:
        project = await queries.get_project(session, project_id)
        if project is None:
            raise ProjectNotFoundError(project_id)
        messages = await queries.get_messages(session, project_id)
        attached = await images.for_messages(session, [m.id for m in messages])
    if args.json:
        print(
            json.dumps(
                {
                    "project_id": str(project.id),
                    "name": project.name,
                    "conversation_summary": project.conversation_summary,
                    "messages": [
                        {
                            "id": str(m.id),
                            "role": m.role.value,
                            "type": m.type.value,
                            "content": m.content,
                            "created_at": m.created_at.isoformat(),
                            "fragment": _fragment_json(m),
                            "images": [
                                {
                                    "id": image.image_id,
                                    "name": image.name,
                                    "content_type": image.content_type,
                                    "width": image.width,
                                    "height": image.height,
                                }
                                for image in attached.get(m.id, [])
                            ],
                            "usage": message_usage(m, Prices.of(settings)),
                        }
                        for m in messages
                    ],
                },
                ensure_ascii=False,
            )
        )
        return 0
    print(f"{project.name}  ({project.id})\n")
    for m in messages:
        who = "You" if m.role == MessageRole.USER else "Agent"
        marker = " [ERROR]" if m.type.value == "ERROR" else ""
        print(f"{m.created_at:%Y-%m-%d %H:%M}  {who}{marker}: {m.content}")
        for image in attached.get(m.id, []):
            print(f"    {image.label()}")
        if m.fragment is not None:
            print(f"    {m.fragment.title} · {m.fragment.sandbox_url}")
            print(f"    files: {', '.join(sorted(m.fragment.files))}")
    return 0


async def _publish(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    """Queue the publish, wait for the build, and print the app's URL (or the build's error)."""
    project_id = check_project_id(args.project_id)
    version = None
    if args.version:
        try:
            version = uuid.UUID(args.version)
        except ValueError:
            raise InvalidSubmission(f"{args.version!r} is not a version (fragment) id") from None
    request = await check_publish(db, project_id, version)  # before Temporal: bad input is 2
    client = await connect_temporal(settings)
    await signal_project(client, settings, project_id, "publish", request)
    if not args.json:
        print(f"Building version {request.fragment_id} for production…", file=sys.stderr)
    row = await wait_for_publication(db, request.publication_id)
    url = publish_url(settings, project_id)
    live = row.status == "live"
    if args.json:
        print(
            json.dumps(
                {
                    "project_id": str(project_id),
                    "publication_id": str(row.id),
                    "fragment_id": str(row.fragment_id),
                    "status": row.status,
                    "mode": row.mode,
                    "url": url if live else None,
                    "error": row.error,
                }
            )
        )
    elif live:
        print(url)
    else:
        print(f"✘ The publish failed:\n{row.error}", file=sys.stderr)
    return 0 if live else EXIT_ERROR_REPLY


async def _unpublish(args: argparse.Namespace, settings: Settings, db: Database) -> int:
    project_id = check_project_id(args.project_id)
    request = await check_unpublish(db, project_id)
    client = await connect_temporal(settings)
    await signal_project(client, settings, project_id, "unpublish", request)
    await wait_unpublished(db, project_id)
    if args.json:
        print(json.dumps({"project_id": str(project_id), "published": False}))
    else:
        print(f"Unpublished: {publish_url(settings, project_id)} now answers 404.")
    return 0


async def _list(args: argparse.Namespace, db: Database) -> int:
    async with db.session() as session:
        rows = await queries.list_projects(session)
    if args.json:
        listing = [
            {
                "project_id": str(row.project.id),
                "name": row.project.name,
                "messages": row.message_count,
                "updated_at": row.project.updated_at.isoformat(),
            }
            for row in rows
        ]
        print(json.dumps(listing, ensure_ascii=False))
        return 0
    if not rows:
        print('No projects yet. Start one with: python starter.py new "A todo app"')
    for row in rows:
        project = row.project
        print(
            f"{project.id}  {project.updated_at:%Y-%m-%d %H:%M}  "
            f"{row.message_count:>3} msgs  {project.name}"
        )
    return 0


async def run(args: argparse.Namespace, settings: Settings) -> int:
    from storage.embedded import database_url_for

    async with AsyncExitStack() as stack:
        url = await stack.enter_async_context(database_url_for(settings))
        db = Database(url)
        stack.push_async_callback(db.dispose)
        if args.command in ("new", "send"):
            return await _create_or_send(args, settings, db)
        if args.command == "show":
            return await _show(args, settings, db)
        if args.command == "push":
            return await _push(args, settings, db)
        if args.command == "import":
            return await _import(args, settings, db)
        if args.command == "publish":
            return await _publish(args, settings, db)
        if args.command == "unpublish":
            return await _unpublish(args, settings, db)
        return await _list(args, db)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="starter.py", description="Turn a prompt into a running web app."
    )
    commands = root.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="create a project from a prompt and build it")
    new.add_argument("prompt")
    send = commands.add_parser("send", help="send a follow-up message to a project")
    send.add_argument("project_id")
    send.add_argument("prompt")
    for sub in (new, send):
        sub.add_argument("--no-wait", action="store_true", help="return at once with the ids")
        sub.add_argument(
            "--image",
            action="append",
            default=[],
            metavar="FILE",
            help=f"attach an image (PNG, JPEG, WebP or GIF; up to {MAX_IMAGES}, "
            f"{MAX_IMAGE_BYTES // 1024 // 1024} MB each)",
        )
    show = commands.add_parser("show", help="show a project's messages and fragments")
    show.add_argument("project_id")
    commands.add_parser("list", help="list projects")
    imports = commands.add_parser(
        "import", help="start a project from a git repository (token: $QAI_GIT_TOKEN)"
    )
    imports.add_argument("repo_url")
    imports.add_argument("prompt", nargs="?", default=None, help="a first change to make")
    imports.add_argument("--ref", default=None, help="branch, tag or commit (default: HEAD)")
    imports.add_argument("--no-wait", action="store_true", help="return at once with the ids")
    push = commands.add_parser(
        "push", help="push a project's versions to a git remote (token: $QAI_GIT_TOKEN)"
    )
    push.add_argument("project_id")
    push.add_argument("remote_url")
    push.add_argument("--branch", default="main")
    push.add_argument("--force", action="store_true", help="replace the branch's commits")
    publishing = commands.add_parser(
        "publish", help="build a version for production and print its stable URL"
    )
    publishing.add_argument("project_id")
    publishing.add_argument("--version", help="the fragment id to publish (default: the latest)")
    unpublishing = commands.add_parser("unpublish", help="take the published app down")
    unpublishing.add_argument("project_id")
    for sub in commands.choices.values():
        sub.add_argument("--json", action="store_true", help="print one JSON object")
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    settings = settings_or_exit()
    from runtime.logs import configure_logging

    configure_logging(settings.qai_log_format, "WARNING")
    try:
        return asyncio.run(run(args, settings))
    except (InvalidSubmission, ProjectNotFoundError) as error:
        print(f"qai: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (PushFailed, ImportRefused) as error:
        print(f"qai: {error}", file=sys.stderr)
        return EXIT_USAGE if error.status < 500 else EXIT_ERROR_REPLY
    except (TemporalConnectionError, StorageError) as error:
        print(f"qai: {error}", file=sys.stderr)
        return EXIT_ERROR_REPLY
    except RPCError as error:
        print(
            f"qai: cannot reach Temporal at {settings.temporal_address} ({error.message}). "
            "Is `python worker.py --dev` running?",
            file=sys.stderr,
        )
        return EXIT_ERROR_REPLY
    except KeyboardInterrupt:
        print("\nqai: stopped waiting; the run goes on in the worker.", file=sys.stderr)
        return 130


def exit_now(code: int) -> NoReturn:
    """Exit without interpreter finalization, once everything is closed and flushed.

    The Temporal SDK's Rust runtime keeps threads that can still hold the GIL while Python
    finalizes, which aborts the process ("PyGILState_Release", exit -6) and turns a finished
    command into a crash. Nothing is left to clean up here: `main` closed the database and
    the client, so skipping finalization loses nothing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_now(main())
