"""The package registries this machine is set up to use: the only hosts `registry` mode allows."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

from sandboxes.local.proxy import allowed_from_urls

DEFAULT_NPM_REGISTRY = "https://registry.npmjs.org/"


@dataclass(frozen=True)
class Registries:
    npm_registry: str
    hosts: frozenset[tuple[str, int]]


@lru_cache(maxsize=1)
def discover() -> Registries:
    """Read npm's configuration once per process (`npm config list --json`: default and scoped)."""
    urls: list[str] = []
    registry = DEFAULT_NPM_REGISTRY
    npm = shutil.which("npm")
    if npm:
        try:
            out = subprocess.run(
                [npm, "config", "list", "--json"], capture_output=True, text=True, timeout=30
            ).stdout
            config = json.loads(out)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            config = {}
        registry = str(config.get("registry") or DEFAULT_NPM_REGISTRY)
        urls += [str(v) for k, v in config.items() if k.endswith(":registry") and v]
    urls.append(registry)
    return Registries(npm_registry=registry, hosts=frozenset(allowed_from_urls(urls)))
