"""The OpenAPI document's shared parts: the error shape, headers, and errors every view can answer.

Views declare what is theirs with `extend_schema` (see `command_schema` and `query_schema`);
`AutoSchema` adds the answers any DRF view can give (401, 406, 413, 415, 429, 503).
"""

from __future__ import annotations

import re

from djangorestframework_camel_case.util import camelize_re, underscore_to_camel
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import AllowAny

from adoptions.serializers import StrictSerializer

from .negotiation import OwnMediaTypeNegotiation

# --- the one error shape (petstore/api_errors.py) ------------------------------------------


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Machine-readable, e.g. `pet_not_available`.")
    message = serializers.CharField(help_text="For people; may change between releases.")
    details = serializers.DictField(
        help_text="More about this error: `fields` for `validation_error`, `expectedVersion` and "
        "`actualVersion` for `version_conflict`, `minPosition` for `projection_behind`; else `{}`."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorBodySerializer()


ERROR_CODES = {
    400: "`validation_error` (see `details.fields`), `malformed_json`",
    401: "`not_authenticated` (no credentials), `authentication_failed` (unknown or inactive token)",
    403: "`forbidden`",
    404: "`not_found`",
    409: "`version_conflict`",
    406: "`not_acceptable`: this answers `application/json`; leave `Accept` out or allow it",
    413: "`payload_too_large`: the body is over the server's limit (64 KiB by default)",
    415: "`unsupported_media_type`: send `Content-Type: application/json`",
    422: "`idempotency_key_reused`: this `Idempotency-Key` came with a different request before",
    429: "`throttled`: too many requests; see `Retry-After`",
    503: "`database_unavailable`: try again after `Retry-After` seconds",
}


def errors(codes: dict[int, str | None]) -> dict[int, OpenApiResponse]:
    """Return error responses for these statuses: the error codes, or None for the usual ones."""
    return {
        status: OpenApiResponse(ErrorSerializer, description=f"Error: {text or ERROR_CODES[status]}.")
        for status, text in codes.items()
    }


# --- headers and parameters ------------------------------------------------------------------

IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": 200},
    OpenApiParameter.HEADER,
    description="1 to 200 characters. A retry with the same key and body gets the first answer again "
    "(with `Idempotent-Replayed: true`); the same key with another body gets 422. "
    "Failed commands are not remembered.",
)
CORRELATION_ID = OpenApiParameter(
    "X-Correlation-ID",
    str,
    OpenApiParameter.HEADER,
    description="Carried into the events' metadata (first 100 characters); a new one if absent.",
)


def response_header(name: str, statuses: list[int], description: str, *, required=True, type=int):
    return OpenApiParameter(
        name, type, OpenApiParameter.HEADER, required=required, description=description, response=statuses
    )


def retry_after(statuses: list[int], *, required=True) -> OpenApiParameter:
    return response_header("Retry-After", statuses, "Seconds to wait before trying again.", required=required)


def command_schema(
    *, request, status: int, response, errors_by_status: dict[int, str | None], location=False
):
    """Document a command: its body, answer, position headers, idempotency and errors."""
    answered = [status]
    headers = [
        response_header("X-Event-Position", answered, "Global position of the command's last event."),
        response_header(
            "Idempotent-Replayed",
            answered,
            "`true` when this is the stored answer to an earlier request with the same key.",
            required=False,
            type=str,
        ),
    ]
    if location:
        headers.append(response_header("Location", answered, "Where to read the result.", type=str))
    codes = {
        400: "`validation_error` (see `details.fields`), `malformed_json`, `invalid_idempotency_key`",
        **errors_by_status,
        403: f"{errors_by_status[403]}, `forbidden` (session authentication without a CSRF token)",
        422: None,
    }
    return extend_schema(
        request=request,
        responses={status: response, **errors(codes)},
        parameters=[IDEMPOTENCY_KEY, CORRELATION_ID, *headers],
    )


def query_schema(*, query, response, errors_by_status: dict[int, str | None]):
    """Document a read-model query: its parameters (a serializer with `minPosition`), answers, errors."""
    return extend_schema(
        responses={
            200: response,
            **errors({400: "`validation_error`, `unknown_position` (no event has `minPosition`)"}),
            **errors(errors_by_status),
            **errors(
                {
                    503: "`projection_behind` (the read model has not reached `minPosition` yet), "
                    "`projection_failed` (it stopped on an event), `database_unavailable`"
                }
            ),
        },
        parameters=[
            query,
            response_header("X-Projection-Position", [200], "Global position the read model has applied."),
        ],
    )


# --- what every view can answer --------------------------------------------------------------


class AutoSchema(openapi.AutoSchema):
    """drf-spectacular's schema, plus the errors any view can answer and Retry-After on them."""

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False  # unknown fields are a 400, say so
        return schema

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, description in errors(self._framework_errors()).items():
            responses.setdefault(str(status), self._get_response_for_code(description, str(status)))
        return responses

    def _framework_errors(self) -> dict[int, str | None]:
        found: dict[int, str | None] = {}
        if self.view.get_authenticators():
            public = all(isinstance(p, AllowAny) for p in self.view.get_permissions())
            found[401] = "`authentication_failed` (an unknown or inactive token)" if public else None
        if self.method in ("POST", "PUT", "PATCH"):
            found.update({400: None, 413: None, 415: None})
            if any(isinstance(a, SessionAuthentication) for a in self.view.get_authenticators()):
                found[403] = "`forbidden` (with session authentication: a missing CSRF token)"
        if not isinstance(self.view.get_content_negotiator(), OwnMediaTypeNegotiation):
            found[406] = None
        if self.view.get_throttles():
            found[429] = None
        found[503] = None
        return found

    def get_override_parameters(self):
        # Response headers apply only to the statuses an operation really answers.
        return [*super().get_override_parameters(), retry_after([503]), retry_after([429], required=False)]


# --- postprocessing hooks (SPECTACULAR_SETTINGS["POSTPROCESSING_HOOKS"]) ---------------------


def camelize_query_parameters(result, generator, request, public):
    """Name query parameters as clients send them (the views read `maxAge`, not `max_age`)."""
    for operations in result["paths"].values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query":
                    parameter["name"] = re.sub(camelize_re, underscore_to_camel, parameter["name"])
    return result


ASYNCAPI_PAGE = {
    "get": {
        "operationId": "asyncapi_page",
        "summary": "The AsyncAPI document as a readable page (no CDN).",
        "tags": ["contracts"],
        "security": [{}],
        "responses": {
            "200": {
                "description": "HTML built from the AsyncAPI document.",
                "content": {"text/html": {"schema": {"type": "string"}}},
            }
        },
    }
}


def add_plain_django_views(result, generator, request, public):
    """Add the API's plain Django views, which drf-spectacular does not see."""
    result["paths"]["/api/asyncapi/"] = ASYNCAPI_PAGE
    return result
