"""Process-wide setup shared by the worker, the starter and the tests:
settings, logging, the Temporal client, interceptors and the local stack."""
