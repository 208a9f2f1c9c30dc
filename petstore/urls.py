"""URLs: the staff console at /admin/, the JSON API under /api/."""

from django.contrib import admin
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from adoptions import api
from events import api as contract
from petstore import url_converters  # noqa: F401  (registers any_case_uuid)
from petstore.api_errors import api_not_found
from petstore.api_root import ApiRootView
from readmodels import api as queries

handler400 = "petstore.api_errors.api_bad_request"
handler403 = "petstore.api_errors.api_forbidden"
handler404 = "petstore.api_errors.api_not_found"
handler500 = "petstore.api_errors.api_server_error"

api_patterns = [
    path("api/", ApiRootView.as_view(), name="api-root"),
    path("api/commands/register-pet", api.RegisterPetView.as_view(), name="register-pet"),
    path("api/commands/adopt-pet", api.AdoptPetView.as_view(), name="adopt-pet"),
    path("api/commands/return-pet", api.ReturnPetView.as_view(), name="return-pet"),
    path("api/commands/rename-pet", api.RenamePetView.as_view(), name="rename-pet"),
    path("api/adoptions", api.AdoptPetView.as_view(), name="adoption-create"),
    path(
        "api/adoptions/<any_case_uuid:adoption_id>", api.AdoptionDetailView.as_view(), name="adoption-detail"
    ),
    path(
        "api/adoptions/<any_case_uuid:adoption_id>/certificate",
        api.AdoptionCertificateView.as_view(),
        name="adoption-certificate",
    ),
    path("api/pets/<any_case_uuid:pet_id>", api.PetDetailView.as_view(), name="pet-detail"),
    path("api/pets/<any_case_uuid:pet_id>/events", api.PetEventsView.as_view(), name="pet-events"),
    path("api/asyncapi.yaml", contract.AsyncAPIYamlView.as_view(), name="asyncapi-yaml"),
    path("api/asyncapi.json", contract.AsyncAPIJsonView.as_view(), name="asyncapi-json"),
    path("api/asyncapi/", contract.asyncapi_page, name="asyncapi-page"),
    path("api/queries/available-pets", queries.AvailablePetsView.as_view(), name="available-pets"),
    path(
        "api/queries/adoption-history/<any_case_uuid:pet_id>",
        queries.AdoptionHistoryView.as_view(),
        name="adoption-history",
    ),
    path("api/queries/shelter-dashboard", queries.ShelterDashboardView.as_view(), name="shelter-dashboard"),
    path("api/queries/adoption-stats", queries.AdoptionStatsView.as_view(), name="adoption-stats"),
    path("api/queries/shelter-inventory", queries.ShelterInventoryView.as_view(), name="shelter-inventory"),
]

contract_patterns = [
    # OpenAPI: YAML by default, JSON with ?format=json or Accept: application/vnd.oai.openapi+json.
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path(
        "api/docs/",
        # GET only: its HTML renderer has no template for OPTIONS' metadata (that was a 500).
        SpectacularSwaggerSplitView.as_view(url_name="openapi-schema", http_method_names=["get", "head"]),
        name="openapi-docs",
    ),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    *api_patterns,
    *contract_patterns,
    # Anything else under /api/ answers JSON, even with DEBUG on (Django's debug 404 is HTML).
    # Exempt from CSRF: a POST to a wrong address is a 404, not a CSRF failure.
    re_path(r"^api/", csrf_exempt(api_not_found)),
]
