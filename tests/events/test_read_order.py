"""Readers of the whole log never skip a late commit, and a rollback never stalls them.

PostgreSQL assigns positions at insert and transactions commit in any order; these tests hold
one transaction open in a second thread (its own connection) while another commits.
"""

import threading
import time
import uuid

import pytest
from django.db import connection

from adoptions.domain import Pet
from adoptions.services import pets
from events.models import StoredEvent
from events.store import LogPosition, read_all
from tests.support.threads import HeldTransaction

pytestmark = [pytest.mark.django_db(transaction=True)]

META = {"correlation_id": "test", "causation_id": None, "actor_id": None}


def new_pet() -> Pet:
    return Pet.register(pet_id=uuid.uuid4(), name="P", species="cat", age=1, shelter_id=uuid.uuid4())


def read_all_settled(*, after: LogPosition | None = None, count: int) -> list:
    """read_all once at least `count` events are readable (10 s at most).

    The horizon is cluster-wide: any transaction open on the same server, in any database,
    holds it back for as long as it runs. On a shared CI server that is a few milliseconds.
    """
    deadline = time.monotonic() + 10
    after = after or LogPosition()
    while len(rows := read_all(after=after)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def test_reader_waits_for_a_lower_position_that_commits_last(require_postgres):
    slow, fast = new_pet(), new_pet()
    holder = HeldTransaction(lambda: pets.save(slow, metadata=META))
    holder.start()
    assert holder.did_work.wait(10)

    pets.save(fast, metadata=META)  # commits first, with the higher position
    seen_while_open = read_all()

    holder.finish()
    seen_after = read_all_settled(count=2)

    assert seen_while_open == []  # the reader does not run ahead of the open transaction
    positions = {e.stream_id: e.position for e in StoredEvent.objects.all()}
    assert positions[slow.id] < positions[fast.id]
    assert [e.stream_id for e in seen_after] == [slow.id, fast.id]


def test_checkpointed_reader_gets_an_event_with_lower_position_but_newer_transaction(require_postgres):
    """R takes its transaction id first; S takes a later one but inserts its event first."""
    first_xid_taker, later_xid_taker = new_pet(), new_pet()
    r_has_xid, r_go = threading.Event(), threading.Event()

    def take_xid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")

    def r_work():
        r_has_xid.set()
        assert r_go.wait(10)
        pets.save(first_xid_taker, metadata=META)

    r = HeldTransaction(r_work, before_work=take_xid)
    r.start()
    assert r_has_xid.wait(10)
    s = HeldTransaction(lambda: pets.save(later_xid_taker, metadata=META), before_work=take_xid)
    s.start()
    assert s.did_work.wait(10)  # S inserted first: lower position, newer transaction
    r_go.set()
    assert r.did_work.wait(10)
    r.finish()  # R commits while S is still open

    reader = LogPosition()
    batch = read_all(after=reader)
    reader = LogPosition.of(batch[-1]) if batch else reader
    s.finish()
    batch += read_all_settled(after=reader, count=2 - len(batch))

    positions = {e.stream_id: e.position for e in StoredEvent.objects.all()}
    assert positions[later_xid_taker.id] < positions[first_xid_taker.id]
    ids = [e.stream_id for e in batch]
    assert sorted(ids) == sorted([first_xid_taker.id, later_xid_taker.id])
    assert len(ids) == 2  # nothing skipped, nothing twice


def test_a_rolled_back_transaction_never_stalls_the_reader(require_postgres):
    doomed, survivor = new_pet(), new_pet()
    holder = HeldTransaction(lambda: pets.save(doomed, metadata=META), rollback=True)
    holder.start()
    assert holder.did_work.wait(10)
    pets.save(survivor, metadata=META)
    assert read_all() == []

    holder.finish()

    assert [e.stream_id for e in read_all_settled(count=1)] == [survivor.id]


def test_read_all_rows_carry_what_the_orm_reads_and_parse_to_the_same_event():
    from events.store import RecordedEvent

    pet = new_pet()
    pets.save(pet, metadata=META)
    [row] = read_all_settled(count=1)
    stored = StoredEvent.objects.get(event_id=row.event_id)

    assert (row.recorded_at, row.recorded_at.tzinfo) == (stored.recorded_at, stored.recorded_at.tzinfo)
    assert (row.stream_id, row.position, row.transaction_id) == (
        stored.stream_id,
        stored.position,
        stored.transaction_id,
    )
    replayed, loaded = RecordedEvent.from_log_row(row), RecordedEvent.from_row(stored)
    assert replayed.metadata == loaded.metadata == META  # decoded only when asked for
    assert replayed._replace(raw_metadata=None) == loaded._replace(raw_metadata=None)


def test_an_append_by_a_transaction_older_than_the_streams_last_writer_is_refused(require_postgres):
    """T takes its transaction id first, then appends after S's later event on the same stream.

    Readers follow transaction ids, so T's event would reach them before S's, the one it
    follows: the append is refused (nothing recorded), and a retry in a new transaction works.
    """
    from events.store import WroteTooEarly

    pet = new_pet()
    pets.save(pet, metadata=META)
    t_has_xid, t_go = threading.Event(), threading.Event()
    outcome = {}

    def take_xid():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")

    def t_work():
        t_has_xid.set()
        assert t_go.wait(10)
        late = pets.load(pet.id)  # sees S's change: loaded after S committed
        late.rename(new_name="Late")
        try:
            pets.save(late, metadata=META)
        except WroteTooEarly as refused:
            outcome["refused"] = refused

    t = HeldTransaction(t_work, before_work=take_xid, rollback=False)
    t.start()
    assert t_has_xid.wait(10)
    renamed = pets.load(pet.id)
    renamed.rename(new_name="First")
    pets.save(renamed, metadata=META)  # S: a newer transaction id, commits first
    t_go.set()
    assert t.did_work.wait(10)
    t.finish()

    refused = outcome["refused"]
    assert (refused.expected, refused.actual) == (2, 2)
    assert [e.stream_version for e in StoredEvent.objects.filter(stream_id=pet.id)] == [1, 2]
    retried = pets.load(pet.id)  # a new transaction: its id is newer than S's
    retried.rename(new_name="Late")
    pets.save(retried, metadata=META)
    order = [(e.stream_version, e.event_type) for e in read_all_settled(count=3)]
    assert order == [(1, "PetRegistered"), (2, "PetNameChanged"), (3, "PetNameChanged")]
