"""Plain SQL helpers (events/sql.py): the same values in and out as the ORM, on either database."""

import uuid
from datetime import UTC, datetime

import pytest

from events import sql
from events.models import Delivery, OutboxMessage

pytestmark = pytest.mark.django_db

FIELDS = [f for f in OutboxMessage._meta.concrete_fields if not f.primary_key]


def message(**overrides) -> OutboxMessage:
    moment = datetime(2026, 3, 13, 10, 0, 0, 123456, tzinfo=UTC)
    fields = {
        "event_id": uuid.uuid4(),
        "message_name": "PetAdopted",
        "routing_key": "pet.adopted",
        "payload": {"petId": "p-1", "nested": {"age": 3}},
        "headers": {"event-type": "PetAdopted"},
        "created_at": moment,
        "available_at": moment,
        **overrides,
    }
    return OutboxMessage(**fields)


def test_insert_writes_every_row_and_returns_the_asked_columns():
    given = [message(), message(routing_key="pet.available")]

    returned = sql.insert(OutboxMessage, FIELDS, given, returning="id, routing_key")

    assert [key for _, key in returned] == ["pet.adopted", "pet.available"]
    stored = OutboxMessage.objects.get(id=returned[0][0])
    assert (stored.event_id, stored.payload, stored.created_at) == (
        given[0].event_id,
        given[0].payload,
        given[0].created_at,
    )


def test_insert_on_conflict_do_nothing_returns_only_the_rows_that_went_in():
    first = message()
    sql.insert(OutboxMessage, FIELDS, [first])

    returned = sql.insert(
        OutboxMessage,
        FIELDS,
        [message(event_id=first.event_id), message()],
        on_conflict="ON CONFLICT (event_id, routing_key) WHERE handler = '' DO NOTHING",
        returning="event_id",
    )

    assert len(returned) == 1
    assert OutboxMessage.objects.filter(event_id=first.event_id).count() == 1


def test_select_converts_values_as_a_queryset_does():
    stored = message()
    sql.insert(OutboxMessage, FIELDS, [stored])
    names = ["event_id", "payload", "created_at", "published_at"]

    selected = sql.select(
        OutboxMessage,
        names,
        where="event_id = %(event_id)s",
        params=sql.prepared(OutboxMessage, event_id=stored.event_id),
        for_update=True,
    )

    assert selected == [
        list(OutboxMessage.objects.filter(event_id=stored.event_id).values_list(*names).get())
    ]
    event_id, payload, created_at, published_at = selected[0]
    assert isinstance(event_id, uuid.UUID) and payload["nested"] == {"age": 3}
    assert created_at == stored.created_at and created_at.tzinfo is not None and published_at is None


def test_update_changes_only_the_named_fields_of_one_row():
    one = Delivery.objects.create(handler="a", event_id=uuid.uuid4(), event_type="PetAdopted", attempts=2)
    other = Delivery.objects.create(handler="b", event_id=one.event_id, event_type="PetAdopted")
    finished = datetime(2026, 3, 13, 11, 0, tzinfo=UTC)

    sql.update(Delivery, one.pk, status="succeeded", finished_at=finished, next_attempt_at=None)

    one.refresh_from_db()
    other.refresh_from_db()
    assert (one.status, one.finished_at, one.attempts) == ("succeeded", finished, 2)
    assert (other.status, other.finished_at) == ("pending", None)


def test_get_with_related_gives_what_select_related_gives_and_caches_the_relations(
    pet, customer, django_assert_num_queries
):
    from adoptions.models import Adoption, PetRecord

    record = PetRecord.objects.get(id=pet.id)
    adoption = Adoption.objects.create(pet=record, customer=customer, shelter=record.shelter)
    related = ["pet", "customer", "shelter"]
    expected = Adoption.objects.select_related(*related).get(id=adoption.id)

    with django_assert_num_queries(1):
        loaded = sql.get_with_related(Adoption, adoption.id, related)
        parties = (loaded.pet, loaded.customer, loaded.shelter)

    assert parties == (expected.pet, expected.customer, expected.shelter)
    for one in (loaded, *parties):
        got = type(one).objects.filter(pk=one.pk).values().get()
        want = {f.attname: getattr(one, f.attname) for f in type(one)._meta.concrete_fields}
        assert got == want  # every field converted as the ORM converts it
    assert not loaded._state.adding and loaded.created_at.tzinfo is not None
    with pytest.raises(Adoption.DoesNotExist):
        sql.get_with_related(Adoption, uuid.uuid4(), related)


def test_get_with_related_follows_paths_and_reverse_one_to_ones(customer, django_assert_num_queries):
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from adoptions.models import Customer

    staff = get_user_model().objects.create_user("no-profile")
    related = ["user", "user__customer"]
    for user in (customer.user, staff):
        token = Token.objects.create(user=user)
        expected = Token.objects.select_related(*related).get(key=token.key)

        with django_assert_num_queries(1):
            loaded = sql.get_with_related(Token, token.key, related)
            try:
                profile = loaded.user.customer
            except Customer.DoesNotExist:  # cached as missing: no second query
                profile = None

        assert (loaded, loaded.user) == (expected, expected.user)
        assert loaded.user.password == expected.user.password
        assert profile == (customer if user is customer.user else None)
        if profile is not None:
            assert profile.user is loaded.user and profile.email == customer.email


def test_get_with_related_refuses_relations_it_cannot_join_the_way_select_related_would():
    from rest_framework.authtoken.models import Token

    from adoptions.models import Adoption, Shelter

    with pytest.raises(ValueError, match="completed_at"):
        sql.get_with_related(Adoption, uuid.uuid4(), ["completed_at"])
    with pytest.raises(ValueError, match="adoptions"):
        sql.get_with_related(Shelter, uuid.uuid4(), ["adoptions"])
    with pytest.raises(ValueError, match="nothing can follow"):  # would be an inner join below a left one
        sql.get_with_related(Token, "k", ["user", "user__customer", "user__customer__user"])


def test_create_inserts_as_the_orm_does_and_find_reads_it_back():
    event_id = uuid.uuid4()
    created = sql.create(
        Delivery(handler="h", event_id=event_id, event_type="PetAdopted", status="running", attempts=1)
    )
    twin = Delivery(handler="h", event_id=event_id, event_type="PetAdopted", status="running", attempts=1)

    assert created.pk is not None and created.created_at is not None  # auto_now_add, as create() sets it
    assert not created._state.adding
    assert sql.create(twin, on_conflict="ON CONFLICT DO NOTHING") is None  # (handler, event) is unique
    found = sql.find(Delivery, handler="h", event_id=event_id)
    assert (found.pk, found.created_at) == (created.pk, created.created_at)
    assert sql.find(Delivery, handler="other", event_id=event_id) is None
