"""The metadata RPC's rule that clock, limits and caller identity are the service's, not the caller's."""

from __future__ import annotations

import inspect
import time

import pytest

from apollo import errors, limits
from apollo.meta.rpc_service import MetaRpc, impose
from apollo.meta.service import MetaService
from apollo.proto.meta_api import REMOTE


def target(method: str):
    return getattr(MetaRpc, method, None) or getattr(MetaService, method)


@pytest.mark.parametrize("method", sorted(REMOTE))
def test_every_remote_method_has_a_signature_the_service_can_bind(method):
    """``impose`` finds server-owned parameters by name: a ``*args``/``**kwargs`` method would hide them."""
    kinds = {p.kind for p in inspect.signature(target(method)).parameters.values()}
    assert not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}, method


def test_a_callers_clock_and_identity_are_replaced():
    args, kwargs = impose(target("delete_object"), [None, "b", "k", None, 1.0], {}, "key:attacker")
    assert args[:4] == (None, "b", "k", None) and abs(args[4] - time.time()) < 5
    _, kwargs = impose(target("commit_version"), [None, "b", "k"], {"now": 0.0, "owner": "key:victim"}, "key:me")
    assert kwargs["owner"] == "key:me" and kwargs["now"] > 1e9
    _, kwargs = impose(target("commit_version"), [None, "b", "k"], {}, "key:me")  # given or not
    assert kwargs["owner"] == "key:me" and kwargs["now"] > 1e9


def test_a_client_cannot_make_a_bucket_for_another_key_but_a_gateway_says_whose_it_is():
    """A native client's key owns what it creates, whatever it sends; a gateway (a service key) creates
    buckets for the S3 clients it serves, and names them."""

    def owner(given: dict, caller: str, service: bool = False) -> str:
        args, kwargs = impose(target("create_bucket"), [None, "b"], given, caller, service)
        return inspect.signature(target("create_bucket")).bind(*args, **kwargs).arguments["bucket_owner"]

    assert owner({"now": 0.0, "bucket_owner": "victim"}, "key:me") == "me"
    assert owner({}, "key:me") == "me"
    assert owner({"bucket_owner": "AKUSER"}, "key:gateway", True) == "AKUSER"
    assert owner({"bucket_owner": 7}, "key:gateway", True) == "gateway"  # not a name: the caller's own


def test_limits_are_the_services():
    args, _ = impose(target("list_objects"), [None, "b", "", "", "", 10**9], {}, "key:me")
    assert args[5] == limits.list_keys_max
    args, _ = impose(target("list_objects"), [None, "b", "", "", "", 7], {}, "key:me")
    assert args[5] == 7
    with pytest.raises(errors.InvalidRequest):
        impose(target("list_parts"), [None, "upload", 0, -1], {}, "key:me")
    _, kwargs = impose(target("complete_upload"), [None, "b", "k", "u", []], {"part_size_min": 0}, "key:me")
    assert kwargs["part_size_min"] == limits.part_size_bytes_min


@pytest.mark.parametrize("method, first", [("get_bucket", "name"), ("get_versions", "items"),
                                           ("commit_version", "bucket")])  # fmt: skip (the last has imposed ones)
@pytest.mark.parametrize("args, kwargs", [([None, "b"], {"sql": "DROP TABLE buckets"}), ([None] * 9, {}),
                                          ([None, "b"], {"first": "c"})])  # fmt: skip (unknown, too many, twice)
def test_arguments_a_method_does_not_take_are_refused_before_it_runs(method, first, args, kwargs):
    kwargs = {first if name == "first" else name: value for name, value in kwargs.items()}
    with pytest.raises(TypeError):
        impose(target(method), args, kwargs, "key:me")


def test_an_owner_the_service_imposes_reaches_the_store_once_whatever_its_position(store):
    """``abandon_segments(ids, now, owner)`` takes the owner positionally once bound: the in-process
    service must not add its own default on top (it did: "got multiple values for argument 'owner'")."""
    import asyncio

    from apollo.testing.layouts import pending

    layout = pending(store, owner="key:me")

    async def scenario():
        service = MetaService(store)
        args, kwargs = impose(MetaService.abandon_segments, [service, [layout.segment_id], 0.0], {}, "key:me")
        await MetaService.abandon_segments(*args, **kwargs)

    asyncio.run(scenario())
    assert store.one("SELECT due FROM garbage WHERE segment_id = ?", (layout.segment_id,))["due"] < 1e11
