"""The OpenAPI document: generated without warnings, complete, served as YAML, JSON and a page."""

import re
from io import StringIO

import pytest
import yaml
from django.contrib.staticfiles import finders
from django.core.management import call_command
from django.urls import URLResolver, get_resolver
from drf_spectacular.drainage import GENERATOR_STATS

#: Routes that are not part of the API proper: the document itself, its page, the JSON 404.
NOT_DOCUMENTED = {"/api/schema/", "/api/docs/", "/api/"}


def routes(patterns, prefix: str = ""):
    """Every route of the urlconf, included ones too."""
    for pattern in patterns:
        route = prefix + str(pattern.pattern).lstrip("^").rstrip("$")
        if isinstance(pattern, URLResolver):
            yield from routes(pattern.url_patterns, route)
        else:
            yield route


def api_paths() -> set[str]:
    """Every route under /api/ in the urlconf, written as an OpenAPI path template."""
    paths = {
        "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        for route in routes(get_resolver().url_patterns)
        if route.startswith("api/")
    }
    return paths - NOT_DOCUMENTED


@pytest.fixture(scope="module")
def document() -> dict:
    GENERATOR_STATS.reset()
    out = StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out, stderr=StringIO())
    return yaml.safe_load(out.getvalue())


def test_generation_is_valid_openapi_with_no_warnings_or_errors(document):
    assert document["openapi"].startswith("3.")
    assert not GENERATOR_STATS, "drf-spectacular reported warnings or errors"


def test_every_api_route_is_documented(document):
    assert api_paths() - set(document["paths"]) == set()
    assert len(api_paths()) >= 15


def test_every_operation_documents_its_errors_with_the_one_error_shape(document):
    error_ref = "#/components/schemas/Error"
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = operation["responses"]
            if path != "/api/asyncapi/":  # a plain page: no authentication, no database
                assert "401" in statuses and "503" in statuses, (method, path)
            for status, response in statuses.items():
                if status >= "400":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": error_ref}, (method, path, status)
    error = document["components"]["schemas"]["ErrorBody"]
    assert set(error["required"]) == {"code", "message", "details"}


def test_commands_document_idempotency_position_and_conflicts(document):
    adopt = document["paths"]["/api/commands/adopt-pet"]["post"]
    headers = {p["name"] for p in adopt["parameters"] if p["in"] == "header"}
    assert "Idempotency-Key" in headers
    assert {"X-Event-Position", "Location"} <= set(adopt["responses"]["202"]["headers"])
    assert {"400", "403", "404", "409", "413", "415", "422"} <= set(adopt["responses"])
    body = document["components"]["schemas"]["AdoptPetInputRequest"]
    assert {"petId", "customerId", "expectedVersion"} <= set(body["properties"])
    assert body["additionalProperties"] is False  # unknown fields are refused


def test_queries_document_min_position_pages_and_the_projection_header(document):
    pets = document["paths"]["/api/queries/available-pets"]["get"]
    params = {p["name"] for p in pets["parameters"]}
    assert {"species", "maxAge", "shelterId", "cursor", "minPosition"} <= params
    assert "X-Projection-Position" in pets["responses"]["200"]["headers"]
    page = document["components"]["schemas"]["PaginatedAvailablePetOutputList"]
    assert {"next", "previous", "results"} <= set(page["properties"])
    assert "asOf" in {p["name"] for p in document["paths"]["/api/pets/{pet_id}"]["get"]["parameters"]}


def test_certificate_is_documented_as_a_pdf(document):
    ok = document["paths"]["/api/adoptions/{adoption_id}/certificate"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["application/pdf"]


def test_token_and_session_authentication_are_documented(document):
    schemes = document["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Token-based authentication with required prefix "Token"',
    }
    assert schemes["cookieAuth"]["in"] == "cookie"


def test_schema_is_served_as_yaml_and_as_json(client):
    as_yaml = client.get("/api/schema/")
    as_json = client.get("/api/schema/?format=json")
    by_accept = client.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert as_yaml.status_code == 200
    assert as_yaml["Content-Type"].startswith("application/vnd.oai.openapi;")  # the YAML media type
    assert yaml.safe_load(as_yaml.content)["info"]["title"] == "PetStore Events API"
    assert as_json.status_code == 200 and "json" in as_json["Content-Type"]
    assert as_json.json()["paths"].keys() == yaml.safe_load(as_yaml.content)["paths"].keys()
    assert "json" in by_accept["Content-Type"]


def test_docs_page_loads_swagger_ui_from_our_own_static_files(client):
    page = client.get("/api/docs/")

    assert page.status_code == 200
    html = page.content.decode()
    assert "https://" not in html  # no CDN: it works offline
    assets = re.findall(r'(?:src|href)="/static/([^"?]+)', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    for asset in assets:
        assert finders.find(asset), asset
    script = client.get("/api/docs/?script=")
    assert script.status_code == 200 and "/api/schema/" in script.content.decode()
