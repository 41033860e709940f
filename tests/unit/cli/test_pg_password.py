"""A PostgreSQL URL without a password, and a server that asks for one: one line saying what to set.

The operator's report: ``PGPASSWORD`` not exported, and ``apollo admin status --database URL`` (or
``apollo meta``) printed a 25-line traceback out of the connection pool. The session's PostgreSQL
trusts its own role, so the test makes a role that must give a password (a pg_hba line of its own).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from apollo.testing.server import free_port

PASSWORD = "apollo-test-pw-1"


@pytest.fixture
def password_url(postgres, tmp_path) -> Iterator[str]:
    """The URL (no password in it) of a database whose owner must log in with ``PASSWORD``."""
    import psycopg

    role = f"apollo_pw_{os.getpid()}"
    database = f"apollo_pw_{os.getpid()}"
    with psycopg.connect(postgres.url(), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        conn.execute(f'CREATE DATABASE "{database}" OWNER {role} TEMPLATE template0')
        hba = conn.execute("SHOW hba_file").fetchone()[0]
        with open(hba) as f:
            original = f.read()
        with open(hba, "w") as f:  # first match wins: this role alone needs a password
            f.write(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}"
    finally:
        with psycopg.connect(postgres.url(), autocommit=True) as conn:
            with open(hba, "w") as f:
                f.write(original)
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
            conn.execute(f"DROP ROLE {role}")


def _apollo(args: list[str], tmp_path, password: str | None = None) -> subprocess.CompletedProcess:
    """``apollo ARGS`` with no password anywhere libpq looks (or ``password`` in PGPASSWORD)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env |= {"PGPASSFILE": str(tmp_path / "no-pgpass"), "APOLLO_ROOT_USER": "admin",
            "APOLLO_ROOT_PASSWORD": "a-long-root-password"}  # fmt: skip
    if password is not None:
        env["PGPASSWORD"] = password
    return subprocess.run([sys.executable, "-m", "apollo", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def _one_line(done: subprocess.CompletedProcess) -> str:
    assert done.returncode != 0, done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_admin_commands_say_to_set_pgpassword(password_url, tmp_path):
    for command in (["admin", "status"], ["admin", "drive", "list"], ["admin", "node", "remove", "n1"]):
        line = _one_line(_apollo([*command, "--database", password_url], tmp_path))
        assert "cannot open the metadata database" in line and password_url in line, line
        assert "asks for a password" in line and "PGPASSWORD" in line, line
    wrong = _one_line(_apollo(["admin", "status", "--database", password_url], tmp_path, password="wrong"))
    assert "password authentication failed" in wrong and "PGPASSWORD" in wrong, wrong
    done = _apollo(["admin", "status", "--database", password_url], tmp_path, password=PASSWORD)
    assert done.returncode == 0, done.stderr  # with the password, the same command works


def test_the_metadata_role_says_to_set_pgpassword(password_url, tmp_path):
    line = _one_line(_apollo(["meta", "--database", password_url, "--address", f"127.0.0.1:{free_port()}"], tmp_path))
    assert line.startswith("apollo meta: cannot open the metadata database"), line
    assert "asks for a password" in line and "PGPASSWORD" in line, line


def test_the_all_in_one_server_and_key_commands_say_to_set_pgpassword(password_url, tmp_path):
    server = ["server", str(tmp_path / "d1"), "--meta-dir", str(tmp_path / "meta"), "--database", password_url,
              "--address", f"127.0.0.1:{free_port()}"]  # fmt: skip
    for command in (server, ["admin", "key", "list", "--database", password_url]):
        line = _one_line(_apollo(command, tmp_path))
        assert "asks for a password" in line and "PGPASSWORD" in line, line
