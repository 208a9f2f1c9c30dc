"""The adoption certificate: a one-page PDF drawn with ReportLab, kept in Django storage."""

from __future__ import annotations

import hashlib
import io
import logging
import time
from functools import cache
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from adoptions.models import Adoption
from events import sql

from .models import Certificate

logger = logging.getLogger(__name__)


def certificate_pdf(adoption: Adoption) -> bytes:
    """Draw the certificate: pet, new family, shelter and date."""
    buffer = io.BytesIO()
    width, height = landscape(A4)
    pdf = canvas.Canvas(buffer, pagesize=(width, height), invariant=True)
    pdf.setTitle(f"Adoption certificate — {adoption.pet.name}")
    pdf.setStrokeColor(colors.HexColor("#2f6f4f"))
    pdf.setLineWidth(4)
    pdf.rect(1.5 * cm, 1.5 * cm, width - 3 * cm, height - 3 * cm)
    lines = [
        f"{adoption.pet.name}, a {adoption.pet.species} aged {adoption.pet.age},",
        f"has found a new home with {adoption.customer.full_name},",
        f"adopted from {adoption.shelter.name}",
        f"on {timezone.localtime(adoption.created_at):%d %B %Y}.",
    ]
    regular, bold = fonts_for(lines)
    pdf.setFont(bold, 34)
    pdf.drawCentredString(width / 2, height - 5 * cm, "Certificate of Adoption")
    pdf.setFont(regular, 18)
    for index, line in enumerate(lines):
        pdf.drawCentredString(width / 2, height - (8 + 1.3 * index) * cm, line)
    pdf.setFont(regular, 10)
    pdf.drawCentredString(width / 2, 2.5 * cm, f"Adoption {adoption.id}")
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


BUILT_IN = ("Helvetica", "Helvetica-Bold")
UNICODE = ("DejaVuSans", "DejaVuSans-Bold")


def fonts_for(lines: list[str]) -> tuple[str, str]:
    """(regular, bold): PDF's built-in Helvetica when it can write every letter, else DejaVu.

    The built-in fonts know Western European letters only (cp1252): a name such as "Łukasz"
    would come out with a black box. DejaVu is embedded (a subset per PDF), which costs ten
    times the rendering and twenty times the file, so it is used only where it is needed.
    """
    try:
        "".join(lines).encode("cp1252")
        return BUILT_IN
    except UnicodeEncodeError:
        pass
    if not _unicode_fonts_registered():
        logger.warning("no DejaVu fonts in %s: some letters will not show", settings.CERTIFICATE_FONT_DIR)
        return BUILT_IN
    return UNICODE


@cache
def _unicode_fonts_registered() -> bool:
    folder = Path(settings.CERTIFICATE_FONT_DIR)
    files = [folder / f"{name}.ttf" for name in UNICODE]
    if not all(file.is_file() for file in files):
        return False
    for name, file in zip(UNICODE, files, strict=True):
        pdfmetrics.registerFont(TTFont(name, str(file)))
    return True


def certificate_generate(*, adoption: Adoption) -> Certificate:
    """Render and store the certificate once; the file name is derived from the adoption.

    A worker killed half-way leaves at most a file under that same name, which the next
    attempt replaces, so there is never a second certificate.
    """
    existing = sql.find(Certificate, adoption=adoption.id)  # plain SQL (events/sql.py): once an adoption
    if existing:
        return existing
    if settings.CERTIFICATE_EXTRA_SECONDS:  # stands in for the guide's slow certificate service
        time.sleep(settings.CERTIFICATE_EXTRA_SECONDS)
    content = certificate_pdf(adoption)
    name = f"certificates/{adoption.id}.pdf"
    if default_storage.exists(name):
        default_storage.delete(name)
    stored = default_storage.save(name, ContentFile(content))
    return sql.create(Certificate(adoption=adoption, file=stored, sha256=hashlib.sha256(content).hexdigest()))
