"""The seven adoption steps, run in-process through events.delivery (no broker needed)."""

import dataclasses
import datetime
import functools
import importlib
import threading
import types

import pytest
from django.core import mail
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from adoptions import aftercare, selectors, services
from adoptions.models import Adoption, AdoptionStats, ShelterInventory, VetAppointment, WelcomePackage
from events.context import CommandContext
from events.delivery import deliver, redrive
from events.handlers import HANDLERS, handlers_for
from events.models import Delivery, OutboxMessage, StoredEvent
from notifications.models import Certificate, SentEmail
from tests.conftest import client_for
from tests.factories import CustomerFactory, register_pet
from tests.support.threads import run_concurrently

pytestmark = pytest.mark.django_db

STEPS = {
    "notifications.confirmation_email",
    "notifications.shelter_notice",
    "adoptions.inventory",
    "notifications.certificate",
    "adoptions.vet_appointment",
    "adoptions.welcome_package",
    "adoptions.analytics",
}


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def adopt(pet, customer) -> Adoption:
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    return started.adoption


def run_steps(adoption: Adoption, names=None) -> dict[str, str]:
    return {
        handler.name: deliver(handler.name, adoption.adopted_event_id)
        for handler in handlers_for("PetAdopted")
        if names is None or handler.name in names
    }


def test_pet_adopted_fans_out_to_the_seven_steps():
    assert {h.name for h in handlers_for("PetAdopted")} == STEPS
    assert len({h.queue for h in handlers_for("PetAdopted")}) == 7  # each on its own queue


def test_all_steps_succeeding_completes_the_adoption_once(pet, customer):
    adoption = adopt(pet, customer)

    results = run_steps(adoption)
    run_steps(adoption)  # a redelivery of everything changes nothing
    services.adoption_progress(adopted_event_id=adoption.adopted_event_id)

    assert set(results.values()) == {"succeeded"}
    adoption.refresh_from_db()
    assert adoption.status == "completed" and adoption.completed_at
    completed = StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id=adoption.id)
    assert completed.count() == 1
    payload = completed.get().payload
    assert payload["certificate_url"].endswith(f"/api/adoptions/{adoption.id}/certificate")
    assert payload["vet_appointment_date"]
    assert OutboxMessage.objects.filter(routing_key="adoption.completed").count() == 1


def test_details_read_by_id_match_the_loaded_adoption_before_and_after_its_steps(pet, customer):
    adoption = adopt(pet, customer)

    def loaded():
        related = Adoption.objects.select_related("certificate", "vet_appointment")
        return selectors.adoption_details(related.get(pk=adoption.id))

    before = selectors.adoption_details_by_id(adoption.id)
    run_steps(adoption)
    after = selectors.adoption_details_by_id(adoption.id)

    assert before == selectors.AdoptionDetails(certificate_url=None, vet_appointment_date=None)
    assert after == loaded()
    assert after.certificate_url.endswith(f"/api/adoptions/{adoption.id}/certificate")
    assert after.vet_appointment_date == VetAppointment.objects.get(adoption=adoption).starts_at


def test_each_effect_happens_exactly_once(pet, customer, shelter):
    adoption = adopt(pet, customer)
    run_steps(adoption)
    run_steps(adoption)

    assert [m.to for m in mail.outbox] == [[customer.email], [shelter.contact_email]]
    assert mail.outbox[0].alternatives[0][1] == "text/html"
    assert pet.name in mail.outbox[0].subject
    assert mail.outbox[0].extra_headers["Message-ID"].startswith(f"<{adoption.adopted_event_id}.")
    assert SentEmail.objects.count() == 2
    assert Certificate.objects.filter(adoption=adoption).count() == 1
    assert VetAppointment.objects.filter(adoption=adoption).count() == 1
    assert WelcomePackage.objects.get(adoption=adoption).contents.startswith("collar")
    assert AdoptionStats.objects.get(shelter=shelter, species="dog").adoptions == 1


def test_certificate_is_a_pdf_in_storage(pet, customer):
    adoption = adopt(pet, customer)
    run_steps(adoption, {"notifications.certificate"})

    certificate = Certificate.objects.get(adoption=adoption)
    content = certificate.file.open("rb").read()
    assert content.startswith(b"%PDF") and len(content) > 1000
    assert certificate.file.name == f"certificates/{adoption.id}.pdf"


def test_inventory_follows_registrations_adoptions_and_returns(shelter, customer):
    pet = register_pet(shelter=shelter)
    registered = StoredEvent.objects.get(stream_id=pet.id, event_type="PetRegistered")
    deliver("adoptions.inventory", registered.event_id)
    adoption = adopt(pet, customer)
    run_steps(adoption, {"adoptions.inventory"})
    services.pet_return(pet_id=pet.id, reason="allergies", context=CommandContext.system())
    returned = StoredEvent.objects.get(stream_id=pet.id, event_type="PetReturned")
    deliver("adoptions.inventory", returned.event_id)
    deliver("adoptions.inventory", returned.event_id)  # redelivered: counted once

    inventory = ShelterInventory.objects.get(shelter=shelter)
    assert (inventory.available, inventory.adopted, inventory.returned) == (1, 0, 1)
    assert inventory.updated_at >= returned.recorded_at  # when the counts last changed


def test_a_dead_step_needs_attention_and_a_successful_retry_completes(pet, customer, settings):
    settings.HANDLER_MAX_ATTEMPTS = 1
    settings.EMAIL_BACKEND = "tests.adoptions.test_steps.RefusingEmailBackend"
    adoption = adopt(pet, customer)

    results = run_steps(adoption)

    assert results["notifications.confirmation_email"] == "dead"
    assert results["adoptions.inventory"] == "succeeded"
    adoption.refresh_from_db()
    assert adoption.status == "needs_attention"
    assert services.pets.load(pet.id).status.value == "adopted"  # the pet stays adopted

    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    assert redrive(event_id=adoption.adopted_event_id) == 2
    run_steps(adoption, {"notifications.confirmation_email", "notifications.shelter_notice"})

    adoption.refresh_from_db()
    assert adoption.status == "completed"
    assert StoredEvent.objects.filter(event_type="AdoptionCompleted").count() == 1


class RefusingEmailBackend:
    """An email backend whose server is down."""

    def __init__(self, **kwargs):
        pass

    def send_messages(self, messages):
        raise ConnectionRefusedError("SMTP server refused the connection")


def test_adoption_api_shows_steps_certificate_and_vet_date(pet, customer):
    adoption = adopt(pet, customer)
    client = client_for(customer.user)
    before = client.get(f"/api/adoptions/{adoption.id}").json()
    run_steps(adoption)
    after = client.get(f"/api/adoptions/{adoption.id}").json()

    assert before["status"] == "processing" and before["certificateUrl"] is None
    assert {s["status"] for s in before["steps"]} == {"pending"}
    assert after["status"] == "completed"
    assert {s["name"] for s in after["steps"]} == STEPS
    assert all(s["status"] == "succeeded" and s["attempts"] == 1 for s in after["steps"])
    assert after["certificateUrl"] and after["vetAppointmentDate"]


def test_certificate_download_is_for_the_customer_and_shelter_staff_only(
    pet, customer, staff, other_customer
):
    adoption = adopt(pet, customer)
    url = f"/api/adoptions/{adoption.id}/certificate"
    not_ready = client_for(customer.user).get(url)
    run_steps(adoption, {"notifications.certificate"})

    mine = client_for(customer.user).get(url)
    staffs = client_for(staff).get(url)
    theirs = client_for(other_customer.user).get(url)

    assert not_ready.status_code == 404 and not_ready.json()["error"]["code"] == "certificate_not_ready"
    assert mine.status_code == 200 and mine["Content-Type"] == "application/pdf"
    assert b"".join(mine.streaming_content).startswith(b"%PDF")
    assert staffs.status_code == 200
    assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "adoption_not_found"


def test_vet_appointments_fill_working_hours_one_per_slot(shelter):
    pets = [register_pet(shelter=shelter, name=f"P{i}") for i in range(3)]
    adoptions = [adopt(p, CustomerFactory()) for p in pets]
    for adoption in adoptions:
        run_steps(adoption, {"adoptions.vet_appointment"})

    starts = sorted(VetAppointment.objects.values_list("starts_at", flat=True))
    assert len(set(starts)) == 3
    assert all(s.weekday() < 5 and shelter.opens_at <= s.time() < shelter.closes_at for s in starts)
    assert (starts[1] - starts[0]).total_seconds() == shelter.vet_slot_minutes * 60


def test_booking_an_adoption_twice_gives_back_its_first_appointment(shelter, customer):
    """No lookup before booking: the second INSERT meets the one-per-adoption constraint."""
    from adoptions import aftercare

    adoption = adopt(register_pet(shelter=shelter, name="Twice"), customer)
    first = aftercare.vet_appointment_schedule(adoption=adoption)
    again = aftercare.vet_appointment_schedule(adoption=adoption)

    assert again.pk == first.pk and again.starts_at == first.starts_at
    assert VetAppointment.objects.filter(adoption=adoption).count() == 1


def booked_slots(shelter) -> list:
    return sorted(VetAppointment.objects.filter(shelter=shelter).values_list("starts_at", flat=True))


def test_a_calendar_full_for_weeks_books_the_first_free_working_day(shelter):
    """Each booking passes over the full days (counted, not read slot by slot) and takes the
    next working day: five weeks of one-slot days fill in order, none left out."""
    shelter.opens_at, shelter.closes_at = datetime.time(9, 0), datetime.time(9, 30)  # one slot a day
    shelter.save()
    adoptions = [adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(25)]
    for adoption in adoptions:
        run_steps(adoption, {"adoptions.vet_appointment"})

    days = [timezone.localtime(start).date() for start in booked_slots(shelter)]
    assert len(days) == 25 and len(set(days)) == 25 and all(day.weekday() < 5 for day in days)
    working_days = [days[0] + datetime.timedelta(days=n) for n in range((days[-1] - days[0]).days + 1)]
    assert days == [day for day in working_days if day.weekday() < 5]  # no working day left out


def test_a_full_day_is_skipped_and_a_gap_is_filled(shelter):
    """Booking reads whole days by count and only the first day with room slot by slot."""
    shelter.opens_at, shelter.closes_at = datetime.time(9, 0), datetime.time(10, 0)  # two slots a day
    shelter.save()
    first, second, third, fourth = [
        adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(4)
    ]
    for adoption in (first, second, third):
        run_steps(adoption, {"adoptions.vet_appointment"})
    day_one, _, day_two_first = booked_slots(shelter)
    VetAppointment.objects.filter(adoption=second).delete()  # a gap on the first, otherwise full day

    run_steps(fourth, {"adoptions.vet_appointment"})

    assert fourth.vet_appointment.starts_at == day_one + datetime.timedelta(minutes=30)
    assert (day_two_first - day_one).days >= 1 and day_two_first.weekday() < 5
    assert len(set(booked_slots(shelter))) == 3


def test_a_slot_booked_after_the_calendar_was_read_goes_to_the_next_one(shelter, monkeypatch):
    rival, ours = [adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(2)]
    book = aftercare._book

    def rival_books_first(adoption, slot, length):  # between our read of the calendar and our insert
        if not VetAppointment.objects.exists():
            VetAppointment.objects.create(
                adoption=rival, shelter=shelter, starts_at=slot, ends_at=slot + length
            )
        return book(adoption, slot, length)

    monkeypatch.setattr(aftercare, "_book", rival_books_first)
    result = run_steps(ours, {"adoptions.vet_appointment"})

    rival_slot = VetAppointment.objects.get(adoption=rival).starts_at
    our_slot = VetAppointment.objects.get(adoption=ours).starts_at
    assert result == {"adoptions.vet_appointment": "succeeded"}
    assert our_slot - rival_slot == datetime.timedelta(minutes=shelter.vet_slot_minutes)


def test_after_the_slot_length_changes_a_visit_never_overlaps_one_booked_before(shelter):
    early, late, ours = [
        adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(3)
    ]
    for adoption in (early, late):  # 9:00-9:30 and 9:30-10:00 on the first day
        run_steps(adoption, {"adoptions.vet_appointment"})
    nine = VetAppointment.objects.get(adoption=early).starts_at
    shelter.vet_slot_minutes = 45  # slots now start at 9:00, 9:45, 10:30…
    shelter.save()

    run_steps(ours, {"adoptions.vet_appointment"})

    visit = VetAppointment.objects.get(adoption=ours)
    assert visit.starts_at == nine + datetime.timedelta(minutes=90)  # 9:45 would overlap 9:30-10:00
    assert visit.ends_at - visit.starts_at == datetime.timedelta(minutes=45)


def test_the_database_refuses_two_overlapping_visits_of_one_shelter(require_postgres, shelter):
    """What keeps concurrent bookings apart when their starts differ (an exclusion constraint)."""
    first, second = [adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(2)]
    nine = datetime.datetime(2026, 3, 16, 9, 0, tzinfo=datetime.UTC)
    VetAppointment.objects.create(
        adoption=first, shelter=shelter, starts_at=nine, ends_at=nine + datetime.timedelta(minutes=30)
    )
    quarter_past = nine + datetime.timedelta(minutes=15)

    with pytest.raises(IntegrityError), transaction.atomic():
        VetAppointment.objects.create(
            adoption=second,
            shelter=shelter,
            starts_at=quarter_past,
            ends_at=quarter_past + datetime.timedelta(minutes=30),
        )
    half_past = nine + datetime.timedelta(minutes=30)  # right after it: fine
    VetAppointment.objects.create(
        adoption=second,
        shelter=shelter,
        starts_at=half_past,
        ends_at=half_past + datetime.timedelta(minutes=30),
    )


def test_hours_with_no_vet_slot_make_the_step_dead_at_once(shelter, customer):
    shelter.opens_at, shelter.closes_at, shelter.vet_slot_minutes = (
        datetime.time(9, 0),
        datetime.time(9, 20),
        30,
    )
    shelter.save()
    adoption = adopt(register_pet(shelter=shelter), customer)

    result = run_steps(adoption, {"adoptions.vet_appointment"})

    delivery = Delivery.objects.get(handler="adoptions.vet_appointment", event_id=adoption.adopted_event_id)
    assert result == {"adoptions.vet_appointment": "dead"}
    assert delivery.attempts == 1 and "no 30-minute vet slot" in delivery.last_error


@pytest.mark.parametrize(
    "hours", [{"opens_at": datetime.time(17, 0), "closes_at": datetime.time(9, 0)}, {"vet_slot_minutes": 0}]
)
def test_shelter_hours_that_make_no_sense_are_refused(shelter, hours):
    for field, value in hours.items():
        setattr(shelter, field, value)

    with pytest.raises(ValidationError):
        shelter.full_clean()
    with pytest.raises(IntegrityError), transaction.atomic():
        shelter.save()


@pytest.mark.django_db(transaction=True)
def test_concurrent_adoptions_never_share_a_vet_slot(require_postgres, shelter):
    adoptions = [adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(6)]
    barrier = threading.Barrier(len(adoptions))

    def book(adoption):
        try:
            barrier.wait(10)
            deliver("adoptions.vet_appointment", adoption.adopted_event_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=book, args=(a,)) for a in adoptions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    starts = list(VetAppointment.objects.values_list("starts_at", flat=True))
    assert len(starts) == 6 and len(set(starts)) == 6


def test_unknown_handler_name_is_refused_by_the_redrive_command():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError):
        call_command("redrive_dead_letters", "--handler", "nope")


@pytest.mark.django_db(transaction=True)
def test_the_last_two_steps_finishing_at_the_same_moment_complete_the_adoption_once(
    require_postgres, pet, customer, monkeypatch
):
    adoption = adopt(pet, customer)
    last_two = ["notifications.certificate", "adoptions.analytics"]
    run_steps(adoption, STEPS - set(last_two))
    # each of the last two steps waits for the other before it records its outcome
    both_done = threading.Barrier(2)
    for name in last_two:
        waiting = _then_wait(HANDLERS[name].run, both_done)
        monkeypatch.setitem(HANDLERS, name, dataclasses.replace(HANDLERS[name], run=waiting))

    outcomes = run_concurrently(
        [functools.partial(deliver, name, adoption.adopted_event_id) for name in last_two], timeout=30
    )

    assert outcomes == ["succeeded", "succeeded"]
    adoption.refresh_from_db()
    assert (adoption.status, adoption.steps_succeeded) == ("completed", 7)
    assert StoredEvent.objects.filter(event_type="AdoptionCompleted", stream_id=adoption.id).count() == 1


def _then_wait(run, barrier):
    def run_then_wait(event):
        run(event)
        barrier.wait(10)

    return run_then_wait


def test_recomputing_from_every_step_sets_the_count_right(pet, customer):
    adoption = adopt(pet, customer)
    run_steps(adoption, {"adoptions.inventory", "adoptions.analytics"})
    Adoption.objects.filter(pk=adoption.pk).update(steps_succeeded=5)  # as if miscounted

    assert services.adoption_progress(adopted_event_id=adoption.adopted_event_id) == "processing"
    adoption.refresh_from_db()
    assert adoption.steps_succeeded == 2


def test_the_migration_counts_the_steps_of_adoptions_begun_before_the_counter(pet, customer, shelter):
    counted, untouched = adopt(pet, customer), adopt(register_pet(shelter=shelter, name="Later"), customer)
    run_steps(counted, {"adoptions.inventory", "adoptions.welcome_package", "adoptions.analytics"})
    Delivery.objects.filter(handler="adoptions.analytics").update(status="dead")
    Adoption.objects.update(steps_succeeded=0)  # the column as the migration adds it

    migration = importlib.import_module("adoptions.migrations.0004_adoption_steps_succeeded")
    with connection.cursor() as cursor:
        cursor.execute(migration.COUNT_SUCCEEDED_STEPS)

    assert Adoption.objects.get(pk=counted.pk).steps_succeeded == 2
    assert Adoption.objects.get(pk=untouched.pk).steps_succeeded == 0


def test_the_migration_gives_visits_booked_before_an_end_that_overlaps_none(require_postgres, shelter):
    """Migration adoptions 0005 on a populated table: today's slot length is longer than the
    one the visits were booked with, so each end is cut where the shelter's next visit starts,
    and the overlap constraint can then be added."""
    migration = importlib.import_module("adoptions.migrations.0005_vet_appointment_ends_at")
    first, second, third = [
        adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(3)
    ]
    nine = datetime.datetime(2026, 3, 16, 9, 0, tzinfo=datetime.UTC)
    starts = {
        first: nine,
        second: nine + datetime.timedelta(minutes=30),
        third: nine + datetime.timedelta(hours=3),
    }
    for adoption, start in starts.items():  # booked under 30-minute slots
        VetAppointment.objects.create(
            adoption=adoption,
            shelter=shelter,
            starts_at=start,
            ends_at=start + datetime.timedelta(minutes=30),
        )
    shelter.vet_slot_minutes = 45
    shelter.save()
    with connection.cursor() as cursor:  # as before the migration: no ends, no constraint
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # check this test's rows now: ALTER needs that
        cursor.execute(migration.ALLOW_OVERLAPS)
        cursor.execute("ALTER TABLE adoptions_vetappointment ALTER COLUMN ends_at DROP NOT NULL")
        cursor.execute("UPDATE adoptions_vetappointment SET ends_at = NULL")

        cursor.execute(migration.BACKFILL_POSTGRES)
        cursor.execute(migration.EXCLUDE_OVERLAPS)  # fails if any two visits overlap

    ends = {a: VetAppointment.objects.get(adoption=a).ends_at - starts[a] for a in starts}
    minutes = datetime.timedelta(minutes=1)
    assert ends == {first: 30 * minutes, second: 45 * minutes, third: 45 * minutes}


def test_the_migrations_python_backfill_cuts_ends_the_same_way(shelter):
    """The backfill's path for databases other than PostgreSQL (SQLite: no window UPDATE)."""
    from django.apps import apps

    migration = importlib.import_module("adoptions.migrations.0005_vet_appointment_ends_at")
    adoptions = [adopt(register_pet(shelter=shelter, name=f"P{i}"), CustomerFactory()) for i in range(2)]
    nine = datetime.datetime(2026, 3, 16, 9, 0, tzinfo=datetime.UTC)
    for index, adoption in enumerate(adoptions):
        start = nine + index * datetime.timedelta(minutes=30)
        VetAppointment.objects.create(adoption=adoption, shelter=shelter, starts_at=start, ends_at=start)
    shelter.vet_slot_minutes = 45
    shelter.save()
    not_postgres = types.SimpleNamespace(connection=types.SimpleNamespace(vendor="sqlite"))

    migration.ends_from_the_slot_length(apps, not_postgres)

    lengths = [v.ends_at - v.starts_at for v in VetAppointment.objects.order_by("starts_at")]
    assert lengths == [datetime.timedelta(minutes=30), datetime.timedelta(minutes=45)]
