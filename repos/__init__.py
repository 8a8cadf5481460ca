"""Projects as git repositories: their versions as commits, served to git clients, pushed to a
remote, and repositories imported as a project's first version. Real git does the work."""
