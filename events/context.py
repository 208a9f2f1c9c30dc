"""Who asked for a change and why: stored as each event's metadata."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class CommandContext:
    """Correlation ties every event of one request together; causation names what caused it."""

    correlation_id: str
    actor_id: str | None = None
    causation_id: str | None = None

    @classmethod
    def system(cls, *, causation_id: str | None = None) -> CommandContext:
        return cls(correlation_id=str(uuid.uuid4()), actor_id=None, causation_id=causation_id)

    def as_metadata(self) -> dict[str, Any]:
        return {
            "correlation_id": self.correlation_id,
            "causation_id": self.causation_id,
            "actor_id": self.actor_id,
        }
