"""The streaming tar indexer against Python's own ``tarfile`` reading the same archives: every format,
long and non-ASCII names, any chunking; and what it refuses to index."""

from __future__ import annotations

import io
import random
import tarfile

import pytest

from apollo.proto.tar_index import TarIndexer


def archive(rng: random.Random, form: int, count: int = 60, names: list[str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=form) as tar:
        for number in range(count):
            long = form != tarfile.USTAR_FORMAT and number % 7 == 0
            accent = "é" if form == tarfile.PAX_FORMAT and number % 5 == 0 else ""
            made = f"{'d/' * (number % 3)}{'long' * (40 if long else 1)}{number}{accent}.bin"
            name = names[number] if names else made
            data = rng.randbytes(rng.randrange(0, 3000))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for kind, name in ((tarfile.DIRTYPE, "a-dir"), (tarfile.SYMTYPE, "a-link")):
            info = tarfile.TarInfo(name)
            info.type = kind
            tar.addfile(info)
    return buffer.getvalue()


def indexed(raw: bytes, rng: random.Random, **options) -> TarIndexer:
    indexer = TarIndexer(**options)
    position = 0
    while position < len(raw):
        step = rng.randrange(1, 3000)
        indexer.feed(raw[position : position + step])
        position += step
    return indexer


@pytest.mark.parametrize("form", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_every_regular_member_at_the_offset_tarfile_reads_it_from(form, seed):
    rng = random.Random(seed)
    raw = archive(rng, form)
    members = indexed(raw, rng).members()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        expected = [(m.name, m.offset_data, m.size) for m in tar.getmembers() if m.isreg()]
    assert [(m.name, m.offset, m.size) for m in members] == expected and len(expected) == 60
    for member in members[:5]:
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            assert raw[member.offset : member.offset + member.size] == tar.extractfile(member.name).read()


def test_a_name_seen_twice_is_the_later_member(seed):
    rng = random.Random(seed)
    raw = archive(rng, tarfile.GNU_FORMAT, count=3, names=["same", "other", "same"])
    members = indexed(raw, rng).members()
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        last = [m for m in tar.getmembers() if m.name == "same"][-1]
    assert [(m.name, m.offset) for m in members] == [("other", members[0].offset), ("same", last.offset_data)]


def test_what_is_not_a_whole_tar_archive_has_no_index(seed):
    rng = random.Random(seed)
    raw = archive(rng, tarfile.PAX_FORMAT)
    cut = indexed(raw[: len(raw) // 2], rng)
    assert cut.members() == [] and "ends without" in cut.error
    noise = indexed(rng.randbytes(10_000), rng)
    assert noise.members() == [] and "not a tar archive" in noise.error
    many = indexed(raw, rng, members_max=10)
    assert many.members() == [] and "more than 10 members" in many.error
