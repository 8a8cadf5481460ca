"""Temporal activities: every side effect of a run (sandbox, model, tools, database) lives here."""
