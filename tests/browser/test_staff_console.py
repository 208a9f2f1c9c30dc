"""The staff console in a real browser: what a shelter's staff do all day, end to end.

Run with `make test` like every other test; screenshots of each page land in
test-artifacts/screenshots/<test>-NN-<page>.png (and the certificate as a .pdf beside them).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from rest_framework.authtoken.models import Token

from adoptions.models import Adoption, PetRecord
from events.models import StoredEvent
from tests.support.processes import celery_worker, child_env, start, stop, wait_for_ready
from tests.support.rabbit import purge_queues

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PASSWORD = "pass-for-tests"  # tests.factories.UserFactory's
COMPLETION_TIMEOUT = 60  # seconds; the seven steps take about one


def log_in(page, username: str) -> None:
    page.goto("/admin/login/?next=/admin/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_load_state()


def register_pet(page, *, name: str, species: str, age: str) -> None:
    """Fill in and send the add-pet form (the shelter is the user's one)."""
    page.goto("/admin/adoptions/petrecord/add/")
    page.fill("#id_name", name)
    page.select_option("#id_species", species)
    page.fill("#id_age", age)
    page.select_option("#id_shelter", index=1)  # index 0 is the empty choice
    page.click("input[name=_save]")
    page.wait_for_load_state()


def content(page) -> str:
    return page.inner_text("#content")


def messages(page) -> str:
    return page.inner_text("ul.messagelist") if page.locator("ul.messagelist").count() else ""


def test_staff_register_a_pet_and_another_shelter_cannot_see_it(
    open_page, shots, staff, other_staff, customer
):
    page = open_page()
    log_in(page, staff.username)
    health = page.inner_text("#console-health")
    assert page.url.endswith("/admin/")
    assert "Outbox backlog\t0 pending" in health and "Projection available_pets" in health
    shots(page, "index")

    # an invalid pet: each error is shown on the form, nothing is recorded
    register_pet(page, name="Nala", species="cat", age="-1")
    assert "Please correct the error below." in content(page)
    assert "greater than or equal to 0" in page.inner_text(".field-age")
    assert not StoredEvent.objects.exists()
    shots(page, "register-with-an-error")

    register_pet(page, name="Nala", species="cat", age="3")
    assert page.url.endswith("/admin/adoptions/petrecord/")
    assert "was added successfully" in messages(page)
    assert page.get_by_role("link", name="Nala", exact=True).count() == 1
    shots(page, "pet-listed")

    page.goto("/admin/adoptions/petrecord/?status__exact=available&q=nal")
    assert page.get_by_role("link", name="Nala", exact=True).count() == 1
    page.get_by_role("link", name="Nala", exact=True).click()
    timeline = page.inner_text(".event-timeline")
    assert "PetRegistered" in timeline and staff.username in timeline
    shots(page, "pet-timeline")
    nala = PetRecord.objects.get(name="Nala")

    # staff of another shelter: not in their list, and by URL as if it did not exist
    theirs = open_page()
    log_in(theirs, other_staff.username)
    theirs.goto("/admin/adoptions/petrecord/")
    assert "Nala" not in content(theirs)
    shots(theirs, "other-shelter-pet-list")
    theirs.goto(f"/admin/adoptions/petrecord/{nala.pk}/change/")
    assert theirs.url.endswith("/admin/") and "doesn’t exist" in messages(theirs)
    shots(theirs, "other-shelter-pet-by-url")

    # a customer cannot log into the console at all
    customers = open_page()
    log_in(customers, customer.user.username)
    assert "/admin/login/" in customers.url
    assert "correct username and password for a staff account" in content(customers)
    shots(customers, "customer-refused")


# --- the whole adoption, with a real worker and relay ----------------------------------------


@pytest.fixture
def adoption_steps_running(require_postgres, broker, settings, tmp_path) -> Iterator[list[Path]]:
    """Run a Celery worker on every handler queue and an outbox relay as child processes."""
    purge_queues(broker, settings.PETSTORE_HANDLER_QUEUES)  # no task left by an earlier test
    settings.MEDIA_ROOT = tmp_path / "media"  # the live server serves what the worker wrote
    env = child_env(PETSTORE_VAR_DIR=str(tmp_path), CERTIFICATE_EXTRA_SECONDS="0")
    logs = [tmp_path / "worker.log", tmp_path / "relay.log"]
    queues = settings.PETSTORE_HANDLER_QUEUES
    worker = start(celery_worker(queues=queues, concurrency=2), env=env, log=logs[0])
    relay = start([sys.executable, "manage.py", "relay_outbox"], env=env, log=logs[1])
    try:
        wait_for_ready(worker, logs[0])
        yield logs
    finally:
        for process in (relay, worker):
            stop(process)


def wait_for_completion(page, logs: list[Path]) -> str:
    """Reload the adoption's page until it says completed; return the steps table's text."""
    deadline = time.monotonic() + COMPLETION_TIMEOUT
    while "Status: completed" not in page.inner_text(".adoption-progress"):
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {log.name}:\n{log.read_text(errors='replace')[-2500:]}" for log in logs)
            raise AssertionError(f"not completed after {COMPLETION_TIMEOUT}s:\n{content(page)}\n{tails}")
        time.sleep(0.5)
        page.reload()
    return page.inner_text(".adoption-steps")


def test_an_adoption_through_the_api_completes_in_the_console_with_its_certificate(
    open_page, shots, adoption_steps_running, staff, other_staff, customer
):
    page = open_page()
    log_in(page, staff.username)
    register_pet(page, name="Biscuit", species="dog", age="1")
    assert page.get_by_role("link", name="Biscuit", exact=True).count() == 1
    shots(page, "pet-listed")
    biscuit = PetRecord.objects.get(name="Biscuit")

    # the customer adopts through the API, with their token
    token = Token.objects.create(user=customer.user)
    api = open_page().request
    adopted = api.post(
        "/api/adoptions", data={"petId": str(biscuit.pk)}, headers={"Authorization": f"Token {token.key}"}
    )
    assert adopted.status == 202, adopted.text()
    adoption_id = adopted.json()["adoptionId"]

    page.goto(f"/admin/adoptions/adoption/{adoption_id}/change/")
    shots(page, "adoption-just-started")
    steps = wait_for_completion(page, adoption_steps_running)
    assert steps.count("succeeded") == 7
    shots(page, "adoption-completed")

    # its certificate, from the link on the adoption's page, with the staff member's session
    link = page.get_by_role("link", name="certificate (PDF)")
    certificate = page.request.get(link.get_attribute("href"))
    assert certificate.status == 200 and certificate.headers["content-type"] == "application/pdf"
    assert certificate.body().startswith(b"%PDF")
    shots.path("certificate", ".pdf").write_bytes(certificate.body())
    with page.expect_response(lambda r: r.url.endswith("/certificate")) as opened:
        link.click()
    assert opened.value.status == 200 and opened.value.headers["content-type"] == "application/pdf"
    page.wait_for_timeout(1500)  # give the PDF viewer a moment to draw the page
    shots(page, "certificate")
    page.go_back()

    # staff of another shelter see neither the adoption nor its certificate
    theirs = open_page()
    log_in(theirs, other_staff.username)
    theirs.goto("/admin/adoptions/adoption/")
    assert adoption_id not in content(theirs) and "Biscuit" not in content(theirs)
    shots(theirs, "other-shelter-adoption-list")
    theirs.goto(f"/admin/adoptions/adoption/{adoption_id}/change/")
    assert theirs.url.endswith("/admin/") and "doesn’t exist" in messages(theirs)
    shots(theirs, "other-shelter-adoption-by-url")
    refused = theirs.goto(f"/api/adoptions/{adoption_id}/certificate")
    assert refused.status == 404
    shots(theirs, "other-shelter-certificate")

    # and the pet comes back: a return with its reason
    page.goto(f"/admin/adoptions/petrecord/{biscuit.pk}/change/")
    page.get_by_role("link", name="Record a return").click()
    assert customer.full_name in content(page)
    page.fill("#id_reason", "The landlord does not allow dogs")
    shots(page, "record-a-return")
    page.click("input[type=submit]")
    page.wait_for_load_state()
    assert "Biscuit is back at" in messages(page)
    assert "The landlord does not allow dogs" in page.inner_text(".event-timeline")
    shots(page, "pet-returned")
    assert Adoption.objects.get(pk=adoption_id).status == Adoption.Status.RETURNED
