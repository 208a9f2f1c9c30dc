"""One place that turns every failure of an API request into a JSON error with a code.

Body: {"error": {"code": "pet_not_available", "message": "...", "details": {...}}}.
"""

from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, OperationalError
from django.http import Http404, JsonResponse
from django.views import csrf, defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from adoptions.domain import DomainError
from events.store import ConcurrencyConflict
from petstore.parsers import PayloadTooLarge

logger = logging.getLogger(__name__)

DRF_CODES = {
    "parse_error": "malformed_json",
    "not_authenticated": "not_authenticated",
    "authentication_failed": "authentication_failed",
    "permission_denied": "forbidden",
    "not_found": "not_found",
    "method_not_allowed": "method_not_allowed",
    "not_acceptable": "not_acceptable",
    "unsupported_media_type": "unsupported_media_type",
    "throttled": "throttled",
}


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status_code: int, code: str, message: str, details=None, headers=None) -> Response:
    return Response(error_body(code, message, details), status=status_code, headers=headers)


def json_exception_handler(exc, context):
    """DRF's EXCEPTION_HANDLER: map domain, concurrency and framework errors to JSON."""
    if isinstance(exc, DomainError):
        return error_response(exc.status, exc.code, str(exc), exc.details)
    if isinstance(exc, ConcurrencyConflict):
        return error_response(
            409,
            "version_conflict",
            str(exc),
            {"expected_version": exc.expected, "actual_version": exc.actual},
        )
    if isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    if isinstance(exc, OperationalError):
        logger.exception("database unavailable")
        return error_response(503, "database_unavailable", "Try again shortly.", headers={"Retry-After": "5"})
    if isinstance(exc, exceptions.ValidationError):
        return error_response(400, "validation_error", "The request is not valid.", {"fields": exc.detail})
    response = drf_exception_handler(exc, context)
    if response is None:
        if isinstance(exc, DatabaseError):
            logger.exception("database error")
        return None  # a real bug: Django's handler500 answers with JSON for /api/
    code = _code_of(exc)
    message = _message_of(response.data)
    response.data = error_body(code, message)
    return response


def _code_of(exc) -> str:
    if isinstance(exc, Http404):
        return "not_found"
    if isinstance(exc, DjangoPermissionDenied):
        return "forbidden"
    codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
    code = codes if isinstance(codes, str) else "error"
    return DRF_CODES.get(code, code)


def _message_of(data) -> str:
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])
    return str(data)


def _json_for_api(request, status: int, code: str, message: str) -> JsonResponse | None:
    """The JSON error for a request under /api/ (None elsewhere: Django's own page answers)."""
    if request.path.startswith("/api/"):
        return JsonResponse(error_body(code, message), status=status)
    return None


def api_not_found(request, exception=None):
    """handler404: JSON for the API, Django's page elsewhere."""
    return _json_for_api(request, 404, "not_found", "No such resource.") or defaults.page_not_found(
        request, exception
    )


def api_server_error(request):
    """handler500: even a bug answers the API with JSON, never an HTML page."""
    message = "Something went wrong on our side; it has been logged."
    return _json_for_api(request, 500, "internal_error", message) or defaults.server_error(request)


def api_bad_request(request, exception=None):
    message = str(exception or "Bad request.")
    return _json_for_api(request, 400, "bad_request", message) or defaults.bad_request(request, exception)


def api_forbidden(request, exception=None):
    """handler403: JSON for the API, Django's page elsewhere."""
    forbidden = _json_for_api(request, 403, "forbidden", "You may not do this.")
    return forbidden or defaults.permission_denied(request, exception)


def api_csrf_failure(request, reason=""):
    """CSRF_FAILURE_VIEW: a refused form post to a plain Django view under /api/ answers JSON too."""
    refused = _json_for_api(request, 403, "csrf_failed", f"CSRF verification failed: {reason}")
    return refused or csrf.csrf_failure(request, reason)


#: The code an error under /api/ gets when something other than our DRF views answered it.
STATUS_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "throttled",
    500: "internal_error",
    503: "service_unavailable",
}
#: Headers an error keeps when it is rewritten as JSON: they tell the client what to do next.
KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


class ApiErrorsAsJson:
    """Middleware: under /api/, every error is JSON with a code, whoever answered it.

    Our DRF views answer JSON already (json_exception_handler). Others can answer under
    /api/ too: the OpenAPI views (their errors rendered as HTML or YAML, like their pages),
    plain Django views (a bare 405), and a bug, which with DEBUG on would be Django's HTML
    debug page (handler500 only runs with DEBUG off). Pages that succeed keep their type.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if not request.path.startswith("/api/") or response.status_code < 400:
            return response
        if response.get("Content-Type", "").startswith("application/json"):
            return response
        status = response.status_code
        code = STATUS_CODES.get(status, "error")
        reason = getattr(response, "reason_phrase", "") or code.replace("_", " ")
        rewritten = JsonResponse(error_body(code, f"{reason}."), status=status)
        for header in KEPT_HEADERS:
            if header in response:
                rewritten[header] = response[header]
        return rewritten

    def process_exception(self, request, exception):
        """A bug under /api/: logged as Django logs it, answered as handler500 answers it."""
        if not request.path.startswith("/api/"):
            return None
        logging.getLogger("django.request").error(
            "Internal Server Error: %s",
            request.path,
            exc_info=(type(exception), exception, exception.__traceback__),
            extra={"status_code": 500, "request": request},
        )
        return api_server_error(request)
