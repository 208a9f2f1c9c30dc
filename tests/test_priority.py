"""petstore.priority: background processes run behind requests, whatever session they are in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import PROJECT_DIR

# A child that lowers its priority by 5 and says what the kernel then reports.
CHILD = """
import json, os
from petstore.priority import AUTOGROUP, run_behind_requests
before = os.getpriority(os.PRIO_PROCESS, 0)
run_behind_requests(5)
group = AUTOGROUP.read_text().strip() if AUTOGROUP.exists() else None
print(json.dumps({"before": before, "after": os.getpriority(os.PRIO_PROCESS, 0), "autogroup": group}))
"""


def run_child(*, own_session: bool) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CHILD],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=own_session,
        check=True,
    )
    return json.loads(done.stdout)


def test_a_session_leader_lowers_its_process_and_its_sessions_share():
    reported = run_child(own_session=True)
    assert reported["after"] == min(19, reported["before"] + 5)
    if reported["autogroup"] is not None:  # Linux with autogroups: "/autogroup-123 nice 5"
        assert reported["autogroup"].endswith(" nice 5"), reported


def test_a_process_in_someone_elses_session_leaves_the_sessions_share_alone():
    ours = Path("/proc/self/autogroup")
    if not ours.exists():
        pytest.skip("this kernel has no autogroups: only the process's own nice is set")
    reported = run_child(own_session=False)
    assert reported["after"] == min(19, reported["before"] + 5)
    assert reported["autogroup"] == ours.read_text().strip()  # the test's own session, untouched


def test_zero_changes_nothing():
    before = os.getpriority(os.PRIO_PROCESS, 0)
    from petstore.priority import run_behind_requests

    run_behind_requests(0)
    assert os.getpriority(os.PRIO_PROCESS, 0) == before
