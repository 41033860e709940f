"""The seeded verifying workload the tests share (``apollo.testing.workload``), against in-memory stores that
answer like boto3 and like the native client: it writes what the seed says and catches every wrong byte."""

from __future__ import annotations

import io
import re

import pytest

from apollo.testing.workload import SEED_ENV, SIZE_CLASSES, Workload, replay_seed


class Boto3Like:
    """put_object / upload_fileobj / get_object (with Range), keeping bodies in a dict."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}
        self.uploads: list[str] = []  # keys written by upload_fileobj (multipart)
        self.wrong_ranges = False

    def put_object(self, Bucket: str, Key: str, Body: bytes) -> dict:  # noqa: N803 - boto3's names
        self.objects[(Bucket, Key)] = bytes(Body)
        return {}

    def upload_fileobj(self, fileobj: io.BytesIO, bucket: str, key: str, Config=None) -> None:  # noqa: N803
        self.uploads.append(key)
        self.objects[(bucket, key)] = fileobj.read()

    def get_object(self, Bucket: str, Key: str, Range: str | None = None) -> dict:  # noqa: N803
        body = self.objects[(Bucket, Key)]
        if Range:
            start, end = map(int, re.fullmatch(r"bytes=(\d+)-(\d+)", Range).groups())
            body = body[start : end + 1]
            if self.wrong_ranges:
                body = body[::-1] + b"?"
        return {"Body": io.BytesIO(body)}


class NativeLike:
    """put / get(start, end exclusive), as apollo.client.Client."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], bytes] = {}

    def put(self, bucket: str, key: str, body: bytes) -> None:
        self.objects[(bucket, key)] = bytes(body)

    def get(self, bucket: str, key: str, start: int = 0, end: int | None = None) -> bytes:
        return self.objects[(bucket, key)][start:end]


def test_n_objects_cycle_through_the_size_classes_with_seeded_sizes():
    store = Boto3Like()
    written = Workload(5).write(store, "b", 6)
    assert [w.key for w in written] == [f"obj-{n:04d}" for n in range(6)]
    for w, size_class in zip(written, SIZE_CLASSES, strict=True):
        assert size_class.low <= w.size <= size_class.high, (w, size_class)
        assert store.objects[("b", w.key)] == w.body()
    assert store.uploads == ["obj-0005"]  # the multipart class goes up in parts
    assert Workload(5).verify(store, "b") == 0  # a fresh workload knows of nothing


def test_the_seed_fixes_every_size_and_byte():
    first = Workload(6).write(Boto3Like(), "b", 20, sizes=(0, 3000))
    again = Workload(6).write(NativeLike(), "b", 20, sizes=(0, 3000))
    assert [(w.size, w.md5) for w in again] == [(w.size, w.md5) for w in first]
    assert [w.md5 for w in Workload(7).write(Boto3Like(), "b", 20, sizes=(0, 3000))] != [w.md5 for w in first]


def test_verify_passes_on_exact_bytes_and_names_every_object_that_is_not():
    store = Boto3Like()
    workload = Workload(7)
    workload.write(store, "b", 5, sizes=(10, 5000))
    workload.write(store, "other", 2, sizes=lambda rng: 64, prefix="x-")
    assert workload.verify(store, "b") == 5 and workload.verify(store) == 7 and len(workload) == 7
    flipped = bytearray(store.objects[("b", "obj-0001")])
    flipped[len(flipped) // 2] ^= 1
    store.objects[("b", "obj-0001")] = bytes(flipped)
    del store.objects[("b", "obj-0003")]
    with pytest.raises(AssertionError) as failed:
        workload.verify(store, "b")
    message = str(failed.value)
    assert message.startswith("workload seed 7: 2 of 5 objects do not read back exactly")
    assert "b/obj-0001: read" in message and "b/obj-0003: read failed: KeyError" in message
    assert workload.verify(store, "b", keys=["obj-0000", "obj-0002"]) == 2


def test_a_wrong_range_is_caught_even_when_whole_reads_are_right():
    store = Boto3Like()
    workload = Workload(8)
    workload.write(store, "b", 3, sizes=(1000, 2000))
    store.wrong_ranges = True
    assert workload.verify(store, "b", ranges=False) == 3
    with pytest.raises(AssertionError, match=r"bytes \d+-\d+ of \d+ read wrong"):
        workload.verify(store, "b")


def test_the_native_client_is_written_and_read_through_its_own_calls():
    store = NativeLike()
    workload = Workload(9)
    workload.write(store, "b", 6, sizes=(2, 3 * 1024**2))
    assert workload.verify(store, "b") == 6
    workload.put(store, "b", "named", 300)
    assert store.objects[("b", "named")] == workload.objects[("b", "named")].body()
    store.objects[("b", "named")] = b"x" * 300
    assert "b/named: read 300 bytes" in workload.check(store, "b", "named")
    workload.forget("b", "named")
    assert workload.verify(store) == 6


def test_an_unseeded_workload_replays_the_environment_s_seed(monkeypatch, capsys):
    monkeypatch.setenv(SEED_ENV, "1234")
    assert Workload().seed == 1234 and replay_seed() == 1234 and replay_seed(5) == 5
    assert f"{SEED_ENV} 1234" in capsys.readouterr().out
    monkeypatch.delenv(SEED_ENV)
    fresh = Workload()  # a random seed when none is set, printed so that a failure can be replayed
    assert f"{SEED_ENV} {fresh.seed}" in capsys.readouterr().out
