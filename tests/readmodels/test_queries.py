"""The query endpoints: filters, pages, permissions, positions and read-your-writes."""

import re
import threading
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from adoptions import services
from adoptions.models import PetRecord
from events.context import CommandContext
from events.models import StoredEvent
from petstore.renderers import camel_key
from readmodels import selectors
from readmodels.api import AvailablePetOutput
from readmodels.models import AdoptionHistoryEntry, PetListing
from readmodels.projector import state_of
from tests.conftest import client_for
from tests.factories import register_pet
from tests.readmodels.conftest import project as catch_up_all

# Transactional: projections read only committed events (the test's own transaction is not).
pytestmark = pytest.mark.django_db(transaction=True)


def listed(response) -> list[str]:
    return [p["name"] for p in response.json()["results"]]


def test_available_pets_are_listed_longest_waiting_first_with_days_available(api_client, shelter):
    for name in ("First", "Second", "Third"):
        register_pet(shelter=shelter, name=name)
    catch_up_all()
    gen = state_of("available_pets").generation
    PetListing.objects.filter(generation=gen, name="Third").update(
        available_since=timezone.now() - timedelta(days=45)
    )

    response = api_client.get("/api/queries/available-pets")

    assert response.status_code == 200
    assert listed(response) == ["Third", "First", "Second"]
    first = response.json()["results"][0]
    assert first["daysAvailable"] == 45 and first["shelterName"] == shelter.name
    assert int(response["X-Projection-Position"]) == state_of("available_pets").position


def test_a_listing_has_exactly_the_documented_fields_in_their_documented_form(api_client, shelter):
    """The answer is built from the selector's dicts, the OpenAPI document from
    AvailablePetOutput: this holds the two together."""
    pet = register_pet(shelter=shelter, name="Pip")
    catch_up_all()

    [listing] = api_client.get("/api/queries/available-pets").json()["results"]

    row = PetListing.objects.get(generation=state_of("available_pets").generation, pet_id=pet.id)
    documented = AvailablePetOutput({**row.__dict__, "days_available": 0}).data
    assert listing == {camel_key(field): value for field, value in documented.items()}


def test_the_dashboards_position_header_is_read_before_its_rows(admin_client, shelter):
    """Rows read after the position are at least that new: the header never claims an event
    the answer does not show, even when the projector commits between the two reads."""
    register_pet(shelter=shelter)
    catch_up_all()

    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get("/api/queries/shelter-dashboard")

    sql = [q["sql"] for q in queries.captured_queries]
    reads_position = re.compile(r'SELECT [^;]*"position" FROM "readmodels_projectionstate"')
    position_read = next(i for i, q in enumerate(sql) if reads_position.match(q))
    rows_read = next(i for i, q in enumerate(sql) if 'FROM "readmodels_shelterdashboard"' in q)
    assert response.status_code == 200 and position_read < rows_read


@pytest.mark.parametrize("species", ["dog", "cat"])  # a page with pets, and an empty one
def test_available_pets_read_their_position_and_rows_in_one_statement(api_client, shelter, species):
    """One statement reads from one snapshot: the header names exactly what the rows show."""
    register_pet(shelter=shelter, species="dog")
    catch_up_all()

    with CaptureQueriesContext(connection) as queries:
        response = api_client.get("/api/queries/available-pets", {"species": species})

    [statement] = [q["sql"] for q in queries.captured_queries if "readmodels_petlisting" in q["sql"]]
    assert "readmodels_projectionstate" in statement and "position" in statement
    assert len(response.json()["results"]) == (species == "dog")
    assert int(response["X-Projection-Position"]) == state_of("available_pets").position


def test_adopted_pets_leave_the_list_and_returned_ones_come_back(
    api_client, staff_client, customer_client, shelter
):
    pet = register_pet(shelter=shelter, name="Buddy")
    customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    catch_up_all()
    assert listed(api_client.get("/api/queries/available-pets")) == []

    staff_client.post(
        "/api/commands/return-pet", {"petId": str(pet.id), "reason": "allergies"}, format="json"
    )
    catch_up_all()
    assert listed(api_client.get("/api/queries/available-pets")) == ["Buddy"]


def test_filters_by_species_age_and_shelter(api_client, shelter, other_shelter):
    register_pet(shelter=shelter, name="Dog", species="dog", age=2)
    register_pet(shelter=shelter, name="OldCat", species="cat", age=9)
    register_pet(shelter=other_shelter, name="Cat", species="cat", age=1)
    catch_up_all()

    def names(**params):
        return sorted(listed(api_client.get("/api/queries/available-pets", params)))

    assert names(species="cat") == ["Cat", "OldCat"]
    assert names(species="cat", maxAge=5) == ["Cat"]
    assert names(shelterId=str(other_shelter.id)) == ["Cat"]


@pytest.mark.parametrize(
    "params, field",
    [({"species": "lizard"}, "species"), ({"maxAge": "-1"}, "maxAge"), ({"shelterId": "x"}, "shelterId")],
)
def test_invalid_filters_are_400s(api_client, params, field):
    response = api_client.get("/api/queries/available-pets", params)
    assert response.status_code == 400
    assert field in response.json()["error"]["details"]["fields"]


def test_pages_of_twenty_with_next_and_previous_links(api_client, shelter):
    for i in range(25):
        register_pet(shelter=shelter, name=f"Pet{i:02}")
    catch_up_all()

    first = api_client.get("/api/queries/available-pets").json()
    second = api_client.get(first["next"]).json()

    assert len(first["results"]) == 20 and len(second["results"]) == 5
    assert first["previous"] is None and second["previous"]
    assert {p["petId"] for p in first["results"]}.isdisjoint(p["petId"] for p in second["results"])


def walk(api_client, url, link: str) -> list[list[str]]:
    """The names on each page from `url`, following `link` ("next" or "previous") to its end."""
    pages = []
    while url:
        answer = api_client.get(url).json()
        pages.append([p["name"] for p in answer["results"]])
        url = answer[link]
    return pages


def live_listings():
    return PetListing.objects.filter(generation=state_of("available_pets").generation)


def test_pages_walk_forwards_and_back_in_order_even_when_pets_became_available_together(api_client, shelter):
    for i in range(45):
        register_pet(shelter=shelter, name=f"Pet{i:02}")
    catch_up_all()
    live_listings().update(available_since=timezone.now() - timedelta(days=3))  # one moment: ties
    in_order = list(live_listings().order_by("pet_id").values_list("name", flat=True))

    forwards = walk(api_client, "/api/queries/available-pets", "next")
    last_page = api_client.get("/api/queries/available-pets").json()
    while last_page["next"]:
        last_page = api_client.get(last_page["next"]).json()
    backwards = walk(api_client, last_page["previous"], "previous")

    assert [len(page) for page in forwards] == [20, 20, 5]
    assert sum(forwards, []) == in_order
    assert backwards == [in_order[20:40], in_order[:20]]


def test_a_page_of_a_filtered_list_links_pages_of_the_same_filter(api_client, shelter):
    for i in range(25):
        register_pet(shelter=shelter, name=f"Cat{i:02}", species="cat")
        register_pet(shelter=shelter, name=f"Dog{i:02}", species="dog")
    catch_up_all()

    pages = walk(api_client, "/api/queries/available-pets?species=cat", "next")

    assert [len(page) for page in pages] == [20, 5]
    assert all(name.startswith("Cat") for name in sum(pages, []))


def test_an_empty_page_past_the_end_links_back_to_the_last_page(api_client, shelter):
    for i in range(25):
        register_pet(shelter=shelter, name=f"Pet{i:02}")
    catch_up_all()
    first = api_client.get("/api/queries/available-pets").json()
    live_listings().filter(name__gte="Pet20").update(available=False)  # page two's pets, adopted

    second = api_client.get(first["next"]).json()
    back = api_client.get(second["previous"]).json()

    assert second["results"] == [] and second["next"] is None
    assert back["results"] == first["results"] and back["previous"] is None


def test_a_page_with_nothing_left_before_it_links_forward_from_the_start(api_client, shelter):
    for i in range(25):
        register_pet(shelter=shelter, name=f"Pet{i:02}")
    catch_up_all()
    second = api_client.get(api_client.get("/api/queries/available-pets").json()["next"]).json()
    live_listings().filter(name__lt="Pet20").update(available=False)  # page one's pets, adopted

    back = api_client.get(second["previous"]).json()
    again = api_client.get(back["next"]).json()

    assert back["results"] == [] and back["previous"] is None
    assert "cursor" not in back["next"] and again["results"] == second["results"]


def test_adoption_history_lists_adoptions_and_returns_for_shelter_staff_only(
    staff_client, customer_client, customer, other_staff, shelter
):
    pet = register_pet(shelter=shelter)
    customer_client.post("/api/adoptions", {"petId": str(pet.id)}, format="json")
    staff_client.post(
        "/api/commands/return-pet", {"petId": str(pet.id), "reason": "allergies"}, format="json"
    )
    catch_up_all()

    response = staff_client.get(f"/api/queries/adoption-history/{pet.id}")

    entries = response.json()["entries"]
    assert [e["kind"] for e in entries] == ["adopted", "returned"]
    assert entries[0]["customerName"] == customer.full_name and entries[1]["reason"] == "allergies"
    # The return names who brought the pet back: the customer of the adoption it ends.
    assert [(e["customerId"], e["customerName"]) for e in entries] == [
        (str(customer.id), customer.full_name)
    ] * 2
    assert entries[0]["adoptionId"] == entries[1]["adoptionId"]
    assert client_for(other_staff).get(f"/api/queries/adoption-history/{pet.id}").status_code == 403
    assert customer_client.get(f"/api/queries/adoption-history/{pet.id}").status_code == 403
    missing = staff_client.get("/api/queries/adoption-history/00000000-0000-0000-0000-000000000000")
    assert missing.status_code == 404


def test_shelter_dashboard_position_is_that_of_the_projection_furthest_behind(staff_client, shelter):
    """The week's adoptions come from adoption_history: the header must not claim what it lacks."""
    register_pet(shelter=shelter, name="A")
    catch_up_all()
    dashboard, history = state_of("shelter_dashboard"), state_of("adoption_history")
    history.position, history.transaction_id = 0, 0
    history.save()

    response = staff_client.get("/api/queries/shelter-dashboard")

    assert dashboard.position > 0
    assert response["X-Projection-Position"] == "0"


def test_shelter_dashboard_counts_for_the_staffs_shelters(
    staff_client, customer_client, shelter, other_shelter
):
    adopted = register_pet(shelter=shelter, name="A")
    register_pet(shelter=shelter, name="B")
    register_pet(shelter=other_shelter, name="C")
    customer_client.post("/api/adoptions", {"petId": str(adopted.id)}, format="json")
    catch_up_all()

    body = staff_client.get("/api/queries/shelter-dashboard").json()

    assert body["shelters"] == [
        {
            "shelterId": str(shelter.id),
            "shelterName": shelter.name,
            "available": 1,
            "adopted": 1,
            "returned": 0,
            "adoptionsThisWeek": 1,
        }
    ]
    assert customer_client.get("/api/queries/shelter-dashboard").status_code == 403


def test_adoptions_this_week_count_from_monday_midnight_local_time(staff_client, customer, shelter):
    for name in ("Sunday night", "Monday morning"):
        pet = register_pet(shelter=shelter, name=name)
        services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    catch_up_all()
    today = timezone.localdate()
    monday = timezone.make_aware(
        datetime.combine(today - timedelta(days=today.weekday()), datetime.min.time())
    )
    entries = AdoptionHistoryEntry.objects.filter(generation=state_of("adoption_history").generation)
    entries.filter(pet_id__in=PetRecord.objects.filter(name="Sunday night").values("id")).update(
        occurred_at=monday - timedelta(microseconds=1)
    )
    entries.filter(pet_id__in=PetRecord.objects.filter(name="Monday morning").values("id")).update(
        occurred_at=monday
    )

    body = staff_client.get("/api/queries/shelter-dashboard").json()

    assert body["shelters"][0]["adopted"] == 2 and body["shelters"][0]["adoptionsThisWeek"] == 1


def test_min_position_beyond_the_projection_is_a_503_after_a_bounded_wait(api_client, shelter, settings):
    settings.PROJECTION_WAIT_SECONDS = 0.2
    pet = register_pet(shelter=shelter)  # not projected yet
    position = StoredEvent.objects.get(stream_id=pet.id).position

    response = api_client.get("/api/queries/available-pets", {"minPosition": position})

    assert response.status_code == 503 and response.json()["error"]["code"] == "projection_behind"
    assert response["Retry-After"] == "1"


def test_min_position_of_no_event_is_a_400(api_client):
    response = api_client.get("/api/queries/available-pets", {"minPosition": 10**9})
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_position"


def test_read_your_writes_waits_for_the_projector(
    require_postgres, api_client, staff_client, shelter, settings
):
    settings.PROJECTION_WAIT_SECONDS = 15  # an upper bound: the query answers once the projector passes
    response = staff_client.post(
        "/api/commands/register-pet",
        {"name": "Nova", "species": "dog", "age": 3, "shelterId": str(shelter.id)},
        format="json",
    )
    position = response.json()["position"]

    def projector_a_moment_later():
        try:
            threading.Event().wait(0.3)
            catch_up_all()
        finally:
            connection.close()

    projector = threading.Thread(target=projector_a_moment_later)
    projector.start()
    query = api_client.get("/api/queries/available-pets", {"minPosition": position})
    projector.join()

    assert query.status_code == 200 and listed(query) == ["Nova"]
    assert int(query["X-Projection-Position"]) >= position


def test_a_shelters_list_is_read_through_its_own_index(require_postgres, shelter):
    register_pet(shelter=shelter)
    catch_up_all()
    with CaptureQueriesContext(connection) as queries:
        page = selectors.available_pet_page(shelter_id=shelter.id, species="dog", max_age=3, limit=21)
    [page_query] = [q["sql"] for q in queries.captured_queries]

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small is read whole otherwise
        cursor.execute(f"EXPLAIN {page_query}")
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "listing_by_shelter" in plan and len(page.listings) == 1
