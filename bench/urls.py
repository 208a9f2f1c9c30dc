"""The product's URLs plus the bench-only reference endpoints."""

from django.urls import path

from bench.reference_app.views import ReferenceInsertView, ReferenceReadView
from petstore.urls import handler400, handler404, handler500
from petstore.urls import urlpatterns as product_urls

__all__ = ["handler400", "handler404", "handler500", "urlpatterns"]

# Before the product's routes: they end with a catch-all for /api/.
urlpatterns = [
    path("api/bench/reference", ReferenceInsertView.as_view(), name="bench-reference"),
    path("api/bench/reference/<uuid:pk>", ReferenceReadView.as_view(), name="bench-reference-read"),
    *product_urls,
]
