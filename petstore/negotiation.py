"""Content negotiation for endpoints that answer one kind of file (a PDF, a YAML document)."""

from rest_framework.negotiation import BaseContentNegotiation


class OwnMediaTypeNegotiation(BaseContentNegotiation):
    """Answer with the view's own renderer whatever the Accept header asks.

    DRF would answer `Accept: application/pdf` with 406 because only the JSON renderer (used for
    errors) is configured; disregarding Accept instead is allowed (RFC 9110, section 12.5.1).
    """

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type
