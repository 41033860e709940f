"""What a killed test run leaves is removed by the next harness (``apollo.testing.leftovers``): done for real,
with a process killed -9 while it owned a running PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from apollo.testing import leftovers
from apollo.testing.postgres import TempPostgres

OWNER = """
import sys, time
from apollo.testing.postgres import TempPostgres
server = TempPostgres(durable=False).start()
print(server.root, server.pid(), flush=True)
time.sleep(600)
"""


def test_a_server_whose_owner_was_killed_is_removed_by_the_next_one():
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    try:
        root, postmaster = owner.stdout.readline().split()
        root, postmaster = Path(root), int(postmaster)
        assert leftovers.alive(postmaster)
    finally:
        owner.kill()  # -9: no destroy(), the server and its directory stay
        owner.wait()
    assert leftovers.alive(postmaster) and root.exists()
    TempPostgres(durable=False).destroy()  # the next harness, which never started its own
    leftovers.wait_gone([postmaster])
    assert not leftovers.alive(postmaster)
    assert not root.exists()


def test_a_live_owners_directory_and_an_unclaimed_one_are_left_alone():
    prefix = "apollo-leftovers-test-"  # not a harness's: no other test's reap races this one
    mine, unclaimed, dead = (Path(tempfile.mkdtemp(prefix=prefix)) for _ in range(3))
    leftovers.claim(mine)
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (dead / leftovers.OWNER_FILE).write_text(finished.stdout)  # an owner that has exited
    # A process naming the dead owner's directory, as a server started from it does.
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", str(dead)])
    try:
        time.sleep(0.2)
        assert leftovers.reap(prefix) == [dead]
        assert sleeper.wait(10) == -9
        assert mine.exists() and unclaimed.exists() and not dead.exists()
    finally:
        sleeper.kill()
        for root in (mine, unclaimed):
            (root / leftovers.OWNER_FILE).unlink(missing_ok=True)
            root.rmdir()
