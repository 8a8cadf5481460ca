"""The first request of a gateway connection, as received (shared by previews and published
apps)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestHead:
    """The first request of a connection: its request line and headers, as received."""

    lines: list[bytes]

    @classmethod
    def parse(cls, raw: bytes) -> RequestHead:
        return cls(raw[: -len(b"\r\n\r\n")].split(b"\r\n"))

    def header(self, name: bytes) -> bytes | None:
        for line in self.lines[1:]:
            key, sep, value = line.partition(b":")
            if sep and key.strip().lower() == name:
                return value.strip()
        return None

    def path(self) -> bytes:
        parts = self.lines[0].split(b" ")
        return parts[1] if len(parts) > 1 else b""

    def render(self, *, set_headers: dict[bytes, bytes] | None = None) -> bytes:
        """The head again, with `set_headers` replacing (or added to) its headers."""
        wanted = dict(set_headers or {})
        lines = [self.lines[0]]
        for line in self.lines[1:]:
            key = line.partition(b":")[0].strip().lower()
            if key in wanted:
                continue
            lines.append(line)
        lines += [name + b": " + value for name, value in wanted.items()]
        return b"\r\n".join(lines) + b"\r\n\r\n"
