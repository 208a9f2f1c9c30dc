"""GET /api/: where everything is, so a client can start from one address."""

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

# (section, name in the answer, URL name): the addresses that take no id.
ENTRY_POINTS = [
    ("commands", "registerPet", "register-pet"),
    ("commands", "adoptPet", "adopt-pet"),
    ("commands", "returnPet", "return-pet"),
    ("commands", "renamePet", "rename-pet"),
    ("commands", "adoptions", "adoption-create"),
    ("queries", "availablePets", "available-pets"),
    ("queries", "shelterDashboard", "shelter-dashboard"),
    ("queries", "adoptionStats", "adoption-stats"),
    ("queries", "shelterInventory", "shelter-inventory"),
    ("contracts", "openapi", "openapi-schema"),
    ("contracts", "openapiDocs", "openapi-docs"),
    ("contracts", "asyncapiYaml", "asyncapi-yaml"),
    ("contracts", "asyncapiJson", "asyncapi-json"),
    ("contracts", "asyncapiPage", "asyncapi-page"),
]
# Addresses of one resource, as templates (RFC 6570) a client fills in.
TEMPLATES = {
    "adoption": "/api/adoptions/{adoptionId}",
    "adoptionCertificate": "/api/adoptions/{adoptionId}/certificate",
    "pet": "/api/pets/{petId}{?asOf}",
    "petEvents": "/api/pets/{petId}/events",
    "adoptionHistory": "/api/queries/adoption-history/{petId}",
}


class ApiRootView(APIView):
    """The API's entry points: absolute links, and templates for the addresses that take an id."""

    permission_classes = [AllowAny]

    @extend_schema(summary="Entry points", responses={200: OpenApiTypes.OBJECT}, tags=["api"])
    def get(self, request):
        body: dict[str, dict[str, str]] = {}
        for section, name, url_name in ENTRY_POINTS:
            body.setdefault(section, {})[name] = request.build_absolute_uri(reverse(url_name))
        origin = request.build_absolute_uri("/")[:-1]
        body["templates"] = {name: origin + path for name, path in TEMPLATES.items()}
        return Response(body)
