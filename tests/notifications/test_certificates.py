"""The adoption certificate's PDF says who adopted which pet, from which shelter, and when."""

import base64
import re
import zlib

import pytest
from django.utils import timezone

from adoptions import services
from events.context import CommandContext
from events.delivery import deliver
from notifications.models import Certificate
from tests.factories import CustomerFactory, ShelterFactory, register_pet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"


def pdf_text(content: bytes) -> str:
    """The text shown on the PDF's pages, a line per text object, from its decoded content streams.

    Enough for ReportLab with its standard fonts (ASCII85 and Flate filters, literal strings
    shown with Tj); no PDF library is installed, and the certificate is compressed.
    """
    lines = []
    for obj in content.split(b"endobj"):
        header, found, rest = obj.partition(b"stream")
        if not found:
            continue
        length = int(re.search(rb"/Length (\d+)", header).group(1))
        body = rest[len(re.match(rb"\r?\n", rest).group()) :][:length]
        if b"/ASCII85Decode" in header:
            body = base64.a85decode(body, adobe=True)
        if b"/FlateDecode" in header:
            body = zlib.decompress(body)
        for text_object in re.findall(rb"\bBT\b(.*?)\bET\b", body, re.S):
            shown = re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", text_object, re.S)
            if shown:
                lines.append("".join(_unescape(s) for s in shown))
    return "\n".join(lines)


def _unescape(literal: bytes) -> str:
    """A PDF literal string's text: octal and backslash escapes undone, WinAnsi (cp1252) decoded."""

    def escape(match: re.Match) -> bytes:
        code = match.group(1)
        return bytes([int(code, 8)]) if code[:1].isdigit() else code

    return re.sub(rb"\\([0-7]{1,3}|.)", escape, literal, flags=re.S).decode("cp1252")


def test_certificate_names_the_pet_the_customer_the_shelter_and_the_date():
    shelter = ShelterFactory(name="Harbour Lane Rescue")
    pet = register_pet(shelter=shelter, name="Marmalade", species="cat", age=3)
    customer = CustomerFactory(full_name="Zoë Brontë-Okafor")
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    adoption = started.adoption

    assert deliver("notifications.certificate", adoption.adopted_event_id) == "succeeded"

    content = Certificate.objects.get(adoption=adoption).file.open("rb").read()
    lines = pdf_text(content).splitlines()
    adopted_on = timezone.localtime(adoption.created_at).date()
    assert "Certificate of Adoption" in lines
    assert "Marmalade, a cat aged 3," in lines
    assert "has found a new home with Zoë Brontë-Okafor," in lines
    assert "adopted from Harbour Lane Rescue" in lines
    assert f"on {adopted_on:%d %B %Y}." in lines


def make_certificate(customer_name: str) -> bytes:
    pet = register_pet(shelter=ShelterFactory(), name="Rex")
    customer = CustomerFactory(full_name=customer_name)
    started = services.pet_adopt(pet_id=pet.id, customer=customer, context=CommandContext.system())
    assert deliver("notifications.certificate", started.adoption.adopted_event_id) == "succeeded"
    return Certificate.objects.get(adoption=started.adoption).file.open("rb").read()


@pytest.fixture
def font_dir(settings):
    from notifications import certificates

    certificates._unicode_fonts_registered.cache_clear()  # the folder is read once per process
    yield settings
    certificates._unicode_fonts_registered.cache_clear()


def test_a_name_beyond_western_european_letters_gets_an_embedded_unicode_font(font_dir):
    from pathlib import Path

    if not (Path(font_dir.CERTIFICATE_FONT_DIR) / "DejaVuSans.ttf").is_file():
        pytest.skip(f"no DejaVu fonts in {font_dir.CERTIFICATE_FONT_DIR} (Debian: fonts-dejavu-core)")

    polish = make_certificate("Łukasz Wałęsa")
    western = make_certificate("Zoë Brontë-Okafor")

    assert b"/FontFile2" in polish and b"DejaVuSans" in polish  # a TrueType subset, embedded
    assert b"/FontFile2" not in western and b"/Helvetica" in western  # built-in: small and quick


def test_without_the_unicode_font_the_certificate_is_still_made_with_the_built_in_one(
    font_dir, tmp_path, caplog
):
    font_dir.CERTIFICATE_FONT_DIR = str(tmp_path / "no-fonts-here")

    content = make_certificate("Łukasz Wałęsa")

    assert content.startswith(b"%PDF") and b"/Helvetica" in content
    assert "no DejaVu fonts" in caplog.text
