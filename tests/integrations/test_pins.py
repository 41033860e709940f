"""``AsyncClient.pin``: a reader of several objects reads one state of them. On an unversioned bucket (whose
versions all have the id ``null``, so a version id pins nothing) an object overwritten after its pin still
reads as pinned, through ``get``, ``get_into`` and a batch GET, with no further metadata call."""

from __future__ import annotations

import asyncio

import pytest

from apollo import errors
from apollo.client import AsyncClient, BatchItem
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY


def test_reads_through_a_pin_give_the_pinned_bytes_after_an_overwrite(apollo_server):
    async def scenario() -> None:
        async with AsyncClient(apollo_server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as apollo:
            await apollo.create_bucket("pins")
            old = {"small": b"s" * 100, "large": bytes(range(256)) * 4000}  # inline, and on the drives
            for key, body in old.items():
                await apollo.put("pins", key, body, metadata={"round": "1"})
            small, large, missing = await apollo.pin("pins", ["small", "large", "missing"])
            assert missing is None and large.size == len(old["large"]) and large.metadata == {"round": "1"}
            for key in old:
                await apollo.put("pins", key, b"new " + key.encode())
            assert await apollo.get("pins", "large", pinned=large) == old["large"]
            assert await apollo.get("pins", "large", 1000, 1010, pinned=large) == old["large"][1000:1010]
            buffer = bytearray(5000)
            assert await apollo.get_into("pins", "large", buffer, 7, pinned=large) == 5000
            assert bytes(buffer) == old["large"][7:5007]
            items = [BatchItem("pins", "small", pinned=small), BatchItem("pins", "large", start=5, end=9, pinned=large),
                     BatchItem("pins", "large")]  # fmt: skip
            results = [result async for result in apollo.get_batch(items)]
            assert [result.data for result in results] == [old["small"], old["large"][5:9], b"new large"]
            with pytest.raises(ValueError, match="pin"):
                await apollo.get("pins", "small", pinned=large)  # a pin reads its own object only
            with pytest.raises(ValueError, match="one of"):
                BatchItem("pins", "large", version_id="null", pinned=large)
            with pytest.raises(ValueError, match="the pin is of"):
                BatchItem("pins", "small", pinned=large)
            with pytest.raises(errors.BucketNotFound):
                await apollo.pin("no-such-bucket", ["k"])

    asyncio.run(scenario())
