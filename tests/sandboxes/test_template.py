"""The Next.js sandbox template: its manifest, the cached offline build, and a real dev server.

The build (`npm ci` + a dev-server warm-up) is cached on disk under QAI_DATA_DIR, so only the
first run on a machine pays for it; tests that need it call `ensure_template` themselves.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from runtime.processes import free_port
from runtime.settings import Settings, get_settings
from sandboxes import manifest as manifest_module
from sandboxes import template as tpl
from sandboxes.manifest import TemplateError, load_manifest, template_source
from sandboxes.template import READY_MARKER, ensure_template, template_hash

SOURCE = template_source("nextjs")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


# --- the manifest and the sources --------------------------------------------------------------


def test_manifest_lists_exactly_the_components_on_disk() -> None:
    manifest = load_manifest()
    on_disk = sorted(p.stem for p in (SOURCE / "components" / "ui").glob("*.tsx"))
    assert manifest.components == on_disk
    assert {"button", "card", "dialog", "input", "select", "tabs", "table"} <= set(on_disk)


def test_manifest_lists_exactly_the_installed_packages() -> None:
    package = read_json(SOURCE / "package.json")
    declared = {**package["dependencies"], **package["devDependencies"]}
    assert sorted(load_manifest().preinstalled) == sorted(declared)
    for name, version in declared.items():
        # Exact versions; a prerelease (TypeScript 7's native preview) is pinned exactly too.
        pinned = re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.]+)?", version)
        assert pinned, f"{name} is not pinned: {version}"


def test_lockfile_is_complete_for_npm_ci() -> None:
    """Every package, and every platform build it may need, is in the lockfile.

    npm ci refuses a lockfile that lacks an optional platform package (e.g. a darwin build of
    @next/swc), which happens when it was made against a registry mirror missing that version.
    """
    package = read_json(SOURCE / "package.json")
    packages = read_json(SOURCE / "package-lock.json")["packages"]
    assert packages[""]["dependencies"] == package["dependencies"]
    assert packages[""]["devDependencies"] == package["devDependencies"]
    for name, version in {**package["dependencies"], **package["devDependencies"]}.items():
        assert packages[f"node_modules/{name}"]["version"] == version
    missing = [
        f"{where} -> {dep}"
        for where, entry in packages.items()
        for dep in entry.get("optionalDependencies", {})
        if f"node_modules/{dep}" not in packages and f"{where}/node_modules/{dep}" not in packages
    ]
    assert missing == []


def test_manifest_paths_and_start_command() -> None:
    manifest = load_manifest()
    for key, relative in manifest.paths.items():
        if key != "import_alias":
            assert (SOURCE / relative).exists(), f"{key}: {relative}"
    assert manifest.workdir == "/home/user"
    assert f"--port {manifest.port}" in manifest.start_cmd
    assert "next dev --turbopack" in manifest.start_cmd
    assert "NEXT_TELEMETRY_DISABLED=1" in manifest.start_cmd
    assert manifest.env["NEXT_TELEMETRY_DISABLED"] == "1"
    compile_page = (SOURCE / "compile_page.sh").read_text()
    assert "next dev --turbopack" in compile_page
    assert os.access(SOURCE / "compile_page.sh", os.X_OK)


# --- hashing and caching (on a small copy of the sources, with a stand-in build) ---------------


@pytest.fixture
def source_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The template's sources (no node_modules) under a temporary `sandbox-templates/`."""
    root = tmp_path / "sandbox-templates"
    shutil.copytree(SOURCE, root / "nextjs", ignore=shutil.ignore_patterns(*tpl.IGNORED_NAMES))
    monkeypatch.setattr(manifest_module, "TEMPLATES_SOURCE", root)
    return root / "nextjs"


@pytest.fixture
def scratch_settings(tmp_path: Path) -> Settings:
    return Settings(_env_file=None, qai_data_dir=tmp_path / "data")  # type: ignore[call-arg]


def test_hash_covers_sources_not_build_outputs(source_copy: Path) -> None:
    before = template_hash()
    (source_copy / "node_modules" / "x").mkdir(parents=True)
    (source_copy / "node_modules" / "x" / "index.js").write_text("1")
    (source_copy / ".next").mkdir()
    (source_copy / ".next" / "trace").write_text("1")
    assert template_hash() == before

    button = source_copy / "components" / "ui" / "button.tsx"
    button.write_text(button.read_text() + "\n// changed\n")
    changed = template_hash()
    assert changed != before

    lock = read_json(source_copy / "package-lock.json")
    lock["name"] = "renamed"
    (source_copy / "package-lock.json").write_text(json.dumps(lock))
    assert template_hash() not in (before, changed)


def _stand_in_build(calls: list[str]):
    """A `_build` that writes what a real one would, minus npm: the lock logic is what's tested."""

    def build(name: str, target: Path, *, digest: str, node_version: str) -> None:
        calls.append(digest)
        target.mkdir(parents=True)
        (target / READY_MARKER).write_text(json.dumps({"hash": digest}))

    return build


def test_second_call_reuses_and_a_change_rebuilds(
    source_copy: Path, scratch_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(tpl, "_build", _stand_in_build(calls))

    first = ensure_template(scratch_settings)
    assert ensure_template(scratch_settings) == first
    assert calls == [first.name.removeprefix("nextjs-")]

    page = source_copy / "app" / "page.tsx"
    page.write_text(page.read_text().replace("Your app", "The app"))
    second = ensure_template(scratch_settings)
    assert second != first
    assert len(calls) == 2
    assert (second / READY_MARKER).is_file()


def _lock_waiters(lock_file: Path) -> int:
    """Blocked flock requests on `lock_file`, as the kernel lists them (lines with `->`)."""
    inode = lock_file.stat().st_ino
    return sum(
        1
        for line in Path("/proc/locks").read_text().splitlines()
        if "->" in line and line.split()[-3].endswith(f":{inode}")
    )


def test_concurrent_builds_are_serialised(
    source_copy: Path, scratch_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    inside, release = threading.Event(), threading.Event()
    build = _stand_in_build(calls)

    def slow_build(name: str, target: Path, *, digest: str, node_version: str) -> None:
        inside.set()
        assert release.wait(60)
        build(name, target, digest=digest, node_version=node_version)

    monkeypatch.setattr(tpl, "_build", slow_build)
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_template(scratch_settings)))
        for _ in range(2)
    ]
    threads[0].start()
    assert inside.wait(60)
    threads[1].start()
    lock_file = scratch_settings.data_dir / "templates" / ".nextjs.lock"
    deadline = time.monotonic() + 60
    while _lock_waiters(lock_file) == 0:  # the second caller is queued on the lock
        assert time.monotonic() < deadline, "second caller never waited on the lock"
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(60)

    assert len(calls) == 1
    assert len(results) == 2
    assert results[0] == results[1]


@pytest.mark.slow
def test_failed_npm_ci_leaves_no_ready_build(source_copy: Path, scratch_settings: Settings) -> None:
    package = read_json(source_copy / "package.json")
    package["dependencies"]["left-pad"] = "1.3.0"  # not in the lockfile: npm ci refuses at once
    (source_copy / "package.json").write_text(json.dumps(package, indent=2))

    with pytest.raises(TemplateError) as caught:
        ensure_template(scratch_settings)

    message = str(caught.value)
    assert "npm ci failed with exit code" in message
    assert "left-pad" in message  # the tail of npm's own output
    templates = scratch_settings.data_dir / "templates"
    assert [p.name for p in templates.iterdir()] == [".nextjs.lock"]


# --- the real build and its dev server ---------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> Path:
    """The real template build, cached under QAI_DATA_DIR (slow only the first time)."""
    return ensure_template(get_settings())


@pytest.mark.slow
def test_real_build_is_ready_and_reused(built: Path) -> None:
    marker = built / READY_MARKER
    before = marker.stat()
    assert read_json(marker)["hash"] == built.name.removeprefix("nextjs-")
    assert (built / "node_modules" / ".bin" / "next").exists()
    assert (built / "components" / "ui" / "button.tsx").is_file()
    assert not (built / "template.json").exists()  # E2B files and the manifest stay behind
    assert not (built / "e2b.Dockerfile").exists()
    if os.geteuid() == 0:
        assert (built.stat().st_uid, built.stat().st_gid) == (201_000, 201_000)
        assert (built / "app" / "page.tsx").stat().st_uid == 201_000

    assert ensure_template(get_settings()) == built
    after = marker.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    siblings = [p.name for p in built.parent.iterdir() if p.name.endswith(".building")]
    assert siblings == []


DEMO_PAGE = """\
"use client";

import { useState } from "react";
import { Rocket } from "lucide-react";
import { Alert, AlertDescription, AlertTitle } from "@/components/ui/alert";
import { Badge } from "@/components/ui/badge";
import { Button } from "@/components/ui/button";
import { Card, CardContent, CardHeader, CardTitle } from "@/components/ui/card";
import { Checkbox } from "@/components/ui/checkbox";
import { Input } from "@/components/ui/input";
import { Label } from "@/components/ui/label";
import { Progress } from "@/components/ui/progress";
import {
  Select, SelectContent, SelectItem, SelectTrigger, SelectValue,
} from "@/components/ui/select";
import { Switch } from "@/components/ui/switch";
import { Tabs, TabsContent, TabsList, TabsTrigger } from "@/components/ui/tabs";
import { Table, TableBody, TableCell, TableRow } from "@/components/ui/table";
import { cn } from "@/lib/utils";

export default function Demo() {
  const [count, setCount] = useState(0);
  return (
    <main className={cn("p-8", count > 0 && "bg-muted")}>
      <Card>
        <CardHeader><CardTitle>qai demo title</CardTitle></CardHeader>
        <CardContent className="space-y-4">
          <Alert>
            <Rocket />
            <AlertTitle>Heads up</AlertTitle>
            <AlertDescription>alert text</AlertDescription>
          </Alert>
          <Badge variant="secondary">badge text</Badge>
          <Label htmlFor="name">Name</Label>
          <Input id="name" placeholder="Your name" />
          <Checkbox id="agree" />
          <Switch />
          <Progress value={40} />
          <Select>
            <SelectTrigger><SelectValue placeholder="Pick one" /></SelectTrigger>
            <SelectContent><SelectItem value="a">A</SelectItem></SelectContent>
          </Select>
          <Tabs defaultValue="one">
            <TabsList><TabsTrigger value="one">Tab one</TabsTrigger></TabsList>
            <TabsContent value="one">tab content</TabsContent>
          </Tabs>
          <Table>
            <TableBody><TableRow><TableCell>table cell</TableCell></TableRow></TableBody>
          </Table>
          <Button onClick={() => setCount(count + 1)}>Clicked {count} times</Button>
        </CardContent>
      </Card>
    </main>
  );
}
"""


@pytest.fixture(scope="module")
def dev_server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The manifest's start command, run in a copy of the build that has an extra demo page."""
    app = tmp_path_factory.mktemp("nextjs") / "app"
    shutil.copytree(built, app, symlinks=True)
    (app / "app" / "demo").mkdir()
    (app / "app" / "demo" / "page.tsx").write_text(DEMO_PAGE)
    manifest = load_manifest()
    port = free_port()
    command = manifest.start_cmd.replace(f"--port {manifest.port}", f"--port {port}").replace(
        "--hostname 0.0.0.0", "--hostname 127.0.0.1"
    )
    log = (app.parent / "dev.log").open("w")
    server = subprocess.Popen(
        ["bash", "-c", command],
        cwd=app,
        env={**os.environ, **manifest.env},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def fetch(url: str, *, timeout: float = 180) -> tuple[int, str]:
    """GET `url`, waiting while the server is not listening yet (or still compiling)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.mark.slow
def test_dev_server_renders_a_page_built_from_the_components(dev_server: str) -> None:
    status, html = fetch(f"{dev_server}/demo")
    assert status == 200, html[-2000:]
    for slot in ("card", "alert", "badge", "input", "checkbox", "switch", "progress", "button"):
        assert f'data-slot="{slot}"' in html, slot
    assert 'role="tablist"' in html
    assert "qai demo title" in html
    assert "tab content" in html

    stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+\.css[^"]*)"', html)
    assert stylesheets, "no stylesheet linked"
    css = "".join(fetch(f"{dev_server}{href}")[1] for href in stylesheets)
    # Tailwind 4 compiled the utilities the components use, with the theme's variables.
    assert ".bg-primary {" in css
    assert "background-color: var(--primary)" in css
    assert "--primary: " in css  # the theme's CSS variables from globals.css
    assert ".data-\\[state\\=checked\\]\\:bg-primary[data-state=" in css


@pytest.mark.slow
def test_dev_server_serves_the_placeholder_page(dev_server: str) -> None:
    status, html = fetch(f"{dev_server}/")
    assert status == 200
    assert "Your app will appear here" in html
