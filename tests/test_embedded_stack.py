"""`make run` with no servers: every Procfile process on SQLite and the filesystem broker.

The processes get a laptop's environment (no DATABASE_URL, CELERY_BROKER_URL, REDIS_URL,
EMAIL_URL, DJANGO_SETTINGS_MODULE), so each entry point picks the embedded defaults on its own,
with PETSTORE_VAR_DIR pointing at this test's folder instead of the repository's var/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from honcho.environ import parse_procfile

from tests.support.processes import PROJECT_DIR, manage

VENV_BIN = Path(sys.executable).parent  # the Makefile puts $(VENV)/bin first on PATH
#: What a laptop's shell passes on; everything else (service URLs, settings module, the
#: developer's knobs) stays out, so the defaults in petstore/settings are what gets tested.
PASSED_ON = ("HOME", "USER", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR")
STEPS = 7
DEADLINE_SECONDS = 60
SHUTDOWN_GRACE_SECONDS = 15  # honcho waits 5; a Celery worker's warm shutdown takes 5-7 s here


@dataclass
class Process:
    name: str
    command: str
    popen: subprocess.Popen
    log: Path
    port: int
    killed: bool = False  # still running SHUTDOWN_GRACE_SECONDS after SIGTERM


def laptop_env(var_dir: Path) -> dict[str, str]:
    """Return the environment `make run` gives its commands on a laptop with no servers."""
    env = {name: os.environ[name] for name in PASSED_ON if name in os.environ}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        PETSTORE_VAR_DIR=str(var_dir),
        PYTHONUNBUFFERED="1",
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_procfile(env: dict[str, str], logs: Path) -> list[Process]:
    """Start every Procfile process as honcho does: `sh -c`, its own session, its own $PORT."""
    processes = []
    try:
        for name, command in parse_procfile((PROJECT_DIR / "Procfile").read_text()).processes.items():
            port, log = free_port(), logs / f"{name}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    ["/bin/sh", "-c", command],
                    cwd=PROJECT_DIR,
                    env={**env, "PORT": str(port)},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            processes.append(Process(name, command, popen, log, port))
    except BaseException:
        stop_all(processes)
        raise
    return processes


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def signal_groups(processes: list[Process], signum: int) -> None:
    for process in processes:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.popen.pid, signum)


def wait_for_groups(processes: list[Process], timeout: float) -> list[Process]:
    """Reap the leaders and wait for their groups (pool children too) to end; return the rest."""
    deadline = time.monotonic() + timeout
    while True:
        for process in processes:
            process.popen.poll()
        left = [p for p in processes if p.popen.returncode is None or group_alive(p.popen.pid)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def stop_all(processes: list[Process]) -> None:
    """SIGTERM every group (honcho's Ctrl-C), then SIGKILL the ones that linger."""
    signal_groups(processes, signal.SIGTERM)
    lingering = wait_for_groups(processes, SHUTDOWN_GRACE_SECONDS)
    for process in lingering:
        process.killed = True
    signal_groups(lingering, signal.SIGKILL)
    wait_for_groups(lingering, 10)


@contextlib.contextmanager
def running_procfile(env: dict[str, str], logs: Path) -> Iterator[list[Process]]:
    """Run the Procfile's processes; stop them all on the way out, whatever happened."""
    processes = start_procfile(env, logs)
    try:
        yield processes
    finally:
        stop_all(processes)


def is_celery_worker(command: str) -> bool:
    return command.split()[:1] == ["celery"] and " worker" in command


def logs_of(processes: list[Process]) -> str:
    return "\n".join(
        f"--- {p.name} (exit {p.popen.poll()}) ---\n{p.log.read_text(errors='replace')[-3000:]}"
        for p in processes
    )


class Api:
    """Just enough of an HTTP client: JSON in and out, a token, the answer's status and headers."""

    def __init__(self, port: int, processes: list[Process]) -> None:
        self.base, self.processes = f"http://127.0.0.1:{port}", processes
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # no http_proxy

    def call(self, method: str, path: str, *, token: str | None = None, body: dict | None = None):
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"} if body is not None else {},
        )
        if token:
            request.add_header("Authorization", f"Token {token}")
        try:
            with self.opener.open(request, timeout=15) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()

    def json(self, method: str, path: str, **kwargs) -> tuple[int, dict, dict]:
        status, headers, content = self.call(method, path, **kwargs)
        return status, headers, json.loads(content)

    def poll(self, describe: str, attempt, timeout: float = DEADLINE_SECONDS):
        """Call attempt() until it returns something; fail with every log past the deadline."""
        deadline = time.monotonic() + timeout
        while (outcome := attempt()) is None:
            exited = [p.name for p in self.processes if p.popen.poll() is not None]
            if exited or time.monotonic() > deadline:
                raise AssertionError(
                    f"{describe}: exited early {exited}\n{logs_of(self.processes)}"
                    if exited
                    else f"{describe}: not within {timeout} s\n{logs_of(self.processes)}"
                )
            time.sleep(0.2)
        return outcome

    def wait_until_up(self) -> None:
        def answers():
            with contextlib.suppress(OSError):  # refused, reset: gunicorn is still starting
                status, _, _ = self.call("GET", "/api/")
                return status if status == 200 else None
            return None

        self.poll("the web process answering GET /api/", answers)


def seed(env: dict[str, str]) -> dict:
    """Migrate the SQLite file and load the demo data, as `make run` does first."""
    for args in (["migrate", "--noinput"], ["seed_demo", "--json"]):
        done = manage(*args, env=env, timeout=120)
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def completed(api: Api, adoption_id: str, token: str):
    """Return an attempt that answers the adoption once no step is left to run."""

    def attempt():
        status, _, adoption = api.json("GET", f"/api/adoptions/{adoption_id}", token=token)
        assert status == 200, adoption
        assert adoption["status"] != "needs_attention", adoption["steps"]
        return adoption if adoption["status"] == "completed" else None

    return attempt


def caught_up(api: Api, position: int):
    """Return an attempt that answers the available pets as of `position` (None while behind)."""

    def attempt():
        status, headers, page = api.json("GET", f"/api/queries/available-pets?minPosition={position}")
        if status == 503 and page["error"]["code"] == "projection_behind":
            return None
        assert status == 200, page
        assert int(headers["X-Projection-Position"]) >= position
        return page

    return attempt


def test_make_run_on_embedded_defaults_completes_an_adoption_in_the_worker(tmp_path):
    # Given: a fresh var folder, migrated and seeded, and every Procfile process running on it
    var_dir, logs = tmp_path / "var", tmp_path / "logs"
    logs.mkdir()
    env = laptop_env(var_dir)
    demo = seed(env)
    token = demo["customers"][0]["token"]
    pet_id = demo["pets"][0]["id"]

    with running_procfile(env, logs) as processes:
        web = next((p for p in processes if p.name == "web"), None)
        assert web is not None, "the Procfile has no web process"
        api = Api(web.port, processes)
        api.wait_until_up()

        # When: a customer adopts a pet over HTTP
        status, headers, started = api.json("POST", "/api/adoptions", token=token, body={"petId": pet_id})
        assert status == 202, started
        assert started["status"] == "processing"
        assert headers["Location"].endswith(f"/api/adoptions/{started['adoptionId']}")

        # Then: the worker runs all seven steps on its own, and the certificate is a PDF
        adoption = api.poll("the adoption completing", completed(api, started["adoptionId"], token))
        assert [s["status"] for s in adoption["steps"]] == ["succeeded"] * STEPS, adoption["steps"]
        status, _, pdf = api.call("GET", urlsplit(adoption["certificateUrl"]).path, token=token)
        assert status == 200 and pdf.startswith(b"%PDF"), pdf[:200]

        # And the projector has taken the pet off the public listing
        listing = api.poll("the available pets caught up", caught_up(api, started["position"]))
        assert pet_id not in [pet["petId"] for pet in listing["results"]]
        assert len(listing["results"]) == len(demo["pets"]) - 1

    # And every process has ended, all but Celery's on SIGTERM alone (a worker's pool children
    # get the group's SIGTERM too; one can die holding the pool's queue lock, and billiard then
    # waits for that lock forever at exit). The steps ran as Celery tasks, all in var_dir.
    assert [p.name for p in processes if p.popen.returncode is None or group_alive(p.popen.pid)] == []
    stuck = [p for p in processes if p.killed and not is_celery_worker(p.command)]
    assert not stuck, f"still running {SHUTDOWN_GRACE_SECONDS} s after SIGTERM:\n{logs_of(stuck)}"
    output = "\n".join(p.log.read_text(errors="replace") for p in processes)
    for step in adoption["steps"]:
        assert re.search(rf"Task {re.escape(step['name'])}\[[-0-9a-f]+\] succeeded in ", output), step
    assert (var_dir / "petstore.sqlite3").is_file() and (var_dir / "broker" / "queue").is_dir()
