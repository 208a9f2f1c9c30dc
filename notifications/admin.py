"""What the notification steps produced, for the staff of the adoption's shelter: read-only."""

from __future__ import annotations

from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from adoptions.admin_scoping import ReadOnlyAdminMixin, ShelterScopedAdmin
from adoptions.permissions import shelter_event_ids

from .models import Certificate, SentEmail


@admin.register(SentEmail)
class SentEmailAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["sent_at", "handler", "to", "subject", "event_id"]
    list_filter = ["handler"]
    search_fields = ["to", "subject", "=event_id"]
    date_hierarchy = "sent_at"

    def scope(self, queryset, shelter_ids):
        return queryset.filter(event_id__in=shelter_event_ids(shelter_ids))


@admin.register(Certificate)
class CertificateAdmin(ReadOnlyAdminMixin, ShelterScopedAdmin):
    list_display = ["adoption", "created_at", "download"]
    fields = ["adoption", "sha256", "created_at", "download"]
    readonly_fields = fields

    def scope(self, queryset, shelter_ids):
        return queryset.filter(adoption__shelter__in=shelter_ids)

    @admin.display(description="PDF")
    def download(self, certificate: Certificate):
        # Served by the API (the admin's session works there); media files are not public.
        url = reverse("adoption-certificate", args=[certificate.adoption_id])
        return format_html('<a href="{}">download</a>', url)
