"""Security headers on every response, a CSP our own pages keep, CSRF on the admin."""

from html.parser import HTMLParser

import pytest
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def superuser():
    return UserFactory(is_staff=True, is_superuser=True)


@pytest.fixture
def admin_client_(superuser) -> Client:
    client = Client()
    client.force_login(superuser)
    return client


def csp_directives(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    return {name: sources for name, *sources in (part.split() for part in header.split(";"))}


@pytest.mark.parametrize("path", ["/api/queries/available-pets", "/admin/login/", "/api/asyncapi/"])
def test_every_response_carries_the_security_headers(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    policy = csp_directives(response)
    assert policy["script-src"] == ["'self'"]  # no inline scripts, no eval, no other origin
    assert policy["default-src"] == ["'self'"] and policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]


def test_errors_and_404s_carry_the_policy_too(client):
    response = client.get("/api/no-such-thing")

    assert response.status_code == 404 and "Content-Security-Policy" in response


def test_report_only_mode_sends_the_report_only_header(client, settings):
    settings.CONTENT_SECURITY_POLICY_REPORT_ONLY = True

    response = client.get("/admin/login/")

    assert "Content-Security-Policy" not in response
    assert "script-src 'self'" in response["Content-Security-Policy-Report-Only"]


class ScriptFinder(HTMLParser):
    """Collect what a `script-src 'self'` policy would block: inline scripts and handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        for name, value in attributes.items():
            if name.startswith("on") or (value or "").strip().lower().startswith("javascript:"):
                self.blocked.append(f"<{tag} {name}=…>")
        if tag != "script" or attributes.get("type") == "application/json":
            return
        src = attributes.get("src")
        if not src:
            self.blocked.append("inline <script>")
        elif not src.startswith("/") or src.startswith("//"):
            self.blocked.append(f"<script src={src}> from another origin")


OUR_PAGES = [
    "/admin/",
    "/admin/login/",
    "/admin/adoptions/petrecord/",
    "/admin/adoptions/petrecord/add/",
    "/admin/events/delivery/",
    "/api/asyncapi/",
    "/api/docs/",
]


@pytest.mark.parametrize("path", OUR_PAGES)
def test_our_pages_load_scripts_only_from_our_own_origin(admin_client_, path):
    response = admin_client_.get(path, follow=True)
    finder = ScriptFinder()

    finder.feed(response.content.decode())

    assert response.status_code == 200
    assert finder.blocked == []


def test_admin_refuses_a_login_post_without_a_csrf_token(superuser):
    client = Client(enforce_csrf_checks=True)

    response = client.post("/admin/login/", {"username": superuser.username, "password": "pass-for-tests"})

    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_admin_refuses_a_signed_in_change_without_a_csrf_token(superuser, shelter):
    client = Client(enforce_csrf_checks=True)
    client.force_login(superuser)

    response = client.post(f"/admin/adoptions/shelter/{shelter.pk}/delete/", {"post": "yes"})

    assert response.status_code == 403 and b"CSRF verification failed" in response.content
    assert type(shelter).objects.filter(pk=shelter.pk).exists()


def test_admin_accepts_the_login_with_its_csrf_token(superuser):
    client = Client(enforce_csrf_checks=True)
    client.get("/admin/login/")
    token = client.cookies["csrftoken"].value

    response = client.post(
        "/admin/login/",
        {"username": superuser.username, "password": "pass-for-tests", "csrfmiddlewaretoken": token},
    )

    assert response.status_code == 302 and client.session["_auth_user_id"] == str(superuser.pk)


def test_a_form_post_refused_by_csrf_under_the_api_answers_json(db):
    client = Client(enforce_csrf_checks=True)

    response = client.post("/api/asyncapi/", {"anything": "1"})

    assert response.status_code == 403 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "csrf_failed"
