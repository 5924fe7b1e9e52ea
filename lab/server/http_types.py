"""The reply value the lab's HTTP handlers pass around."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class HttpReply:
    """Status, body and extra headers of one HTTP response."""

    status: int
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    content_type: str = "application/soap+xml;charset=UTF-8"
