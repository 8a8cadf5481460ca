"""The contract between workflows and activities (being written for issue 16)."""
