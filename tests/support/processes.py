"""Run project commands as child processes against the test database and broker."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

PROJECT_DIR = Path(settings.BASE_DIR)


def database_url() -> str:
    """Return a DATABASE_URL naming the database this test runs against (test_…)."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    return f"postgres://{credentials}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def child_env(**overrides: str) -> dict[str, str]:
    """Environment for a child process: test settings, this test's database and broker."""
    inherited = ("PETSTORE_RELAY_", "PETSTORE_HANDLER_", "DATABASE_")  # no fault hooks, no other database
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(
        DJANGO_SETTINGS_MODULE="petstore.settings.test",
        CELERY_BROKER_URL=settings.CELERY_BROKER_URL,
        PYTHONUNBUFFERED="1",
    )
    if connection.vendor == "postgresql":  # an SQLite test database is in this process's memory
        env["DATABASE_URL"] = database_url()
    env.update(overrides)
    return env


def manage(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start a long-running child in its own process group, output to `log`."""
    with log.open("wb") as out:
        return subprocess.Popen(
            args,
            cwd=PROJECT_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen, *, grace: float = 10) -> None:
    """SIGTERM the child (a warm shutdown), then SIGKILL its whole group if it lingers."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # the group is the child's own: its pool too
    process.wait(timeout=grace)


def celery_worker(
    *, queues: list[str], concurrency: int = 1, name: str = "worker", loglevel: str = "INFO"
) -> list[str]:
    """Return the command line of a Celery worker consuming `queues` (no gossip or mingle)."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "petstore",
        "worker",
        "-Q",
        ",".join(queues),
        "-c",
        str(concurrency),
        "-n",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-l",
        loglevel,
    ]


def wait_for_ready(worker: subprocess.Popen, log: Path, *, timeout: float = 30) -> None:
    """Wait for the worker's "ready." line, so nothing is sent before it consumes."""
    deadline = time.monotonic() + timeout
    while " ready." not in log.read_text(errors="replace"):
        if worker.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"worker not ready (exit {worker.poll()}):\n{tail}")
        time.sleep(0.1)


def children_of(pid: int) -> list[int]:
    """Return the ids of a process's direct children (Linux /proc), e.g. a worker's pool."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended while we looked
            continue
        if int(fields[1]) == pid:  # fields after "(comm)": state, ppid, …
            children.append(int(stat.parent.name))
    return children
