"""What the read-side figures share (bench/rebuild.py, query.py, lag.py): a clean log, and a
fast, valid history of pets written straight into it.

Seeding is test-data setup, not a measured path: PostgreSQL generates the rows itself (one
INSERT … SELECT per 1,000 events, each committed on its own, so the log holds many writing
transactions as it would in production). Every payload is valid for the catalogue
(PetRegistered v2, PetAdopted v1, PetReturned v1) and every pet's versions run 1, 2, 3.
"""

from __future__ import annotations

import uuid

from .harness import log

SHELTERS = 50
SEED_CHUNK = 1000  # events per writing transaction
SEED_TABLE = "bench_seed_events"
#: Everything the commands and projectors write; TRUNCATE, because the log refuses DELETE
#: (and TRUNCATE too, unless the session says petstore.erase_event_log = on).
WRITTEN_TABLES = (
    "event_log",
    "event_snapshot",
    "event_outbox",
    "event_delivery",
    "readmodels_projectionstate",
    "readmodels_projectiondeadletter",
    "readmodels_petlisting",
    "readmodels_adoptionhistoryentry",
    "readmodels_shelterdashboard",
    "adoptions_petrecord",
)


def fresh_log() -> None:
    """Empty the log, the read models and the pets (with what references them), at once."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET petstore.erase_event_log = on")  # the log refuses TRUNCATE otherwise
        cursor.execute(f"TRUNCATE {', '.join(WRITTEN_TABLES)} CASCADE")
        cursor.execute("RESET petstore.erase_event_log")


def shelters(count: int = SHELTERS) -> list[uuid.UUID]:
    """This module's shelters (the projection looks their names up), created once per run."""
    from adoptions.models import Shelter

    for n in range(count):
        Shelter.objects.get_or_create(
            name=f"Read-side Shelter {n:02d}", defaults={"contact_email": f"shelter{n}@example.com"}
        )
    names = [f"Read-side Shelter {n:02d}" for n in range(count)]
    return list(Shelter.objects.filter(name__in=names).order_by("name").values_list("id", flat=True))


def seed_pets(
    *, pets: int, adopt_every: int, return_every: int = 0, spread: int, shelter_ids: list[uuid.UUID]
) -> int:
    """Write a year of history for `pets` pets; return how many events went in.

    Pet i is registered at step i; every `adopt_every`-th pet is adopted `spread` steps later
    and every `return_every`-th (a multiple of adopt_every) returned `spread` steps after that,
    so an adoption lands a few batches after its registration, as in a live log.
    """
    from django.db import connection

    if return_every and return_every % adopt_every:
        raise ValueError("only adopted pets can be returned")
    branches = [
        f"SELECT i, 1, 'PetRegistered', i::bigint FROM generate_series(0, {pets - 1}) i",
        f"SELECT i, 2, 'PetAdopted', i + {spread} FROM generate_series(0, {pets - 1}, {adopt_every}) i",
    ]
    if return_every:
        returned = f"generate_series(0, {pets - 1}, {return_every}) i"
        branches.append(f"SELECT i, 3, 'PetReturned', i + {2 * spread} FROM {returned}")
    shelter_array = "ARRAY[" + ",".join(f"'{s}'" for s in shelter_ids) + "]::uuid[]"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {SEED_TABLE}")
        cursor.execute("SELECT setseed(0.42)")
        cursor.execute(
            f"""CREATE UNLOGGED TABLE {SEED_TABLE} AS
            SELECT row_number() OVER (ORDER BY step, version) AS ord, pet, version, kind, step,
                   (ARRAY['dog','cat','bird','rabbit'])[1 + floor(random() * 4)::int] AS species,
                   floor(random() * 16)::int AS age
            FROM ({" UNION ALL ".join(branches)}) AS e(pet, version, kind, step)"""
        )
        cursor.execute(f"CREATE INDEX ON {SEED_TABLE} (ord)")
        cursor.execute(f"SELECT count(*), max(step) FROM {SEED_TABLE}")
        total, last_step = cursor.fetchone()
        log(f"read side: writing {total:,} events ({SEED_CHUNK:,} per transaction)")
        # A DO block may COMMIT between statements: one writing transaction per chunk.
        cursor.execute(
            f"""DO $$
            BEGIN
              FOR c IN 0 .. {(total - 1) // SEED_CHUNK} LOOP
                {_insert_chunk_sql(shelter_array, last_step)}
                COMMIT;
              END LOOP;
            END $$"""
        )
        cursor.execute(f"DROP TABLE {SEED_TABLE}")
        cursor.execute("ANALYZE event_log")
    return total


def _insert_chunk_sql(shelter_array: str, last_step: int) -> str:
    """One chunk of the seed table as event_log rows, in step order (positions follow)."""
    shelter = f"({shelter_array})[1 + pet % {SHELTERS}]"
    adoption = "md5('adoption' || pet)::uuid"
    return f"""
    INSERT INTO event_log (event_id, stream_type, stream_id, stream_version, event_type,
                           schema_version, payload, metadata, recorded_at)
    SELECT gen_random_uuid(), 'pet', md5('pet' || pet)::uuid, version, kind,
      CASE kind WHEN 'PetRegistered' THEN 2 ELSE 1 END,
      CASE kind
        WHEN 'PetRegistered' THEN jsonb_build_object(
          'name', 'Pet ' || pet, 'species', species, 'age', age, 'shelter_id', {shelter},
          'photo_url', CASE WHEN pet % 3 = 0 THEN 'https://photos.example.com/' || pet || '.jpg' END)
        WHEN 'PetAdopted' THEN jsonb_build_object(
          'adoption_id', {adoption}, 'customer_id', md5('customer' || pet % 1000)::uuid,
          'shelter_id', {shelter})
        ELSE jsonb_build_object('adoption_id', {adoption}, 'reason', 'Allergic after all')
      END,
      jsonb_build_object('correlation_id', gen_random_uuid(), 'causation_id', NULL, 'actor_id', NULL),
      now() - interval '365 days' * (1 - step::float8 / {max(last_step, 1)})
    FROM {SEED_TABLE}
    WHERE ord > c * {SEED_CHUNK} AND ord <= (c + 1) * {SEED_CHUNK}
    ORDER BY ord;"""
