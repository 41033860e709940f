"""The declared metadata API (``apollo.proto.meta_api``) is exactly what the service, the RPC and the stub offer."""

from __future__ import annotations

import inspect

from apollo.client.remote_meta import RemoteMeta
from apollo.meta.rpc_service import MetaRpc
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto import meta_api
from apollo.proto.meta_api import CALLS, REMOTE, Runs, Who

STUB_OWN = {"start", "refresh", "call", "call_briefly", "close"}  # RemoteMeta's own workings, not metadata calls
SERVICE_OWN = {"aclose"}  # MetaService's


def coroutines(cls: type) -> set[str]:
    return {name for name, value in inspect.getmembers(cls)
            if not name.startswith("_") and inspect.iscoroutinefunction(value)}  # fmt: skip


def test_the_in_process_service_offers_exactly_the_table():
    assert coroutines(MetaService) - SERVICE_OWN == {name for name, call in CALLS.items() if call.runs is not Runs.RPC}


def test_every_planned_call_has_a_plan_taking_what_the_method_takes():
    planned = [name for name, call in CALLS.items() if call.planned]
    assert planned
    for name in planned:
        plan = getattr(SqlStore, f"{name}_plan")
        assert list(inspect.signature(plan).parameters) == list(inspect.signature(getattr(SqlStore, name)).parameters)


def test_every_table_call_the_service_derives_runs_a_store_method_of_that_name():
    for name, call in CALLS.items():
        if call.runs in (Runs.INLINE, Runs.THREAD, Runs.BACKGROUND):
            assert callable(getattr(SqlStore, name, None)), name
            assert inspect.signature(getattr(MetaService, name)) == inspect.signature(getattr(SqlStore, name))


def test_the_rpc_service_answers_every_remote_call_and_allows_nothing_else():
    for name in REMOTE:
        assert callable(getattr(MetaRpc, name, None) or getattr(MetaService, name, None)), name
    for name, call in CALLS.items():
        assert (meta_api.allowed(name, service_key=True) is not None) == call.remote
        assert (meta_api.allowed(name, service_key=False) is not None) == (call.remote and call.who is not Who.SERVICE)
    assert meta_api.allowed("store", service_key=True) is None and meta_api.allowed("__init__", True) is None


def test_the_stub_offers_exactly_the_remote_calls():
    assert coroutines(RemoteMeta) - STUB_OWN == set(REMOTE)


def test_only_reads_and_idempotent_writes_are_retried_after_a_cut_connection():
    assert {n for n, c in REMOTE.items() if c.retry_safe} >= {"get_version", "list_objects", "cluster_map"}
    for name in ("commit_version", "delete_object", "complete_upload", "create_upload", "commit_part"):
        assert not REMOTE[name].retry_safe, name
