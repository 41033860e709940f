"""`apollo admin status` as an operator reads it (operations issue, "what an operator needs to see"): does the
server answer, which version, since when; what is stored; capacity with shared filesystems counted once;
what to do next about a failed drive and a repair with no spare drive; a scrub rate too slow for its interval.
"""

from __future__ import annotations

import os
import shutil
import time

from support import drive_state, query, wait_until

from apollo.testing.admin import admin


def test_status_says_who_answers_what_is_stored_and_what_to_do_next(make_server):
    server = make_server(drives=6)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    for n in range(3):
        s3.put_object(Bucket="data", Key=f"k{n}", Body=os.urandom(300_000))
    s3.delete_object(Bucket="data", Key="k2")  # unversioned: gone, not counted
    out = " ".join(admin("status", meta_dir=server.meta_dir).split())
    assert f"server {server.endpoint}: answering, Apollo " in out and ", up " in out, out
    assert "stored: 2 objects (versions, delete markers not counted), 585.9 KiB; scheme 4+2" in out, out
    assert "on 6 online drives (on 1 filesystems, each counted once)" in out, out  # temp dirs share one
    assert "NEXT:" not in out and "walking group -1" not in out

    wiped = server.drives[1]
    shutil.rmtree(wiped)
    wait_until(lambda: drive_state(server, wiped) == "failed", 20, "the wiped drive to be marked failed")
    (drive_id,) = query(server, "SELECT drive_id FROM drives WHERE path = ?", (str(wiped.resolve()),))[0]
    shown: list[str] = []

    def repair_waits() -> bool:  # once the failed drive's walk has queued its shards (under a loaded suite, later)
        shown[:] = [" ".join(admin("status", meta_dir=server.meta_dir).split())]  # rich wraps lines at 80 columns
        return "NEXT: repair is waiting" in shown[0]

    wait_until(repair_waits, 20, "status to say that repair waits for a spare drive")
    out = shown[0]
    assert (f"NEXT: drive {drive_id} ({wiped.resolve()}) failed: replace it: mount a new disk at "
            f"{wiped.resolve()}, then `apollo admin drive replace {wiped.resolve()} --wait`") in out, out  # fmt: skip
    assert "NEXT: repair is waiting: 5 online drives for 6-wide segments leave no spare drive" in out, out

    admin("scrub", "--rate", "1", meta_dir=server.meta_dir)  # 1 B/s: a pass would take weeks
    server.kill()
    out = " ".join(admin("status", meta_dir=server.meta_dir).split())
    assert f"server {server.endpoint}: NOT ANSWERING" in out and "last heartbeat" in out, out
    assert "WARNING: a scrub pass reads about" in out and "longer than the 168.0 h interval" in out, out



def test_repairs_failing_for_one_cause_log_one_line_per_pass_not_one_per_segment(make_server):
    """With no spare drive every segment's repair fails the same way; the log said so once per segment and
    retry (58 lines for 30 segments in 12 s), hiding the one thing to do."""
    server = make_server(drives=6)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    for n in range(30):
        s3.put_object(Bucket="data", Key=f"k{n}", Body=os.urandom(200_000))
    shutil.rmtree(server.drives[2])
    wait_until(lambda: "repair of" in server.log_tail(500), 30, "a failed repair to be logged")
    time.sleep(7)  # every segment is retried 5 s later: a second pass over all 30
    lines = [line for line in server.log_tail(2000).splitlines() if "WARNING apollo.repair: repair of" in line]
    assert 0 < len(lines) <= 8, "\n".join(lines)  # one per cause and pass (a pass takes 16 segments)
    assert "segment(s) failed: no writable drive outside the layout" in lines[0], lines[0]
