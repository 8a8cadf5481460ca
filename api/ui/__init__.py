"""The web UI: server-rendered pages served by the API process at `/`."""
