"""HTTP load: wrk for closed-loop throughput, a paced Python generator for a fixed offered rate.

Both POST {"petId": …} with a token, one fresh id per request, and count any status other
than 2xx (a 409 for an already adopted pet included) or any socket error as a failure.
"""

from __future__ import annotations

import http.client
import json
import math
import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .harness import BENCH_DIR

LUA_SCRIPT = BENCH_DIR / "post_json.lua"


@dataclass
class LoadResult:
    ok: int = 0
    failed: int = 0
    elapsed: float = 0.0
    #: (latency in seconds, weight): raw samples weigh 1, wrk's quantiles weigh requests/2000.
    latencies: list[tuple[float, float]] = field(default_factory=list)
    ids_used: int = 0
    ran_out: bool = False

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else math.nan


def merge(results: list[LoadResult]) -> LoadResult:
    """Pool rounds: counts and times add up, latency samples are pooled with their weights."""
    total = LoadResult()
    for r in results:
        total.ok += r.ok
        total.failed += r.failed
        total.elapsed += r.elapsed
        total.latencies += r.latencies
        total.ids_used += r.ids_used
        total.ran_out |= r.ran_out
    return total


def weighted_percentile(samples: list[tuple[float, float]], p: float) -> float:
    if not samples:
        return math.nan
    ordered = sorted(samples)
    target = p / 100 * sum(w for _, w in ordered)
    running = 0.0
    for value, weight in ordered:
        running += weight
        if running >= target - 1e-9:
            return value
    return ordered[-1][0]


def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    out = subprocess.run([path, "-v"], capture_output=True, text=True).stdout.splitlines()
    return out[0].strip() if out else "wrk"


def write_ids(ids: list[str]) -> Path:
    handle = tempfile.NamedTemporaryFile("w", prefix="bench-ids-", suffix=".txt", delete=False)
    with handle:
        handle.write("\n".join(ids) + "\n")
    return Path(handle.name)


def run_wrk(
    url: str, token: str, ids: list[str], *, seconds: float, connections: int, threads: int = 2
) -> LoadResult:
    """Closed loop: `connections` clients send back to back for `seconds`."""
    id_file = write_ids(ids)
    try:
        args = [token, str(id_file), str(threads)]
        out = wrk(url, LUA_SCRIPT, args, seconds=seconds, connections=connections, threads=threads)
    finally:
        id_file.unlink()
    return parse_wrk(out)


def wrk(url: str, script: Path, args: list[str], *, seconds: float, connections: int, threads: int) -> str:
    """Run wrk with one of our Lua scripts (which print BENCH lines); return its output."""
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), url, "--", *args,
    ]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60, check=True).stdout


def parse_wrk(text: str) -> LoadResult:
    summary = re.search(r"^BENCH summary (.*)$", text, re.M)
    if summary is None:
        raise RuntimeError(f"wrk printed no summary:\n{text}")
    s = {k: int(v) for k, v in (item.split("=") for item in summary.group(1).split())}
    failed = s["status"] + s["connect"] + s["read"] + s["write"] + s["timeout"]
    ok = s["requests"] - s["status"]
    weight = s["requests"] / 2000
    quantiles = [float(us) / 1e6 for us in re.findall(r"^BENCH q \S+ (\d+)$", text, re.M)]
    return LoadResult(
        ok=ok,
        failed=failed,
        elapsed=s["duration_us"] / 1e6,
        latencies=[(q, weight) for q in quantiles],
        ids_used=s["used"],
        ran_out=bool(s["exhausted"]),
    )


class _Client:
    """One keep-alive-when-allowed connection that POSTs a pet id and times the answer."""

    def __init__(self, url: str, token: str) -> None:
        parts = urlsplit(url)
        self.path = parts.path
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        self.headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}

    def post(self, pet_id: str) -> bool:
        body = json.dumps({"petId": pet_id})
        try:
            self.connection.request("POST", self.path, body=body, headers=self.headers)
            response = self.connection.getresponse()
            response.read()
            return 200 <= response.status < 300
        except (OSError, http.client.HTTPException):
            self.connection.close()
            return False


def run_python(
    url: str,
    token: str,
    ids: list[str],
    *,
    seconds: float,
    clients: int = 16,
    rate: float | None = None,
) -> LoadResult:
    """Closed loop with `clients` threads, or open loop at `rate` requests/s (wrk2-style).

    At a fixed rate each request has a scheduled send time and its latency counts from that
    time, not from when a free thread got round to it: a stall shows up in the latency of
    every request it delayed (no coordinated omission).
    """
    result, lock = LoadResult(), threading.Lock()
    next_slot = iter(range(len(ids)))
    start = time.perf_counter() + 0.05
    end = start + seconds

    def worker() -> None:
        client = _Client(url, token)
        while True:
            with lock:
                slot = next(next_slot, None)
            if slot is None:  # every id handed out: did the list end before the time did?
                short = start + len(ids) / rate < end if rate else time.perf_counter() < end
                with lock:
                    result.ran_out |= short
                return
            scheduled = start + slot / rate if rate else time.perf_counter()
            if scheduled >= end:
                return
            if rate:
                time.sleep(max(0.0, scheduled - time.perf_counter()))
            ok = client.post(ids[slot])
            latency = time.perf_counter() - scheduled
            with lock:
                result.ids_used += 1
                result.latencies.append((latency, 1.0))
                if ok:
                    result.ok += 1
                else:
                    result.failed += 1

    workers = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=seconds + 30)
    result.elapsed = seconds
    return result
