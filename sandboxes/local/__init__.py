"""The local sandbox backend: bubblewrap + overlayfs + cgroups; no cloud account, no internet.

Import `sandboxes.local.backend.LocalBackend`; this package stays import-light because the
per-sandbox supervisor process imports its siblings too.
"""
