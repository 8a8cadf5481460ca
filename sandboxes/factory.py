"""Choose the sandbox backend named by QAI_SANDBOX_BACKEND."""

from __future__ import annotations

from runtime.settings import SandboxBackendName, Settings
from sandboxes.base import SandboxBackend


def sandbox_backend(settings: Settings) -> SandboxBackend:
    """`local` (bubblewrap, the default) or `e2b`; a backend's module is imported only if chosen."""
    if settings.qai_sandbox_backend == SandboxBackendName.E2B:
        from sandboxes.e2b_backend import E2BBackend

        return E2BBackend(settings)
    from sandboxes.local.backend import LocalBackend

    return LocalBackend(settings)
