"""The preview gateway: one port, routed by host name, to each project's current sandbox."""
