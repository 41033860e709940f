"""Helpers of the console tests: a cookie-keeping HTTP client that does not follow redirects."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from apollo.testing.admin import admin
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY

CONSOLE = "/_apollo/console"


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers if k.lower() == name.lower()), "")

    def cookies(self) -> list[str]:
        return [v for k, v in self.headers if k.lower() == "set-cookie"]

    def csrf(self) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', self.body)
        assert match, self.body
        return match.group(1)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browserless:
    """What a browser does over plain HTTP: keeps cookies, posts forms; redirects are returned, not followed."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar), NoRedirect)

    def request(self, path: str, data: bytes | dict | None = None, headers: dict | None = None) -> Answer:
        if isinstance(data, dict):
            data = urllib.parse.urlencode(data).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, headers=headers or {})
        try:
            with self._opener.open(request, timeout=30) as response:
                return Answer(response.status, list(response.headers.items()), response.read().decode(errors="replace"))
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, list(exc.headers.items()), exc.read().decode(errors="replace"))

    def fetch(self, path: str) -> bytes:
        """A body as bytes (downloads are binary)."""
        with self._opener.open(self.endpoint + path, timeout=30) as response:
            return response.read()

    def login(self, access_key: str = DEV_ACCESS_KEY, secret_key: str = DEV_SECRET_KEY) -> Answer:
        form = self.request(CONSOLE + "/login")
        return self.request(CONSOLE + "/login", {"csrf": form.csrf(), "next": CONSOLE + "/",
                                                 "access_key": access_key, "secret_key": secret_key})  # fmt: skip


def console_user(server, *policies: str, document: dict | None = None, name: str = "") -> tuple[str, str]:
    """A new key (access key, secret) with ``policies`` attached and, given a ``document``, a stored policy
    of it too, named ``name`` or at random (``apollo admin policy create`` from a file under the server's root)."""
    names = list(policies)
    if document is not None:
        name = name or f"p-{uuid.uuid4().hex[:8]}"
        path = Path(server.root) / f"{name}.json"
        path.write_text(json.dumps(document))
        admin("policy", "create", name, path, meta_dir=server.meta_dir)
        names.append(name)
    made = admin("user", "create", *(arg for name in names for arg in ("--policy", name)), meta_dir=server.meta_dir)
    return made.split("access key: ")[1].split()[0], made.split("secret key: ")[1].split()[0]


def multipart(fields: list[tuple[str, str | tuple[str, bytes]]]) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body with the fields in the order given (a file: (name, (filename, bytes)))."""
    boundary = "----apollo-console-test"
    parts = []
    for name, value in fields:
        if isinstance(value, tuple):
            filename, content = value
            head = f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n' \
                   "Content-Type: application/octet-stream\r\n\r\n"  # fmt: skip
            parts.append(f"--{boundary}\r\n{head}".encode() + content + b"\r\n")
        else:
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def check_screenshot(path, width: int, height: int) -> None:
    """``path`` is a real picture of a page: a PNG that decodes, ``width`` x ``height``, not one solid colour.

    With Pillow installed it decodes the image and counts its colours; without it, the PNG is taken
    apart here: the header, the size in IHDR, the image data inflating to exactly the size IHDR
    implies, and more distinct byte values than a filtered solid colour produces.
    """
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is no PNG"
    try:
        from PIL import Image
    except ImportError:
        Image = None
    if Image is not None:
        with Image.open(path) as image:
            image.load()
            assert image.size == (width, height), image.size
            colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
            assert colours is None or len(colours) > 1, f"{path} is one solid colour"
        return
    chunks, offset = {}, 8
    while offset < len(data):
        length, kind = struct.unpack(">I4s", data[offset : offset + 8])
        chunks.setdefault(kind, []).append(data[offset + 8 : offset + 8 + length])
        offset += 12 + length
    w, h, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert (w, h) == (width, height), (w, h)
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    pixels = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(pixels) == h * (1 + w * channels * depth // 8), "image data does not match its size"
    assert len(set(pixels)) > 16, f"{path} looks like one solid colour"
