"""Figure 8: GET /api/queries/available-pets with 100,000 pets available, under gunicorn.

The log holds 105,000 registered pets of which 5,000 were adopted (bench/readside.py); the
projector's own catch-up builds the read model, then ANALYZE gives the planner statistics
(autovacuum would in a running system; it is off on the bench's server). wrk keeps 16
clients busy (closed loop): each request asks for the first page with a random filter
(species in 60 % of them, maxAge in 50 %, both, or none), or now and then follows the `next`
cursor of its previous answer.
Reference: a bare public DRF endpoint reading one row by primary key (bench/reference_app),
same gunicorn (3 sync workers), middleware and renderer. Rounds alternate, then again with
one client (service time without queueing); last, one client times each query shape alone.
"""

from __future__ import annotations

import http.client
import json
import statistics
import time
import uuid
from urllib.parse import urlsplit

from .api import Gunicorn
from .harness import BENCH_DIR, Bench, Figure, Goal, abba, log
from .loadgen import LoadResult, merge, parse_wrk, weighted_percentile, wrk, wrk_version
from .readside import fresh_log, seed_pets, shelters

CLIENTS = 16
QUERY_PATH = "/api/queries/available-pets"
LUA_SCRIPT = BENCH_DIR / "get_query.lua"
FOLLOW_SHARE = 0.25  # of requests made when the previous answer had a next page
REFERENCE = "bare public DRF endpoint reading one row by primary key (bench/reference_app), same gunicorn"


def run(bench: Bench) -> list[Figure]:
    tool = wrk_version()
    if tool is None:
        raise RuntimeError("the query figure needs wrk (apt-get install wrk)")
    bench.tools["query"] = tool
    fresh_log()
    available = _build_read_model()
    reference_path = f"/api/bench/reference/{_reference_row()}"
    rounds, seconds = int(bench.scale(2, 1)), bench.scale(8, 5)
    results: dict[tuple[str, int], list[LoadResult]] = {}
    followed = 0
    try:
        with Gunicorn() as server:
            paths = {"ours": (server.url(QUERY_PATH), "query"), "ref": (server.url(reference_path), "fixed")}
            log("query: warm-up")
            _wrk(*paths["ref"], 2, CLIENTS)
            _wrk(*paths["ours"], 3, CLIENTS)
            for clients, length in ((CLIENTS, seconds), (1, bench.scale(3, 2))):
                for index, side in abba(rounds):
                    log(f"query: round {index + 1}, {side}, {clients} client(s) for {length:.0f} s")
                    result, follows = _wrk(*paths[side], length, clients)
                    results.setdefault((side, clients), []).append(result)
                    followed += follows
            shapes = _time_shapes(server.url(QUERY_PATH), repeats=int(bench.scale(40, 15)))
    finally:
        fresh_log()
    merged = {key: merge(value) for key, value in results.items()}
    return _figures(merged, followed, available, shapes)


def _build_read_model() -> int:
    """Seed the log and let available_pets catch up through its live path."""
    from django.db import connection

    from readmodels.models import PetListing
    from readmodels.projections import available_pets
    from readmodels.projector import catch_up, live_generation

    seed_pets(pets=105_000, adopt_every=21, spread=5_000, shelter_ids=shelters())
    log("query: catching available_pets up")
    while catch_up(available_pets, batch_size=5000):
        pass
    # Statistics, as autovacuum would have gathered by now in a running system; without them
    # the planner takes the fresh table for empty and scans every listing for a maxAge filter.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {PetListing._meta.db_table}")
    live = PetListing.objects.filter(generation=live_generation("available_pets"), available=True)
    return live.count()


def _reference_row() -> uuid.UUID:
    from bench.reference_app.models import ReferenceRow

    return ReferenceRow.objects.create(pet_id=uuid.uuid4(), user_id=0).id


def _wrk(url: str, mode: str, seconds: float, clients: int) -> tuple[LoadResult, int]:
    args = [mode, str(FOLLOW_SHARE)]
    out = wrk(url, LUA_SCRIPT, args, seconds=seconds, connections=clients, threads=min(2, clients))
    followed = next(
        (int(line.split()[-1]) for line in out.splitlines() if line.startswith("BENCH followed")), 0
    )
    return parse_wrk(out), followed


SHAPES = {
    "no filter": "",
    "species": "?species=cat",
    "maxAge": "?maxAge=3",
    "species+maxAge": "?species=bird&maxAge=1",
    "shelterId+species+maxAge": "?shelterId={shelter}&species=rabbit&maxAge=0",
}


def _time_shapes(url: str, *, repeats: int) -> dict[str, float]:
    """Median time of each query shape and of a page 50 deep, one client, no queueing."""
    shelter = shelters()[7]
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def get(path: str) -> tuple[float, dict]:
        began = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        elapsed = time.perf_counter() - began
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}: {body[:200]!r}")
        if response.getheader("Connection", "").lower() == "close":
            conn.close()
        return elapsed, json.loads(body)

    medians = {}
    for name, query in SHAPES.items():
        path = parts.path + query.format(shelter=shelter)
        medians[name] = statistics.median(get(path)[0] for _ in range(repeats)) * 1000
    path = parts.path  # walk 50 pages deep, then time that page
    for _ in range(50):
        path = urlsplit(get(path)[1]["next"])._replace(scheme="", netloc="").geturl()
    medians["page 51 by cursor"] = statistics.median(get(path)[0] for _ in range(repeats)) * 1000
    conn.close()
    return medians


def _figures(
    results: dict[tuple[str, int], LoadResult], followed: int, available: int, shapes: dict[str, float]
) -> list[Figure]:
    def ms(side: str, clients: int, p: float) -> float:
        return weighted_percentile(results[side, clients].latencies, p) * 1000

    def failures(label: str, r: LoadResult) -> str:
        return f"{label}: {r.ok} ok, {r.failed} failed (non-2xx or socket error) in {r.elapsed:.1f} s"

    ours, ref = results["ours", CLIENTS], results["ref", CLIENTS]
    queries = ours.ok + ours.failed + results["ours", 1].ok + results["ours", 1].failed
    notes = [
        f"{available:,} pets available; {followed:,} of {queries:,} queries followed a next cursor",
        failures("available-pets", ours),
        failures("reference", ref),
        "one client alone, median ms: " + ", ".join(f"{k} {v:.1f}" for k, v in shapes.items()),
    ]
    alone = {side: results[side, 1].rate for side in ("ours", "ref")}
    single = [f"1 client: {alone['ours']:.0f} req/s, reference {alone['ref']:.0f} req/s (no queueing)"]
    return [
        Figure(f"available-pets throughput ({CLIENTS} clients)", ours.rate, "req/s", ref.rate, REFERENCE),
        Figure(
            f"available-pets p50 ({CLIENTS} clients)",
            ms("ours", CLIENTS, 50),
            "ms",
            ms("ref", CLIENTS, 50),
            REFERENCE,
        ),
        Figure(
            f"available-pets p99 ({CLIENTS} clients)",
            ms("ours", CLIENTS, 99),
            "ms",
            ms("ref", CLIENTS, 99),
            REFERENCE,
            Goal("value", "<=", 20, "ms"),
            notes,
        ),
        Figure("available-pets p50 (1 client)", ms("ours", 1, 50), "ms", ms("ref", 1, 50), REFERENCE),
        Figure(
            "available-pets p99 (1 client)",
            ms("ours", 1, 99),
            "ms",
            ms("ref", 1, 99),
            REFERENCE,
            notes=single,
        ),
    ]
