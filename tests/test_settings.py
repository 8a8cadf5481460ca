"""Settings: every one is documented on a page generated from its own description, and a bad
value is one clear line, not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runtime import settings_doc
from runtime.settings import Settings, SettingsError, get_settings

ROOT = Path(__file__).resolve().parent.parent


def test_the_configuration_page_is_generated_from_the_settings() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text()
    assert committed == settings_doc.render(), (
        f"docs/configuration.md is out of date: run {settings_doc.COMMAND} and commit it"
    )


def test_the_configuration_page_documents_every_setting() -> None:
    page = settings_doc.render()
    rows = [line for line in page.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        [row] = [row for row in rows if row.startswith(f"| `{name.upper()}` |")]
        assert " ".join((field.description or "").split()) in row.replace("\\|", "|")
    assert "| `QAI_MAX_ITERATIONS` | `15` |" in page and "Allowed: 1–200." in page
    assert "| `DATABASE_URL` | unset |" in page and "| `QAI_SANDBOX_BACKEND` | `local` |" in page


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("QAI_SANDBOX_BACKEND", "docker", "invalid setting QAI_SANDBOX_BACKEND: Input should be"),
        ("TEMPORAL_ADDRESS", "localhost", "invalid setting TEMPORAL_ADDRESS"),
        ("DATABASE_URL", "mysql://x", "invalid setting DATABASE_URL"),
        ("QAI_LOG_LEVEL", "LOUD", "invalid setting QAI_LOG_LEVEL"),
        ("QAI_MAX_ITERATIONS", "0", "invalid setting QAI_MAX_ITERATIONS"),
    ],
)
def test_invalid_values_name_the_setting(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    get_settings.cache_clear()
    try:
        with pytest.raises(SettingsError) as raised:
            get_settings()
    finally:
        get_settings.cache_clear()
    assert str(raised.value.code).startswith(f"qai: {expected}")


def test_worker_exits_with_one_line_on_a_bad_setting() -> None:
    env = dict(os.environ, QAI_SANDBOX_NETWORK="internet")
    result = subprocess.run(
        [sys.executable, "worker.py"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("qai: invalid setting QAI_SANDBOX_NETWORK")
