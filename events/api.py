"""The event contract over HTTP: AsyncAPI as YAML, JSON and a readable page (no CDN)."""

import yaml
from django.http import HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from petstore.negotiation import OwnMediaTypeNegotiation

from .asyncapi import document


def asyncapi_schema(media_type: str):
    response = OpenApiResponse(OpenApiTypes.OBJECT, description="The AsyncAPI 3.0 document.")
    return extend_schema(tags=["contracts"], responses={(200, media_type): response})


class AsyncAPIYamlView(APIView):
    permission_classes = [AllowAny]
    content_negotiation_class = OwnMediaTypeNegotiation  # YAML even to Accept: application/yaml

    @asyncapi_schema("application/yaml")
    def get(self, request):
        """The event contract: AsyncAPI 3.0 as YAML."""
        body = yaml.safe_dump(document(), sort_keys=False, allow_unicode=True)
        return HttpResponse(body, content_type="application/yaml; charset=utf-8")


class AsyncAPIJsonView(APIView):
    permission_classes = [AllowAny]
    content_negotiation_class = OwnMediaTypeNegotiation

    @asyncapi_schema("application/json")
    def get(self, request):
        """The event contract: AsyncAPI 3.0 as JSON."""
        return JsonResponse(document(), json_dumps_params={"indent": 2})


@require_safe
def asyncapi_page(request):
    """A page built from the document: channels, their messages, schemas and operations."""
    doc = document()
    messages = doc["components"]["messages"]
    channels = [
        {
            "id": channel_id,
            "address": channel["address"],
            "description": channel["description"],
            "messages": [messages[ref["$ref"].rsplit("/", 1)[1]] for ref in channel["messages"].values()],
            "operations": [
                {"id": op_id, **op}
                for op_id, op in doc["operations"].items()
                if op["channel"]["$ref"] == f"#/channels/{channel_id}"
            ],
        }
        for channel_id, channel in doc["channels"].items()
    ]
    return render(request, "events/asyncapi.html", {"doc": doc, "channels": channels})
