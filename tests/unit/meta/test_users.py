"""Access keys with identity policies in the metadata store, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os

import pytest

from apollo import errors
from apollo.meta.sealing import Sealer
from apollo.proto.identity import BUILTIN_POLICIES, POLICIES_PER_KEY_MAX

READ = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject",
                                                           "Resource": "*"}]})  # fmt: skip


def test_a_keys_rights_carry_the_documents_of_its_policies(store):
    store.put_policy("read", READ, 1.0)
    store.put_key("AKUSER", "s3cret", 1.0, policies=["read", "writeonly"])
    rights = store.key_rights("AKUSER")
    assert (rights.secret, rights.is_root) == ("s3cret", False)
    assert rights.policies == (READ, BUILTIN_POLICIES["writeonly"])  # by policy name
    store.put_policy("read", READ.replace("GetObject", "GetObjectTagging"), 2.0)  # replaced: keys see the new one
    assert "GetObjectTagging" in store.key_rights("AKUSER").policies[0]
    assert store.key_rights("nobody") is None


def test_a_key_made_with_an_unknown_policy_is_not_made(store):
    with pytest.raises(errors.NotFound, match="no such policy"):
        store.put_key("AKUSER", "s3cret", 1.0, policies=["readonly", "missing"])
    assert store.key_rights("AKUSER") is None


def test_policies_attach_detach_and_delete_only_when_unused(store):
    store.put_policy("read", READ, 1.0)
    store.put_key("AKUSER", "s", 1.0)
    store.attach_policy("AKUSER", "read")
    store.attach_policy("AKUSER", "read")  # twice: once
    assert [k.policies for k in store.list_keys()] == [("read",)]
    with pytest.raises(errors.Conflict, match="attached to AKUSER"):
        store.delete_policy("read")
    store.detach_policy("AKUSER", "read")
    with pytest.raises(errors.NotFound):
        store.detach_policy("AKUSER", "read")
    store.delete_policy("read")
    assert store.get_policy("read") is None
    assert [name for name, builtin, _ in store.list_policies()] == sorted(BUILTIN_POLICIES)


def test_built_in_policies_cannot_be_replaced_deleted_or_given_to_root(store):
    with pytest.raises(errors.Conflict, match="built-in"):
        store.put_policy("readwrite", READ, 1.0)
    with pytest.raises(errors.Conflict, match="built-in"):
        store.delete_policy("readonly")
    store.set_root_key("admin", "root-secret", 1.0)
    with pytest.raises(errors.Conflict, match="root key"):
        store.attach_policy("admin", "readonly")


def test_a_key_holds_at_most_the_quota_of_policies(store):
    store.put_key("AKUSER", "s", 1.0)
    for n in range(POLICIES_PER_KEY_MAX):
        store.put_policy(f"p{n}", READ, 1.0)
        store.attach_policy("AKUSER", f"p{n}")
    store.put_policy("one-more", READ, 1.0)
    with pytest.raises(errors.Conflict, match="the most a key may have"):
        store.attach_policy("AKUSER", "one-more")


def test_deleting_a_key_drops_its_attachments(store):
    store.put_key("AKUSER", "s", 1.0, policies=["readonly"])
    assert store.delete_key("AKUSER")
    store.put_key("AKUSER", "s", 2.0)  # the same name again starts without rights
    assert store.key_rights("AKUSER").policies == ()


def test_a_new_root_secret_ends_the_sessions_of_the_old_one(store):
    store.set_root_key("admin", "first-secret", 1.0)
    store.put_session("ASIAONE", "s", "d", "admin", "", 1e10, 1.0)
    store.set_root_key("admin", "first-secret", 2.0)  # a restart with the same secret keeps them
    assert store.key_rights("ASIAONE") is not None
    store.set_root_key("admin", "rotated-secret", 3.0)
    assert store.key_rights("ASIAONE") is None


def test_a_bucket_remembers_who_created_it(store):
    store.create_bucket("owned", 1.0, "AKUSER")
    assert store.get_bucket("owned").owner == "AKUSER"
    assert {b.name: b.owner for b in store.list_buckets()} == {"b": "", "owned": "AKUSER"}


def test_resealing_a_clear_secret_leaves_it_readable_only_through_the_key(store):
    """The first start with a key rewrites the clear secrets sealed, then erases the replaced rows' copies
    (SQLite: the WAL emptied; PostgreSQL: the dead tuples vacuumed), which must run on both engines."""
    store.put_key("AKUSER", "s3cret", 1.0)
    store.sealer = Sealer([os.urandom(32)])
    assert store.reseal_secrets() == 1
    assert store.key_rights("AKUSER").secret == "s3cret"
    stored = store.engine.run(lambda: _stored_secret(store, "AKUSER"))
    assert stored.startswith("sealed1:") and "s3cret" not in stored
    if store.path:
        assert os.path.getsize(store.path + "-wal") == 0
    assert store.reseal_secrets() == 0  # sealed with the current key: nothing to do, nothing erased


def _stored_secret(store, access_key: str) -> str:
    with store.engine.connect() as db:
        return db.execute("SELECT secret_key FROM access_keys WHERE access_key = ?", (access_key,)).fetchone()[
            "secret_key"
        ]
