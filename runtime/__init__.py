"""Process-wide setup shared by the worker, the starter and the tests:
settings, logging, metrics, processes, the Temporal client and interceptors.

The lowest layer: it imports no other package of qai."""
