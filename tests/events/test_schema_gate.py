"""The schema gate: the catalogue keeps every locked schema, or bumps the version with an upcaster."""

import copy
import io
import json

import pytest
from django.core.management import CommandError, call_command

from events import catalogue, schema_lock
from events.catalogue import PetAdopted
from events.compatibility import breaking_changes, example
from events.schema_lock import current_schemas, gate_problems, locked_schemas, upcast_problems

V2 = current_schemas()[("PetRegistered", 2)]


def test_the_catalogue_passes_the_gate_against_the_committed_lock():
    assert schema_lock.check() == []


def test_every_event_version_in_use_is_locked():
    assert set(current_schemas()) <= set(locked_schemas())


def test_older_locked_versions_upcast_to_valid_current_events():
    old = {key: s for key, s in locked_schemas().items() if key == ("PetRegistered", 1)}

    assert old and upcast_problems(old) == []


# --------------------------------------------------------------- the checker, change by change


def changed(edit) -> dict:
    schema = copy.deepcopy(V2)
    edit(schema)
    return schema


BREAKING = {
    "remove a field": (lambda s: s["properties"].pop("photoUrl"), "photoUrl: removed"),
    "remove a required field": (
        lambda s: (s["properties"].pop("age"), s["required"].remove("age")),
        "age: removed",
    ),
    "retype a field": (lambda s: s["properties"]["age"].update(type="string"), "age: type integer -> string"),
    "add a required field": (
        lambda s: (s["properties"].update(colour={"type": "string"}), s["required"].append("colour")),
        "colour: added as required",
    ),
    "make an optional field required": (lambda s: s["required"].append("photoUrl"), "photoUrl: now required"),
    "make a required field optional": (lambda s: s["required"].remove("age"), "age: no longer required"),
    "narrow an enum": (
        lambda s: s["properties"]["species"]["enum"].remove("bird"),
        "species: enum narrowed, lost ['bird']",
    ),
    "widen an enum": (
        lambda s: s["properties"]["species"]["enum"].append("hamster"),
        "species: enum widened, gained ['hamster']",
    ),
    "change a format": (
        lambda s: s["properties"]["shelterId"].update(format="uri"),
        "shelterId: format 'uuid' -> 'uri'",
    ),
    "drop a format": (lambda s: s["properties"]["petId"].pop("format"), "petId: format 'uuid' -> (none)"),
    "tighten a bound": (lambda s: s["properties"]["name"].update(maxLength=50), "name: maxLength 100 -> 50"),
    "loosen a bound": (lambda s: s["properties"]["age"].update(maximum=200), "age: maximum 100 -> 200"),
}


@pytest.mark.parametrize("what", BREAKING)
def test_breaking_change_is_reported(what):
    edit, expected = BREAKING[what]

    changes = breaking_changes(V2, changed(edit))

    assert any(change.startswith(expected) for change in changes), changes


COMPATIBLE = {
    "add an optional field": lambda s: s["properties"].update(colour={"type": "string"}),
    "reword a description": lambda s: s["properties"]["name"].update(description="What the shelter calls it"),
    "add a title": lambda s: s.update(title="Pet Registered"),
    "reorder required fields": lambda s: s["required"].reverse(),
    "reorder enum values": lambda s: s["properties"]["species"]["enum"].reverse(),
}


@pytest.mark.parametrize("what", COMPATIBLE)
def test_compatible_change_is_not_reported(what):
    assert breaking_changes(V2, changed(COMPATIBLE[what])) == []


def test_changes_inside_nested_objects_and_arrays_are_found():
    old = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}
    new = {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "integer"}}}}

    assert breaking_changes(old, new) == ["tags[]: type string -> integer"]


def test_example_instances_follow_the_schema():
    required_only, everything = example(V2), example(V2, all_fields=True)

    assert set(required_only) == set(V2["required"]) and "photoUrl" in everything
    assert required_only["species"] == "dog" and required_only["age"] == 0
    assert required_only["name"] == "x" and required_only["petId"].count("-") == 4


# ----------------------------------------------------------------------- the gate as a whole


def gate(*, locked, current, upcasters=frozenset()) -> list[str]:
    return gate_problems(locked=locked, current=current, upcasters=set(upcasters), stored={"PetRegistered"})


def test_a_breaking_change_without_a_version_bump_fails():
    narrowed = changed(BREAKING["narrow an enum"][0])

    problems = gate(locked={("PetRegistered", 2): V2}, current={("PetRegistered", 2): narrowed})

    assert problems == [
        "PetRegistered v2: species: enum narrowed, lost ['bird'] - bump its version and add an upcaster "
        "from v2",
        "PetRegistered v2: no upcaster from v1 to v2 (events of v1 are in the log)",
    ]


def test_a_bumped_version_without_an_upcaster_fails():
    v3 = changed(BREAKING["add a required field"][0])
    locked = {("PetRegistered", 2): V2, ("PetRegistered", 3): v3}

    problems = gate(locked=locked, current={("PetRegistered", 3): v3}, upcasters={("PetRegistered", 1)})

    assert problems == ["PetRegistered v3: no upcaster from v2 to v3 (events of v2 are in the log)"]


def test_a_bumped_version_with_its_upcaster_and_lock_passes():
    v3 = changed(BREAKING["add a required field"][0])
    locked = {("PetRegistered", 2): V2, ("PetRegistered", 3): v3}
    upcasters = {("PetRegistered", 1), ("PetRegistered", 2)}

    assert gate(locked=locked, current={("PetRegistered", 3): v3}, upcasters=upcasters) == []


def test_a_new_version_must_be_locked_and_types_never_disappear():
    problems = gate(locked={("PetAdopted", 1): {}}, current={("PetRegistered", 1): V2})

    assert problems == [
        "PetRegistered v1 is not in the lock: run `python manage.py schema_lock`",
        "PetAdopted v1 is locked but no longer declared: type names never go away",
    ]


def test_an_unlocked_optional_field_asks_for_the_lock_to_be_refreshed():
    wider = changed(COMPATIBLE["add an optional field"])

    problems = gate(locked={("PetRegistered", 1): V2}, current={("PetRegistered", 1): wider})

    assert problems == ["PetRegistered v1 changed compatibly: run `python manage.py schema_lock`"]


def test_bumping_a_real_event_without_an_upcaster_fails_the_gate(monkeypatch):
    monkeypatch.setattr(PetAdopted, "version", 2)

    problems = schema_lock.check()

    assert "PetAdopted v2 is not in the lock: run `python manage.py schema_lock`" in problems
    assert "PetAdopted v2: no upcaster from v1 to v2 (events of v1 are in the log)" in problems


def test_an_upcaster_that_leaves_old_events_invalid_fails_the_gate(monkeypatch):
    monkeypatch.setitem(catalogue.UPCASTERS, ("PetRegistered", 1), lambda payload: {**payload, "age": "0"})

    [problem] = upcast_problems({("PetRegistered", 1): locked_schemas()[("PetRegistered", 1)]})[:1]

    assert (
        problem.startswith("PetRegistered v1 example") and "age: Input should be a valid integer" in problem
    )


# ---------------------------------------------------------------------------- the command


def test_command_writes_new_versions_and_refuses_breaking_changes(tmp_path):
    call_command("schema_lock", dir=tmp_path, stdout=io.StringIO())
    assert {p.name for p in tmp_path.glob("*.json")} >= {"PetRegistered.v2.json", "PetAdopted.v1.json"}

    locked = tmp_path / "PetRegistered.v2.json"
    narrowed = json.loads(locked.read_text())
    narrowed["properties"]["species"]["enum"].append("hamster")  # the lock knew more species
    locked.write_text(json.dumps(narrowed))
    with pytest.raises(CommandError, match="species: enum narrowed, lost \\['hamster'\\]"):
        call_command("schema_lock", dir=tmp_path)
    assert "hamster" in locked.read_text()  # a breaking change never overwrites the lock


def test_command_check_writes_nothing(tmp_path):
    with pytest.raises(CommandError, match="PetRegistered v2 is not in the lock"):
        call_command("schema_lock", dir=tmp_path, check=True)
    assert not list(tmp_path.glob("*.json"))
