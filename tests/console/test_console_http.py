"""The console over plain HTTP (no browser): login, session cookie, CSRF, the throttle, listings, transfers."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import pytest
from console_support import CONSOLE, Browserless, NoRedirect, console_user, multipart

from apollo.testing.admin import admin
from apollo.testing.server import DEV_ACCESS_KEY, ServerProcess


def test_pages_redirect_to_the_login_form_without_a_session(console_server: ServerProcess):
    client = Browserless(console_server.endpoint)
    for path in ("/", "/buckets", "/buckets/any?prefix=a%2F"):
        answer = client.request(CONSOLE + path)
        assert answer.status == 303, answer
        assert answer.header("Location").startswith(CONSOLE + "/login?next=")
    assert client.request(CONSOLE).header("Location") == CONSOLE + "/"
    login = client.request(CONSOLE + "/login")
    assert login.status == 200 and 'name="secret_key"' in login.body
    assert login.header("X-Frame-Options") == "DENY" and "frame-ancestors 'none'" in login.header(
        "Content-Security-Policy")


def test_a_wrong_pair_is_refused_without_saying_which_part(console_server: ServerProcess):
    client = Browserless(console_server.endpoint)
    for key, secret in ((DEV_ACCESS_KEY, "not-the-secret"), ("no-such-key", "whatever")):
        started = time.monotonic()
        answer = client.login(key, secret)
        assert answer.status == 401
        assert "Access key or secret key is wrong." in answer.body
        assert time.monotonic() - started >= 0.4  # every failure answers late
        assert not any(c.startswith("apollo_console=") for c in answer.cookies())
    assert client.request(CONSOLE + "/").status == 303  # still not logged in


def test_a_key_sees_and_does_in_the_console_what_its_policies_allow(console_server: ServerProcess):
    """The console works through the object engine, beside the S3 door: it must make the same decisions."""
    s3 = console_server.s3()
    shared, private = f"shared-{uuid.uuid4().hex[:8]}", f"private-{uuid.uuid4().hex[:8]}"
    for bucket in (shared, private):
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="doc.txt", Body=b"readable")
    key, secret = console_user(console_server, document={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets"], "Resource": "*"},
        {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetObject"],
         "Resource": [f"arn:aws:s3:::{shared}", f"arn:aws:s3:::{shared}/*"]}]})  # fmt: skip
    client = Browserless(console_server.endpoint)
    assert client.login(key, secret).status == 303
    assert client.request(CONSOLE + "/").header("Location") == CONSOLE + "/buckets"  # the overview is root's
    listed = client.request(CONSOLE + "/buckets").body
    assert shared in listed and private not in listed
    assert client.fetch(CONSOLE + f"/buckets/{shared}/download?key=doc.txt") == b"readable"
    assert client.request(CONSOLE + f"/buckets/{private}").status == 403
    assert client.request(CONSOLE + f"/buckets/{private}/download?key=doc.txt").status == 403
    objects = client.request(CONSOLE + f"/buckets/{shared}")
    body, headers = multipart([("csrf", objects.csrf()), ("prefix", ""), ("key", "new.txt"),
                               ("file", ("new.txt", b"not allowed"))])  # fmt: skip
    refused = client.request(CONSOLE + f"/buckets/{shared}/upload", body, headers)
    assert refused.status == 403 and "s3:PutObject" in refused.body
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=shared)["Contents"]] == ["doc.txt"]  # nothing stored


def test_tag_conditions_decide_console_downloads_too(console_server: ServerProcess):
    s3 = console_server.s3()
    bucket = f"tagged-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="open.txt", Body=b"open", Tagging="class=public")
    s3.put_object(Bucket=bucket, Key="closed.txt", Body=b"closed", Tagging="class=secret")
    key, secret = console_user(console_server, document={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/*",
         "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "public"}}}]})  # fmt: skip
    client = Browserless(console_server.endpoint)
    assert client.login(key, secret).status == 303
    assert client.fetch(CONSOLE + f"/buckets/{bucket}/download?key=open.txt") == b"open"
    assert client.request(CONSOLE + f"/buckets/{bucket}/download?key=closed.txt").status == 403


def test_session_cookie_flags_and_logout(console_server: ServerProcess):
    client = Browserless(console_server.endpoint)
    answer = client.login()
    assert answer.status == 303 and answer.header("Location") == CONSOLE + "/"
    (cookie,) = [c for c in answer.cookies() if c.startswith("apollo_console=")]
    flags = [flag.strip().lower() for flag in cookie.split(";")]
    assert "httponly" in flags and "samesite=strict" in flags and f"path={CONSOLE}".lower() in flags
    assert "max-age=43200" in flags
    assert "secure" not in flags  # served over http here; over https the flag is set
    assert len(cookie.split(";")[0].split("=", 1)[1]) >= 40  # 256 random bits
    overview = client.request(CONSOLE + "/")
    assert overview.status == 200 and "Drives" in overview.body and DEV_ACCESS_KEY in overview.body
    assert client.request(CONSOLE + "/logout", {"csrf": overview.csrf()}).status == 303
    assert client.request(CONSOLE + "/").status == 303  # the session is gone server-side


def test_posts_without_the_csrf_token_are_403(console_server: ServerProcess):
    client = Browserless(console_server.endpoint)
    assert client.request(CONSOLE + "/login", {"access_key": DEV_ACCESS_KEY, "secret_key": "x"}).status == 403
    assert client.request(CONSOLE + "/logout", {}).status == 403  # no session either
    client.login()
    bucket = f"csrf-{uuid.uuid4().hex[:8]}"
    console_server.s3().create_bucket(Bucket=bucket)
    assert client.request(CONSOLE + "/logout", {}).status == 403
    assert client.request(CONSOLE + "/logout", {"csrf": "forged"}).status == 403
    body, headers = multipart([("file", ("a.txt", b"hello")), ("csrf", "late")])
    assert client.request(f"{CONSOLE}/buckets/{bucket}/upload", body, headers).status == 403
    body, headers = multipart([("csrf", "forged"), ("file", ("a.txt", b"hello"))])
    assert client.request(f"{CONSOLE}/buckets/{bucket}/upload", body, headers).status == 403
    assert client.request(f"{CONSOLE}/buckets/{bucket}/upload", {"prefix": ""}).status == 403
    assert console_server.s3().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    assert client.request(CONSOLE + "/").status == 200  # still logged in


def _root_with_bucket(server: ServerProcess, prefix: str):
    """A browser logged in with the root key, an S3 client, and a new bucket named ``prefix-<random>``."""
    client = Browserless(server.endpoint)
    client.login()
    s3 = server.s3()
    bucket = f"{prefix}-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    return client, s3, bucket


def test_upload_list_and_download_through_the_engine(console_server: ServerProcess):
    client, s3, bucket = _root_with_bucket(console_server, "files")
    s3.put_object(Bucket=bucket, Key="dir/<i>x.txt", Body=b"x")
    page = client.request(f"{CONSOLE}/buckets/{bucket}")
    assert "dir/" in page.body and "<i>" not in page.body
    data = bytes(range(256)) * 4096 + b"tail"  # 1 MiB and a bit: more than one EC stripe
    body, headers = multipart([("csrf", page.csrf()), ("prefix", "dir/"), ("key", ""), ("file", ("blob.bin", data))])
    answer = client.request(f"{CONSOLE}/buckets/{bucket}/upload", body, headers)
    assert answer.status == 303, answer.body
    assert s3.get_object(Bucket=bucket, Key="dir/blob.bin")["Body"].read() == data
    listing = client.request(f"{CONSOLE}/buckets/{bucket}?prefix=dir%2F")
    assert "blob.bin" in listing.body and "&lt;i&gt;x.txt" in listing.body
    download = client.request(f"{CONSOLE}/buckets/{bucket}/download?key=dir%2Fblob.bin")
    assert download.status == 200 and download.header("Content-Type") == "application/octet-stream"
    assert download.header("Content-Disposition").startswith('attachment; filename="blob.bin"')
    assert client.fetch(f"{CONSOLE}/buckets/{bucket}/download?key=dir%2Fblob.bin") == data
    missing = client.request(f"{CONSOLE}/buckets/{bucket}/download?key=nope")
    assert missing.status == 404


def test_an_objects_versions_are_listed_and_each_downloads(console_server: ServerProcess):
    client, s3, bucket = _root_with_bucket(console_server, "versioned")
    s3.put_object(Bucket=bucket, Key="plain.txt", Body=b"x")
    assert 'class="versions"' not in client.request(f"{CONSOLE}/buckets/{bucket}").body  # nothing to show yet
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    ids = [s3.put_object(Bucket=bucket, Key="dir/doc.txt", Body=body)["VersionId"] for body in (b"first", b"second")]
    marker = s3.delete_object(Bucket=bucket, Key="dir/doc.txt")["VersionId"]
    s3.put_object(Bucket=bucket, Key="dir/doc.txt.bak", Body=b"another key: not listed with it")
    s3.put_object(Bucket=bucket, Key="dir/live.txt", Body=b"live")
    listing = client.request(f"{CONSOLE}/buckets/{bucket}?prefix=dir%2F")
    assert f"/buckets/{bucket}/versions?key=dir%2Flive.txt" in listing.body
    page = client.request(f"{CONSOLE}/buckets/{bucket}/versions?key=dir%2Fdoc.txt").body
    assert [page.index(v) for v in (marker, ids[1], ids[0])] == sorted(page.index(v) for v in (marker, *ids))
    assert "delete marker" in page and "another key" not in page and page.count('class="download"') == 2
    for version_id, body in zip(ids, (b"first", b"second"), strict=True):
        assert client.fetch(f"{CONSOLE}/buckets/{bucket}/download?key=dir%2Fdoc.txt&version={version_id}") == body
    for bad in (marker, "not-a-version"):  # a delete marker has no bytes; a malformed id reaches no query
        answer = client.request(f"{CONSOLE}/buckets/{bucket}/download?key=dir%2Fdoc.txt&version={bad}")
        assert answer.status in (400, 404), answer
    assert client.request(f"{CONSOLE}/buckets/{bucket}/download?key=dir%2Fdoc.txt").status == 404  # latest: deleted


def test_listing_pages_on(console_server: ServerProcess):
    client, s3, bucket = _root_with_bucket(console_server, "many")
    for n in range(105):
        s3.put_object(Bucket=bucket, Key=f"k{n:03d}", Body=b"")
    first = client.request(f"{CONSOLE}/buckets/{bucket}")
    assert "k000" in first.body and "k099" in first.body and "k100" not in first.body
    assert 'id="next-page"' in first.body
    second = client.request(f"{CONSOLE}/buckets/{bucket}?after=k099")
    assert "k100" in second.body and "k104" in second.body and "k099" not in second.body
    assert 'id="next-page"' not in second.body
    assert client.request(f"{CONSOLE}/buckets/no-such-bucket").status == 404


@pytest.mark.parametrize("workers", [1, 2])
def test_failed_logins_are_capped_per_address(tmp_path, workers):
    """With two workers, each connection reaches either: the cap counts the failures both saw (kept
    apart, each would have seen about half, under its cap)."""
    with ServerProcess(tmp_path / "throttled", extra_args=["--workers", str(workers)]) as server:
        client = Browserless(server.endpoint)
        for _ in range(5):
            assert client.login(DEV_ACCESS_KEY, "wrong").status == 401
        for _ in range(6):
            capped = client.login()  # the right pair, but this address must wait out the minute first
            assert capped.status == 429 and "Too many failed logins" in capped.body


def test_with_workers_a_login_holds_on_every_worker_and_a_logout_ends_it_on_all(tmp_path):
    """Each connection may reach either worker: before sessions were shared (now rows of the metadata store),
    about half the pages after a login answered with the login form."""
    with ServerProcess(tmp_path, extra_args=["--workers", "2"]) as server:
        client = Browserless(server.endpoint)
        assert client.login().status == 303
        assert [client.request(CONSOLE + "/buckets").status for _ in range(30)] == [200] * 30
        token = next(cookie.value for cookie in client.jar if cookie.name == "apollo_console")
        page = client.request(CONSOLE + "/buckets")
        assert client.request(CONSOLE + "/logout", {"csrf": page.csrf()}).status == 303

        def with_old_cookie() -> int:
            request = urllib.request.Request(server.endpoint + CONSOLE + "/buckets",
                                             headers={"Cookie": f"apollo_console={token}"})  # fmt: skip
            try:
                with urllib.request.build_opener(NoRedirect).open(request, timeout=30) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert [with_old_cookie() for _ in range(30)] == [303] * 30  # to the login form, on every worker


def test_the_overview_sets_the_background_works_rates_and_starts_passes(console_server: ServerProcess):
    """What ``apollo admin repair|scrub --rate`` and ``--now`` do, from the overview's forms: stored where
    the manager reads them, shown back, refused when malformed or not the root key's."""
    client = Browserless(console_server.endpoint)
    client.login()
    overview = client.request(CONSOLE + "/")
    assert 'id="rates"' in overview.body and 'name="repair_rate"' in overview.body
    changed = client.request(CONSOLE + "/background", {"csrf": overview.csrf(), "repair_rate": "200MiB/s",
                                                       "scrub_rate": "8MB/s", "repair_paused": "1"})  # fmt: skip
    assert changed.status == 303 and "changed=" in changed.header("Location")
    shown = client.request(CONSOLE + "/").body
    assert 'value="200.0 MiB/s"' in shown and 'value="7.6 MiB/s"' in shown and "checked" in shown
    tuning = admin("repair", meta_dir=console_server.meta_dir)  # the command reads what the form stored
    assert "200.0 MiB/s" in tuning or "209715200" in tuning, tuning
    bad = client.request(CONSOLE + "/background", {"csrf": overview.csrf(), "repair_rate": "fast",
                                                   "scrub_rate": "1MB/s"})  # fmt: skip
    assert bad.status == 400 and "not a byte rate" in bad.body
    assert 'value="200.0 MiB/s"' in client.request(CONSOLE + "/").body  # nothing changed
    started = client.request(CONSOLE + "/background", {"csrf": overview.csrf(), "start": "scrub"})
    assert started.status == 303 and "scrub+pass+requested" in started.header("Location")
    assert client.request(CONSOLE + "/background", {"csrf": overview.csrf(), "start": "format-disks"}).status == 400
    client.request(CONSOLE + "/background", {"csrf": overview.csrf(), "repair_rate": "128MiB/s",
                                             "scrub_rate": "32MiB/s"})  # the defaults again, for other tests
    user = Browserless(console_server.endpoint)
    user.login(*console_user(console_server, "readwrite"))
    page = user.request(CONSOLE + "/buckets")
    refused = user.request(CONSOLE + "/background", {"csrf": page.csrf(), "start": "scrub"})
    assert refused.status == 403


def test_the_keys_page_lists_keys_and_policies_without_a_secret(console_server: ServerProcess):
    name = f"kp-{uuid.uuid4().hex[:6]}"
    key, secret = console_user(console_server, name=name, document={"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::keys-page/*"}]})  # fmt: skip
    client = Browserless(console_server.endpoint)
    client.login()
    page = client.request(CONSOLE + "/keys")
    assert page.status == 200
    row = page.body.split(f"<code>{key}</code>", 1)[1].split("</tr>", 1)[0]
    assert name in row
    assert f"<code>{DEV_ACCESS_KEY}</code>" in page.body and "readwrite" in page.body and "readonly" in page.body
    assert "arn:aws:s3:::keys-page/*" in page.body  # the stored document, escaped into a <pre>
    assert secret not in page.body and "apollo-dev-secret" not in page.body
    user = Browserless(console_server.endpoint)
    user.login(key, secret)
    assert user.request(CONSOLE + "/keys").status == 403
