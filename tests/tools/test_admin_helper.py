"""The ``apollo admin`` runner the tests share (``apollo.testing.admin``): stdout on success, the refusal's
stderr when one is expected, and a failure that shows what the command printed."""

from __future__ import annotations

import sys

import pytest

from apollo.testing.admin import AdminFailed, admin, admin_refused, run_admin


def test_admin_returns_the_command_s_stdout():
    assert "usage: apollo admin" in admin("--help")


def test_a_failing_command_raises_with_its_stderr_in_the_message():
    with pytest.raises(AdminFailed) as failed:
        admin("no-such-command")
    message = str(failed.value)
    assert "exit status 2" in message and "invalid choice: 'no-such-command'" in message
    assert failed.value.result.returncode == 2
    assert isinstance(failed.value, AssertionError)  # a test failure, not an error of the test


def test_admin_refused_returns_the_refusal_and_fails_on_success():
    assert "invalid choice: 'no-such-command'" in admin_refused("no-such-command")
    with pytest.raises(AdminFailed, match="succeeded where a refusal was expected"):
        admin_refused("--help")


def test_the_metadata_location_is_appended_and_run_admin_returns_the_process(tmp_path):
    done = run_admin("status", "--help", meta_dir=tmp_path)
    assert done.args[:4] == [sys.executable, "-m", "apollo", "admin"]
    assert done.args[-2:] == ["--meta-dir", str(tmp_path)] and done.returncode == 0
    assert run_admin("status", "--help", database="postgresql://x/y").args[-2:] == ["--database", "postgresql://x/y"]
    assert run_admin("no-such-command").returncode == 2  # unchecked by default
    with pytest.raises(AdminFailed):
        run_admin("no-such-command", check=True)
