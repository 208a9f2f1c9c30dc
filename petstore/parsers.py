"""The API's JSON parser: camelCase in, with a body-size limit DRF would otherwise skip.

Kept apart from api_errors: DRF resolves DEFAULT_PARSER_CLASSES while rest_framework.views
is being imported, so this module must not import DRF's views itself (a circular import that
surfaced as "CSRF failure view could not be imported" whenever the CSRF check ran first).
"""

from __future__ import annotations

from django.conf import settings
from djangorestframework_camel_case.parser import CamelCaseJSONParser
from rest_framework import exceptions, status


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "payload_too_large"


class LimitedCamelCaseJSONParser(CamelCaseJSONParser):
    """camelCase JSON parser that refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE.

    DRF reads the stream directly, so Django's own body-size check never runs for JSON.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
            raise PayloadTooLarge()
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # a few hundred nested arrays: renaming their keys recurses
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
