"""``apollo://`` through fsspec against a real ``apollo server``: fsspec's own abstract suites, as s3fs runs
them, and the cases training jobs depend on (ranges, large writes, listings, fork, Parquet)."""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import re
import urllib.request

import fsspec
import fsspec.tests.abstract as abstract
import pytest
from fsspec.tests.abstract import AbstractFixtures

from apollo.integrations.fsspec import ApolloFileSystem

MIB = 1024 * 1024


# fsspec's abstract suites ------------------------------------------------------------------------


class ApolloFixtures(AbstractFixtures):
    """What fsspec's suites need: the filesystem, a path to work under (a bucket), and no empty dirs."""

    @pytest.fixture
    def fs(self, apollo_fs):
        return apollo_fs

    @pytest.fixture
    def fs_path(self, abstract_bucket):
        return abstract_bucket

    @pytest.fixture
    def supports_empty_directories(self):
        return False  # a directory is a prefix some key has; s3fs says the same of S3


@pytest.fixture(scope="module")
def abstract_bucket(apollo_fs) -> str:
    apollo_fs.mkdir("abstract")
    return "abstract"


class TestApolloCopy(abstract.AbstractCopyTests, ApolloFixtures):
    pass


class TestApolloGet(abstract.AbstractGetTests, ApolloFixtures):
    pass


class TestApolloPut(abstract.AbstractPutTests, ApolloFixtures):
    pass


class TestApolloPipe(abstract.AbstractPipeTests, ApolloFixtures):
    pass


class TestApolloOpen(abstract.AbstractOpenTests, ApolloFixtures):
    pass


# direct tests --------------------------------------------------------------------------------------


def test_the_protocol_is_registered_and_configured_from_the_environment(apollo_fs, fs_bucket, monkeypatch):
    fs, path = fsspec.core.url_to_fs(f"apollo://{fs_bucket}/dir/key")
    assert isinstance(fs, ApolloFileSystem) and path == f"{fs_bucket}/dir/key"
    assert fs is apollo_fs is fsspec.filesystem("apollo")  # fsspec's instance cache: one client per process
    assert pickle.loads(pickle.dumps(fs)) is fs  # spawned workers rebuild it from its arguments
    with fsspec.open(f"apollo://{fs_bucket}/dir/key", "wb") as f:
        f.write(b"through fsspec.open")
    with fsspec.open(f"apollo://{fs_bucket}/dir/key", "rb") as f:
        assert f.read() == b"through fsspec.open"
    for name in ("APOLLO_ENDPOINT", "APOLLO_META_URL", "APOLLO_ACCESS_KEY", "APOLLO_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValueError, match="APOLLO_ENDPOINT"):
        ApolloFileSystem(skip_instance_cache=True)


def test_open_reads_ranges_and_cat_file_takes_start_and_end(apollo_fs, fs_bucket, seed):
    data = random.Random(seed).randbytes(3 * MIB + 5)
    path = f"{fs_bucket}/ranges.bin"
    apollo_fs.pipe_file(path, data)
    with apollo_fs.open(path, "rb", block_size=MIB) as f:
        assert f.size == len(data)
        f.seek(2 * MIB - 7)
        assert f.read(100) == data[2 * MIB - 7 : 2 * MIB + 93]
        f.seek(-10, 2)
        assert f.read() == data[-10:]
        assert f.read(5) == b""
    assert apollo_fs.cat_file(path, start=1000, end=1100) == data[1000:1100]
    assert apollo_fs.cat_file(path, start=-50) == data[-50:]
    assert apollo_fs.cat_file(path, start=10, end=-10) == data[10:-10]
    assert apollo_fs.cat_file(path, start=len(data) - 3, end=len(data) + 100) == data[-3:]
    assert apollo_fs.cat_file(path, start=500, end=500) == b""
    with pytest.raises(FileNotFoundError):
        apollo_fs.cat_file(f"{fs_bucket}/missing")
    with pytest.raises(FileNotFoundError):
        apollo_fs.cat_file("no-such-bucket-here/key")


@pytest.mark.parametrize("block_size", [8 * MIB, None], ids=["multipart", "one-put"])
def test_a_20_mib_file_written_in_pieces_reads_back(apollo_fs, fs_bucket, seed, block_size):
    data = random.Random(seed).randbytes(20 * MIB + 11)
    path = f"{fs_bucket}/big.bin"
    with apollo_fs.open(path, "wb", block_size=block_size) as f:
        for start in range(0, len(data), 3 * MIB + 1):
            f.write(data[start : start + 3 * MIB + 1])
        assert not apollo_fs.exists(path)  # nothing is visible before close
    info = apollo_fs.info(path)
    assert info["size"] == len(data) and info["type"] == "file"
    if block_size:
        assert info["ETag"].endswith("-3")  # three parts of a multipart upload: 8 + 8 + 4 MiB
    assert hashlib.sha256(apollo_fs.cat_file(path)).digest() == hashlib.sha256(data).digest()
    with apollo_fs.open(path, "rb") as f:
        f.seek(17 * MIB)
        assert f.read(MIB) == data[17 * MIB : 18 * MIB]


def test_a_write_that_raises_inside_the_with_block_leaves_no_object(apollo_fs, fs_bucket, apollo_server):
    for name, block_size, size in (("small", None, 1000), ("multipart", 5 * MIB, 12 * MIB)):
        path = f"{fs_bucket}/{name}"
        with pytest.raises(RuntimeError, match="job died"), apollo_fs.open(path, "wb", block_size=block_size) as f:
            f.write(os.urandom(size))  # the multipart case has uploaded a part by now
            raise RuntimeError("job died")
        assert not apollo_fs.exists(path)
    assert apollo_server.s3().list_multipart_uploads(Bucket=fs_bucket).get("Uploads", []) == []


def test_info_ls_find_and_exists_see_prefixes_as_directories(apollo_fs, fs_bucket):
    keys = ["a.txt", "d/one", "d/two", "d/sub/three", "d/sub/deeper/four", "e/five"]
    apollo_fs.pipe({f"{fs_bucket}/{key}": key.encode() for key in keys})
    b = fs_bucket

    assert {"name": b, "size": 0, "type": "directory"} in apollo_fs.ls("", detail=True)
    assert apollo_fs.ls(b, detail=False) == [f"{b}/a.txt", f"{b}/d", f"{b}/e"]
    listing = {entry["name"]: entry for entry in apollo_fs.ls(f"{b}/d")}
    assert listing[f"{b}/d/sub"]["type"] == "directory" and listing[f"{b}/d/one"]["size"] == 5
    assert apollo_fs.ls(f"{b}/a.txt", detail=False) == [f"{b}/a.txt"]  # ls of an object is the object
    with pytest.raises(FileNotFoundError):
        apollo_fs.ls(f"{b}/nothing")

    assert apollo_fs.info(f"{b}/d/sub")["type"] == "directory"
    info = apollo_fs.info(f"{b}/d/one")
    assert (info["type"], info["size"], info["name"]) == ("file", 5, f"{b}/d/one")
    assert info["LastModified"].tzinfo is not None and info["ETag"]
    assert apollo_fs.isdir(b) and apollo_fs.isdir(f"{b}/d") and apollo_fs.isfile(f"{b}/a.txt")
    assert not apollo_fs.exists(f"{b}/d/on") and not apollo_fs.exists("no-such-bucket-here")
    with pytest.raises(FileNotFoundError):
        apollo_fs.info(f"{b}/missing")

    assert apollo_fs.find(f"{b}/d") == [f"{b}/d/one", f"{b}/d/sub/deeper/four", f"{b}/d/sub/three", f"{b}/d/two"]
    assert apollo_fs.find(b) == sorted(f"{b}/{key}" for key in keys)
    assert apollo_fs.find(f"{b}/d", withdirs=True) == [
        f"{b}/d", f"{b}/d/one", f"{b}/d/sub", f"{b}/d/sub/deeper", f"{b}/d/sub/deeper/four", f"{b}/d/sub/three",
        f"{b}/d/two",
    ]  # fmt: skip
    assert apollo_fs.find(f"{b}/d", maxdepth=1) == [f"{b}/d/one", f"{b}/d/two"]
    assert apollo_fs.find(f"{b}/d", prefix="s") == [f"{b}/d/sub/deeper/four", f"{b}/d/sub/three"]
    assert apollo_fs.find(f"{b}/a.txt") == [f"{b}/a.txt"]
    assert set(apollo_fs.find(b, detail=True)[f"{b}/e/five"]) >= {"size", "ETag", "LastModified"}
    assert apollo_fs.glob(f"{b}/d/*") == [f"{b}/d/one", f"{b}/d/sub", f"{b}/d/two"]
    assert apollo_fs.du(f"{b}/d") == sum(len(k) for k in keys if k.startswith("d/"))


def _calls(server, method: str = "get_versions") -> float:
    """Metadata calls of ``method`` the server has answered (its metrics)."""
    with urllib.request.urlopen(server.endpoint + "/metrics", timeout=10) as response:
        text = response.read().decode()
    found = re.search(rf'^apollo_meta_rpc_total\{{method="{method}",outcome="ok"\}} ([0-9.e+]+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_cat_ranges_returns_every_range_in_order_and_errors_in_place(apollo_server, apollo_fs, fs_bucket, seed):
    rng = random.Random(seed)
    files = {f"{fs_bucket}/shard-{n}": rng.randbytes(MIB + n) for n in range(3)}
    apollo_fs.pipe(files)
    paths, starts, ends = [], [], []
    for _ in range(40):
        path = rng.choice(sorted(files))
        start = rng.randrange(0, MIB)
        paths.append(path), starts.append(start), ends.append(start + rng.randrange(1, 70_000))
    before = _calls(apollo_server)
    got = apollo_fs.cat_ranges(paths, starts, ends)
    assert got == [files[p][s:e] for p, s, e in zip(paths, starts, ends, strict=True)]
    assert _calls(apollo_server) - before == 1  # one batch: one metadata call for the 40 ranges
    first = sorted(files)[0]
    edges = apollo_fs.cat_ranges([first] * 4, [-10, 2 * MIB, 5, 0], [None, 2 * MIB + 5, 5, None])
    assert edges == [files[first][-10:], b"", b"", files[first]]  # from the end; past it; empty; whole
    mixed = apollo_fs.cat_ranges([paths[0], f"{fs_bucket}/missing"], [0, 0], [10, 10])
    assert mixed[0] == files[paths[0]][:10] and isinstance(mixed[1], FileNotFoundError)
    with pytest.raises(FileNotFoundError):
        apollo_fs.cat_ranges([f"{fs_bucket}/missing"], [0], [1], on_error="raise")


def test_rm_deletes_many_keys_in_batches_and_rmdir_removes_the_bucket(apollo_fs, fs_bucket):
    keys = [f"{fs_bucket}/many/{n:05d}" for n in range(1100)]  # more than one bulk delete (1000 keys)
    apollo_fs.pipe({key: b"x" for key in keys[:600]})
    apollo_fs.pipe({key: b"y" for key in keys[600:]})
    apollo_fs.pipe_file(f"{fs_bucket}/keep", b"kept")
    assert len(apollo_fs.find(f"{fs_bucket}/many")) == 1100
    with pytest.raises(OSError):
        apollo_fs.rmdir(f"{fs_bucket}/many")  # keys under it
    apollo_fs.rm(f"{fs_bucket}/many", recursive=True)
    assert apollo_fs.find(fs_bucket) == [f"{fs_bucket}/keep"]
    with pytest.raises(FileNotFoundError):
        apollo_fs.rm(f"{fs_bucket}/many", recursive=True)
    apollo_fs.rm_file(f"{fs_bucket}/keep")
    apollo_fs.rmdir(fs_bucket)
    assert not apollo_fs.exists(fs_bucket)


def test_copy_move_and_exclusive_create(apollo_fs, fs_bucket):
    other = f"{fs_bucket}-2"
    apollo_fs.makedirs(f"{other}/some/prefix", exist_ok=True)  # creates the bucket; prefixes are implicit
    with pytest.raises(FileExistsError):
        apollo_fs.mkdir(other)
    apollo_fs.pipe_file(f"{fs_bucket}/src", b"source bytes")
    apollo_fs.cp_file(f"{fs_bucket}/src", f"{other}/copied")
    apollo_fs.rm_file(f"{fs_bucket}/src")
    assert apollo_fs.cat_file(f"{other}/copied") == b"source bytes"  # a copy shares no segment
    apollo_fs.mv(f"{other}/copied", f"{fs_bucket}/moved")
    assert apollo_fs.cat_file(f"{fs_bucket}/moved") == b"source bytes" and not apollo_fs.exists(f"{other}/copied")
    with pytest.raises(FileExistsError):
        apollo_fs.pipe_file(f"{fs_bucket}/moved", b"again", mode="create")
    with pytest.raises(FileExistsError):
        apollo_fs.open(f"{fs_bucket}/moved", "xb")
    with apollo_fs.open(f"{fs_bucket}/new", "xb") as f:
        f.write(b"exclusive")
    assert apollo_fs.cat_file(f"{fs_bucket}/new") == b"exclusive"


def test_mv_of_a_file_is_one_metadata_transaction_that_no_listing_sees_half_done(apollo_server, apollo_fs,
                                                                                   fs_bucket):  # fmt: skip
    """A file moves back and forth 100 times while another thread lists the prefix: every listing shows
    exactly one of the two names (a copy then a delete shows both, or, deleted first, neither). Each move
    is one ``rename_object`` call and no write of bytes. A move onto an existing name replaces it; a move
    of several files moves each, where ``copy`` would have put them."""
    import threading

    pair = [f"{fs_bucket}/ckpt/.metadata.tmp", f"{fs_bucket}/ckpt/.metadata"]
    payload = os.urandom(70_000)  # on the drives, not inline: a copy would move these bytes
    apollo_fs.pipe_file(pair[0], payload)
    seen: list[int] = []
    done = threading.Event()

    def lister() -> None:
        while not done.is_set():
            seen.append(len([p for p in apollo_fs.ls(f"{fs_bucket}/ckpt", detail=False) if p in pair]))

    thread = threading.Thread(target=lister)
    renames, writes = _calls(apollo_server, "rename_object"), _calls(apollo_server, "commit_version")
    thread.start()
    for number in range(100):
        apollo_fs.mv(pair[number % 2], pair[(number + 1) % 2])
    done.set()
    thread.join()
    assert _calls(apollo_server, "rename_object") - renames == 100
    assert _calls(apollo_server, "commit_version") == writes
    assert len(seen) > 20 and set(seen) == {1}, sorted(set(seen))
    assert apollo_fs.cat_file(pair[0]) == payload and not apollo_fs.exists(pair[1])

    apollo_fs.pipe_file(pair[1], b"older")
    apollo_fs.mv(pair[0], pair[1])  # onto an existing name: replaced, as an overwrite
    assert apollo_fs.cat_file(pair[1]) == payload
    apollo_fs.pipe({f"{fs_bucket}/dir/a": b"a", f"{fs_bucket}/dir/sub/b": b"b"})
    apollo_fs.mv(f"{fs_bucket}/dir", f"{fs_bucket}/moved", recursive=True)
    assert apollo_fs.find(f"{fs_bucket}/moved") == [f"{fs_bucket}/moved/a", f"{fs_bucket}/moved/sub/b"]
    assert not apollo_fs.exists(f"{fs_bucket}/dir")
    with pytest.raises(FileNotFoundError):
        apollo_fs.mv(f"{fs_bucket}/missing", f"{fs_bucket}/elsewhere")


def test_a_forked_child_reads_through_the_same_instance(apollo_fs, fs_bucket, seed):
    """DataLoader workers fork: the child must get its own loop and client, and the parent keep its own."""
    data = random.Random(seed).randbytes(2 * MIB)
    path = f"{fs_bucket}/sample.bin"
    apollo_fs.pipe_file(path, data)
    assert apollo_fs.cat_file(path, 0, 10) == data[:10]  # the parent's client exists before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report a digest of what it read, or nothing
        status = 1
        try:
            got = apollo_fs.cat_file(path) + apollo_fs.open(path).read(100)
            os.write(write_end, hashlib.sha256(got).digest())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    reported = os.read(read_end, 64)
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert reported == hashlib.sha256(data + data[:100]).digest()
    assert apollo_fs.cat_file(path, 100, 200) == data[100:200]  # the parent's client still works


def test_pandas_and_pyarrow_parquet_round_trip_through_apollo_urls(apollo_fs, fs_bucket):
    pd = pytest.importorskip("pandas")
    pq = pytest.importorskip("pyarrow.parquet")
    frame = pd.DataFrame({"id": range(50_000), "label": [f"sample-{n % 97}" for n in range(50_000)],
                          "score": [n / 7 for n in range(50_000)]})  # fmt: skip
    url = f"apollo://{fs_bucket}/tables/train.parquet"
    frame.to_parquet(url, row_group_size=10_000)
    pd.testing.assert_frame_equal(pd.read_parquet(url), frame)
    table = pq.read_table(f"{fs_bucket}/tables/train.parquet", filesystem=apollo_fs, columns=["score"])
    assert table.num_rows == 50_000 and table.column("score").to_pylist()[7] == 1.0
    pq.write_table(table, f"{fs_bucket}/tables/scores.parquet", filesystem=apollo_fs)
    assert apollo_fs.ls(f"{fs_bucket}/tables", detail=False) == [
        f"{fs_bucket}/tables/scores.parquet", f"{fs_bucket}/tables/train.parquet",
    ]  # fmt: skip
