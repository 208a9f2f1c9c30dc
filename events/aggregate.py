"""Base class for event-sourced aggregates: record past-tense events, rebuild by replay."""

from __future__ import annotations

import functools
import re
from datetime import datetime
from typing import Any, ClassVar, Self
from uuid import UUID

from .catalogue import DomainEvent, Message


@functools.cache
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Aggregate:
    """State rebuilt from its own events; methods check invariants, `_apply_*` change state."""

    stream_type: ClassVar[str]
    #: Bump when the snapshot shape changes: older snapshots are then ignored, not misread.
    snapshot_version: ClassVar[int] = 1

    def __init__(self, id: UUID) -> None:
        self.id = id
        self.version = 0
        self.last_recorded_at: datetime | None = None
        self._pending: list[DomainEvent] = []

    def _record(self, event: DomainEvent) -> None:
        self.apply(event)
        self._pending.append(event)

    def apply(self, event: DomainEvent, recorded_at: datetime | None = None) -> None:
        """Change state by one event; runs again on every replay, so no I/O and no checks."""
        getattr(self, f"_apply_{_snake(event.event_name)}")(event)
        self.version += 1
        if recorded_at is not None:
            self.last_recorded_at = recorded_at

    @property
    def pending_events(self) -> list[DomainEvent]:
        return list(self._pending)

    def mark_saved(self) -> None:
        self._pending.clear()

    def announce(self, message_type: type[Message], event: DomainEvent, at: datetime) -> Message:
        """Build a message this event announces (e.g. PetAvailable) from current state."""
        raise NotImplementedError(f"{type(self).__name__} cannot announce {message_type.__name__}")

    # --- snapshots ---
    def snapshot_state(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_snapshot(cls, id: UUID, version: int, state: dict[str, Any]) -> Self:
        raise NotImplementedError
