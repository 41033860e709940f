"""HTTPS for the S3 front doors (``apollo server`` and ``apollo gateway`` with ``--certs DIR``).

MinIO's convention, so operators and their tooling (cert-manager secrets, certbot hooks) need nothing new:
``DIR/public.crt`` holds the certificate, optionally followed by its chain, ``DIR/private.key`` its key,
both PEM, the key unencrypted (a process that restarts unattended has nobody to type a passphrase).

Certificates are short-lived nowadays, so a new pair is taken without a restart and without dropping a
connection: on SIGHUP and when either file changes (checked every ``CHECK_INTERVAL_S``), the pair is loaded
into the same ``SSLContext``. OpenSSL copies the certificate into each connection when it starts, so new
handshakes present the new one and connections already open keep theirs. A pair that does not load is
logged and the one in use stays: a half-copied renewal must never take the front door down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

CERT_FILE = "public.crt"
KEY_FILE = "private.key"
CHECK_INTERVAL_S = 3.0  # how often the files' modification times are compared
_CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


class CertError(Exception):
    """A certificate pair that cannot serve; the message is one line for an operator."""


def _encrypted(*_args: object) -> bytes:
    """The password callback: reached only for an encrypted key. Without it OpenSSL would prompt on the
    terminal and block the start (or a reload) forever."""
    raise CertError("the key is encrypted: give Apollo an unencrypted key (readable by its user only)")


def _snapshot(directory: Path) -> tuple[bytes, bytes]:
    """Both files' bytes, read once: what is checked is then exactly what is loaded, even while a renewal
    rewrites the files."""
    data = []
    for name in (CERT_FILE, KEY_FILE):
        path = directory / name
        try:
            data.append(path.read_bytes())
        except FileNotFoundError:
            raise CertError(f"{path} is missing (--certs DIR needs {CERT_FILE} and {KEY_FILE}, PEM)") from None
        except OSError as exc:
            raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
    return data[0], data[1]


def _load(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``load_cert_chain`` from bytes: it takes paths only, so the bytes go through memory files (memfd),
    never a temp file on disk with the private key in it."""
    fds = [os.memfd_create(name, os.MFD_CLOEXEC) for name in ("apollo-cert", "apollo-key")]
    try:
        for fd, data in zip(fds, (cert, key), strict=True):
            os.write(fd, data)
        context.load_cert_chain(f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}", password=_encrypted)
    finally:
        for fd in fds:
            os.close(fd)


def _check_pair(cert: bytes, key: bytes, directory: Path) -> None:
    """Load the pair into a scratch context first. Loading straight into the serving one is not safe:
    OpenSSL replaces the certificate before it checks the key, so a mismatched key would leave the live
    context with a new certificate and no key, and every new handshake would fail."""
    if not _CERT_BLOCK.search(cert):
        raise CertError(f"{directory / CERT_FILE} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key:
        raise CertError(f"{directory / KEY_FILE} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    try:
        _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)
    except CertError as exc:  # from the password callback, which does not know the directory
        raise CertError(f"{directory / KEY_FILE}: {exc}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise CertError(f"{directory / KEY_FILE} is not the key of the certificate in "
                            f"{directory / CERT_FILE}") from None  # fmt: skip
        detail = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc.reason or exc))
        raise CertError(f"{directory}: {CERT_FILE} and {KEY_FILE} do not load as a certificate chain and its "
                        f"key (OpenSSL: {detail})") from None  # fmt: skip


def fingerprint(cert: bytes) -> str:
    """SHA-256 of the first certificate, as ``openssl x509 -noout -fingerprint -sha256`` prints it, so an
    operator can tell from the log which certificate a process serves."""
    match = _CERT_BLOCK.search(cert)
    if match is None:
        return "?"
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group().decode())).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class ServingCerts:
    """The TLS context of one front-door process and the directory it came from.

    :raises CertError: at construction, when the pair cannot serve (the caller exits with the message).
    """

    def __init__(self, directory: Path, log: logging.Logger) -> None:
        self.directory = Path(directory)
        self.log = log
        # Purpose.CLIENT_AUTH: a server's context with the ssl module's secure defaults (no SSLv3,
        # no compression, server cipher preference, forward-secret ciphers); TLS 1.2 is the floor.
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self._stamp = self._stat()
        cert, key = _snapshot(self.directory)
        _check_pair(cert, key, self.directory)
        _load(self.context, cert, key)
        self.fingerprint = fingerprint(cert)

    def _stat(self) -> tuple | None:
        """What tells a changed pair: modification time, size and inode of both files (a Kubernetes secret
        is replaced by a symlink swap, which changes the inode, not always the time). None while either is
        missing."""
        try:
            stats = [os.stat(self.directory / name) for name in (CERT_FILE, KEY_FILE)]
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino, s.st_dev) for s in stats)

    def reload(self, why: str) -> bool:
        """Load the pair on disk into the serving context; on any failure keep the one in use."""
        self._stamp = self._stat()
        try:
            cert, key = _snapshot(self.directory)
            _check_pair(cert, key, self.directory)
            _load(self.context, cert, key)
        except (CertError, ssl.SSLError, OSError) as exc:
            self.log.error("TLS certificate not reloaded (%s): %s; still serving sha256 %s", why, exc,
                           self.fingerprint)  # fmt: skip
            return False
        previous, self.fingerprint = self.fingerprint, fingerprint(cert)
        self.log.info("TLS certificate reloaded (%s): sha256 %s (was %s)", why, self.fingerprint, previous)
        return True

    def check(self) -> None:
        """Reload if either file changed since the last load or attempt. A failed attempt is not retried
        until the files change again, so a broken renewal is one log line, not one per interval."""
        if self._stat() != self._stamp:
            self.reload("files changed")

    def install(self, app: web.Application) -> None:
        """Reload on SIGHUP and on file changes for as long as ``app`` runs."""
        app.cleanup_ctx.append(self._watch)

    async def _watch(self, app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self.reload, "SIGHUP")

        async def poll() -> None:
            while True:
                await asyncio.sleep(CHECK_INTERVAL_S)
                try:
                    self.check()
                except Exception:  # the watcher must outlive any surprise; requests never depend on it
                    self.log.exception("TLS certificate check failed")

        task = asyncio.create_task(poll())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        loop.remove_signal_handler(signal.SIGHUP)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # removing restored the default, which would end the process


def serving_certs(directory: Path, log: logging.Logger, what: str) -> ServingCerts:
    """The process's TLS context, or exit 1 with one line saying what is wrong with the pair (no traceback:
    the operator needs the file and the reason, nothing else)."""
    try:
        certs = ServingCerts(directory, log)
    except CertError as exc:
        raise SystemExit(f"{what}: --certs: {exc}") from None
    log.info("TLS certificate %s: sha256 %s", directory / CERT_FILE, certs.fingerprint)
    return certs
