"""Temporal workflows: pure orchestration. `ProjectWorkflow` serialises a project's messages,
`CodeAgentWorkflow` runs the agent loop for one message."""
