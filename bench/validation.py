"""Figure: what validating an incoming message costs a handler, per event type.

Ours: events.incoming.event_from_message on a stored payload as the log holds it (the check
every handler run makes before any handler code: upcast, then strict JSON validation against
the declared pydantic model). Reference: json.loads of the same payload's JSON body, the
least any consumer pays to read the message at all. Both sides alternate in ABBA rounds;
each round times a batch of calls and the figure is the median per call. The notes give two
alternatives measured the same way: pydantic's lax validation (what handlers did before) and
the jsonschema library validating the AsyncAPI payload schema.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from .harness import Bench, Figure, Goal, abba, log

#: A typical stored payload per event type and version, as `append` writes them.
PAYLOADS = {
    ("PetRegistered", 2): {
        "name": "Buddy",
        "species": "dog",
        "age": 3,
        "shelter_id": str(uuid.uuid4()),
        "photo_url": "https://photos.example.org/buddy.jpg",
    },
    ("PetRegistered", 1): {"name": "Buddy", "species": "dog", "age": 3, "shelter_id": str(uuid.uuid4())},
    ("PetAdopted", 1): {
        "adoption_id": str(uuid.uuid4()),
        "customer_id": str(uuid.uuid4()),
        "shelter_id": str(uuid.uuid4()),
    },
    ("PetReturned", 1): {"adoption_id": str(uuid.uuid4()), "reason": "Allergic to the cat"},
    ("PetNameChanged", 1): {"old_name": "Buddy", "new_name": "Max"},
    ("AdoptionCompleted", 1): {
        "certificate_url": "https://petstore.example.org/api/adoptions/1/certificate",
        "vet_appointment_date": datetime(2026, 3, 2, 9, 30, tzinfo=UTC).isoformat(),
    },
}


def run(bench: Bench) -> list[Figure]:
    rounds, batch = int(bench.scale(20, 6)), int(bench.scale(20000, 5000))
    figures = []
    for (name, version), payload in PAYLOADS.items():
        log(f"validation: {name} v{version}, {rounds} rounds of {batch} calls a side")
        figures.append(figure(name, version, payload, rounds=rounds, batch=batch))
    return figures


def figure(name: str, version: int, payload: dict, *, rounds: int, batch: int) -> Figure:
    from events.incoming import event_from_message

    body = json.dumps(payload)
    times = per_call(
        {"ours": lambda: event_from_message(name, version, payload), "ref": lambda: json.loads(body)},
        rounds=rounds,
        batch=batch,
    )
    upcast_note = " (upcast to v2)" if (name, version) == ("PetRegistered", 1) else ""
    return Figure(
        f"validate {name} v{version}{upcast_note} per message",
        times["ours"],
        "µs",
        times["ref"],
        f"json.loads of the same {len(body)}-byte body",
        Goal("value", "<=", 20, "µs"),
        alternatives(name, version, payload, rounds=rounds, batch=batch),
    )


def alternatives(name: str, version: int, payload: dict, *, rounds: int, batch: int) -> list[str]:
    """Time the choices not taken, for the notes: lax pydantic and the jsonschema library."""
    import jsonschema

    from events.asyncapi import payload_schema
    from events.catalogue import EVENT_TYPES, upcast

    cls = EVENT_TYPES[name]
    wire = cls.model_validate(upcast(name, version, payload)).to_wire(
        stream_id=uuid.uuid4(), recorded_at=datetime.now(UTC)
    )
    checker = jsonschema.FormatChecker()
    validator = jsonschema.Draft202012Validator(payload_schema(cls), format_checker=checker)
    times = per_call(
        {
            "lax": lambda: cls.model_validate(upcast(name, version, payload)),
            "jsonschema": lambda: validator.validate(wire),
        },
        rounds=max(2, rounds // 4),
        batch=max(500, batch // 10),
    )
    return [
        f"pydantic lax model_validate (coerces '3' to 3): {times['lax']:.2f} µs; "
        f"jsonschema validating the wire payload with formats: {times['jsonschema']:.2f} µs"
    ]


def per_call(sides: dict[str, Callable[[], object]], *, rounds: int, batch: int) -> dict[str, float]:
    """Median µs per call of each side, over rounds in ABBA order after one warm-up batch each."""
    names = list(sides)
    samples: dict[str, list[float]] = {side: [] for side in names}
    for fn in sides.values():
        _batch(fn, batch)
    for _, which in abba(rounds):
        side = names[0] if which == "ours" else names[1]
        samples[side].append(_batch(sides[side], batch) / batch * 1e6)
    return {side: statistics.median(values) for side, values in samples.items()}


def _batch(fn: Callable[[], object], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start
