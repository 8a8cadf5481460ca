"""The README's main job: `make demo` brings the stack up, builds the example app with the
scripted model and prints qai's web UI page of the project and a preview URL that serves the
app, then the files, the API and Temporal's Web UI; the stack keeps running until stopped,
and a SIGTERM to make then stops all of it, the app's sandbox included."""

from __future__ import annotations

import re
import signal
from pathlib import Path

import httpx
import pytest

from runtime.preview_urls import loopback_target
from tests.stopping import link_project_templates, started

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]

MAKE_DEMO = ["make", "--no-print-directory", "-o", "setup", "demo"]  # -o: setup already ran


async def test_make_demo_builds_the_example_app_offline_and_stops_on_sigterm(
    embedded_data_dir: Path,
) -> None:
    link_project_templates(embedded_data_dir)
    async with started(MAKE_DEMO, embedded_data_dir) as demo:
        await demo.wait_for("the stack keeps running", limit=600)
        assert "SCRIPTED DEMO MODEL is in use" in demo.text
        preview = re.search(
            r"Preview \(HTTP 200\): (http://[0-9a-f-]{36}\.preview\.localhost:\d+/)", demo.text
        )
        assert preview, demo.text[-3000:]
        # The closing lines lead with qai's own web UI, at the address the stack printed.
        api = re.search(r"^  \|   API: +(http://127\.0\.0\.1:\d+)  ", demo.text, re.MULTILINE)
        assert api, demo.text[-3000:]
        opened = re.search(
            rf"^Open:    ({re.escape(api.group(1))}/projects/[0-9a-f-]{{36}})  ", demo.text, re.M
        )
        assert opened, demo.text[-3000:]
        closing = demo.text[opened.start() :]
        labels = ["Open:", "Preview (HTTP 200):", "Files:", "API:", "Temporal Web UI:", "CLI:"]
        starts = [closing.find(f"\n{label} ") for label in labels[1:]]
        assert -1 not in starts and starts == sorted(starts), closing
        assert re.search(
            r"^Temporal Web UI: http://[\d.]+:\d+/namespaces/default/workflows/agent-run-",
            closing,
            re.MULTILINE,
        )
        assert "\nWeb UI:" not in demo.text
        target, host = loopback_target(preview.group(1))
        async with httpx.AsyncClient(timeout=60) as client:
            page = await client.get(target, headers={"Host": host or ""})
            project_page = await client.get(opened.group(1))
        assert page.status_code == 200 and "Clear done" in page.text
        assert project_page.status_code == 200 and "Build a todo app" in project_page.text
        sandboxes = [path.name for path in (embedded_data_dir / "sandboxes").glob("sbx-*")]
        assert len(sandboxes) == 1, sandboxes  # the app's (the demo keeps no warm pool)

        # make forwards SIGTERM to the demo, which stops the worker, which stops the rest.
        await demo.stop_with(signal.SIGTERM)
        assert "demo: SIGTERM: stopping the stack" in demo.text
        demo.assert_nothing_left()
        assert not any((embedded_data_dir / "sandboxes").glob("sbx-*"))
