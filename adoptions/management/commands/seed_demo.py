"""Load idempotent demo data: two shelters with staff, two customers, ten pets."""

import hashlib
import json
import uuid

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token

from adoptions import services
from adoptions.models import Customer, PetRecord, Shelter
from events.context import CommandContext

NAMESPACE = uuid.UUID("6f1d2c9e-3f7a-4c59-9d0e-5e4b0a8f1c21")
STAFF_GROUP = "Shelter staff"
STAFF_PERMISSIONS = [
    ("adoptions", "view_shelter"),
    ("adoptions", "view_customer"),
    ("adoptions", "view_petrecord"),
    ("adoptions", "add_petrecord"),
    ("adoptions", "change_petrecord"),
    ("adoptions", "view_adoption"),
    ("events", "view_outboxmessage"),
    ("events", "view_storedevent"),
    # What the adoption steps wrote, all read-only in the admin.
    ("adoptions", "view_vetappointment"),
    ("adoptions", "view_welcomepackage"),
    ("adoptions", "view_shelterinventory"),
    ("adoptions", "view_adoptionstats"),
    ("notifications", "view_sentemail"),
    ("notifications", "view_certificate"),
    # change_delivery edits nothing (the admin has no delivery form): it is the permission to
    # redrive dead deliveries and retry an adoption's dead step (adoptions.permissions).
    ("events", "view_delivery"),
    ("events", "change_delivery"),
]

SHELTERS = [
    ("Happy Paws", "hello@happypaws.example", "happypaws-staff"),
    ("Second Chance Rescue", "team@secondchance.example", "secondchance-staff"),
]
CUSTOMERS = [("alice", "Alice Adopter", "alice@example.com"), ("bob", "Bob Bringhome", "bob@example.com")]
PETS = [  # name, species, age, shelter index
    ("Buddy", "dog", 2, 0),
    ("Max", "cat", 1, 0),
    ("Kiwi", "bird", 3, 0),
    ("Clover", "rabbit", 1, 0),
    ("Luna", "cat", 4, 0),
    ("Rex", "dog", 6, 1),
    ("Pip", "bird", 1, 1),
    ("Thumper", "rabbit", 2, 1),
    ("Mittens", "cat", 8, 1),
    ("Biscuit", "dog", 0, 1),
]


def demo_id(kind: str, name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{kind}/{name}")


def demo_token(username: str) -> str:
    """Stable per installation (derived from the secret key), so reruns print the same token."""
    return hashlib.sha1(f"{settings.SECRET_KEY}:demo-token:{username}".encode()).hexdigest()


class Command(BaseCommand):
    help = "Create demo shelters, staff, customers and pets (safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="print the demo logins as JSON"
        )

    @transaction.atomic
    def handle(self, *args, as_json: bool = False, **options):
        if not settings.DEMO_DATA_ALLOWED:
            raise CommandError(
                "seed_demo creates a superuser whose password is in the README and tokens anyone "
                "with the secret key can compute: not on a production database (DEMO_DATA_ALLOWED)."
            )
        self.passwords: dict[str, str] = {}
        admin = self._user("admin", "petstore-admin", is_staff=True, is_superuser=True)
        group = staff_group()
        shelters = []
        for name, email, username in SHELTERS:
            shelter, _ = Shelter.objects.get_or_create(
                id=demo_id("shelter", name), defaults={"name": name, "contact_email": email}
            )
            staff = self._user(username, f"{username}-pass", is_staff=True)
            staff.groups.add(group)
            shelter.staff.add(staff)
            shelters.append((shelter, staff))
        customers = []
        for username, full_name, email in CUSTOMERS:
            user = self._user(username, f"{username}-pass", email=email)
            customer, _ = Customer.objects.get_or_create(
                id=demo_id("customer", username),
                defaults={"user": user, "full_name": full_name, "email": email},
            )
            customers.append(customer)
        pets = [self._pet(name, species, age, shelters[index][0]) for name, species, age, index in PETS]
        summary = self._summary(admin, shelters, customers, pets)
        if as_json:
            self.stdout.write(json.dumps(summary, indent=2))
        else:
            self.stdout.write(
                self.style.SUCCESS(
                    f"demo data ready: {len(shelters)} shelters, {len(customers)} customers, "
                    f"{len(pets)} pets (log in at /admin/ as admin / petstore-admin)"
                )
            )

    def _user(self, username, password, *, email="", is_staff=False, is_superuser=False):
        user, created = get_user_model().objects.get_or_create(
            username=username,
            defaults={"email": email, "is_staff": is_staff, "is_superuser": is_superuser},
        )
        if created:
            user.set_password(password)
            user.save()
        Token.objects.get_or_create(user=user, defaults={"key": demo_token(username)})
        self.passwords[username] = password
        return user

    def _pet(self, name, species, age, shelter) -> PetRecord:
        pet_id = demo_id("pet", name)
        existing = PetRecord.objects.filter(id=pet_id).first()
        if existing is None:
            services.pet_register(
                pet_id=pet_id,
                shelter=shelter,
                name=name,
                species=species,
                age=age,
                context=CommandContext.system(causation_id="seed_demo"),
            )
            existing = PetRecord.objects.get(id=pet_id)
        return existing

    def _summary(self, admin, shelters, customers, pets) -> dict:
        def login(user):
            return {
                "username": user.username,
                "password": self.passwords[user.username],
                "token": Token.objects.get(user=user).key,
            }

        return {
            "admin": login(admin),
            "shelters": [{"id": str(s.id), "name": s.name, "staff": login(staff)} for s, staff in shelters],
            "customers": [{"id": str(c.id), "email": c.email, **login(c.user)} for c in customers],
            "pets": [
                {
                    "id": str(p.id),
                    "name": p.name,
                    "species": p.species,
                    "age": p.age,
                    "shelterId": str(p.shelter_id),
                }
                for p in pets
            ],
        }


def staff_group() -> Group:
    """The group shelter staff belong to, with exactly the permissions they need."""
    group, _ = Group.objects.get_or_create(name=STAFF_GROUP)
    for app_label, codename in STAFF_PERMISSIONS:
        group.permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return group
