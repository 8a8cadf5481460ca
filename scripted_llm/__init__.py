"""An OpenAI-compatible scripted model server, used by tests and the offline demo."""

from pathlib import Path

from scripted_llm.script import Script, ScriptError, load_script
from scripted_llm.server import (
    RequestRecord,
    ScriptedLLMServer,
    scripted_llm_server,
)

DEMO_SCRIPT = Path(__file__).parent / "scripts" / "demo.json"

__all__ = [
    "DEMO_SCRIPT",
    "RequestRecord",
    "Script",
    "ScriptError",
    "ScriptedLLMServer",
    "load_script",
    "scripted_llm_server",
]
