"""Network modes: `registry` installs npm packages through the host proxy, `none` cannot."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from runtime.settings import SandboxNetwork
from sandboxes.base import CommandFailedError
from sandboxes.local.backend import LocalBackend

INSTALL = "npm install --no-save --fetch-retries=0 --fetch-timeout=20000 is-number@7.0.0"

pytestmark = pytest.mark.sandbox


async def test_npm_install_works_in_registry_mode(
    make_backend: Callable[..., LocalBackend],
) -> None:
    sbx = await make_backend(qai_sandbox_network=SandboxNetwork.REGISTRY).create("tiny")
    try:
        await sbx.commands.run('echo \'{"name": "t", "version": "1.0.0"}\' > package.json')
        await sbx.commands.run(INSTALL, timeout=120)
        out = await sbx.commands.run("node -e \"console.log(require('is-number')(42))\"")
        assert out.stdout.strip() == "true"
    finally:
        await sbx.kill()


async def test_npm_install_fails_in_none_mode(make_backend: Callable[..., LocalBackend]) -> None:
    sbx = await make_backend(qai_sandbox_network=SandboxNetwork.NONE).create("tiny")
    try:
        await sbx.commands.run('echo \'{"name": "t", "version": "1.0.0"}\' > package.json')
        with pytest.raises(CommandFailedError) as failure:
            await sbx.commands.run(INSTALL, timeout=120)
        assert "npm error" in failure.value.stderr
        assert not await sbx.files.exists("node_modules/is-number")
    finally:
        await sbx.kill()


async def test_host_mode_shares_the_network(make_backend: Callable[..., LocalBackend]) -> None:
    """The documented opt-out: no network namespace, so the host's interfaces are visible."""
    sbx = await make_backend(qai_sandbox_network=SandboxNetwork.HOST).create("tiny")
    try:
        inside = (
            await sbx.commands.run("ls /sys/class/net 2>/dev/null || cat /proc/net/dev")
        ).stdout
        assert inside.strip() != ""
        env = (await sbx.commands.run("env")).stdout
        assert "HTTPS_PROXY" not in env
    finally:
        await sbx.kill()
