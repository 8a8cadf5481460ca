"""The code agent: its system prompt, its tools and its model client."""
