"""HTTPS for Apollo's listeners (``--certs DIR``), mutual TLS between the roles of a cluster, and reloads.

The directory's layout (MinIO's: ``DIR/public.crt``, ``DIR/private.key``, ``DIR/CAs/*.crt``) and how its files
are read and checked are ``apollo.client.tls``'s, shared with native clients. What the CAs mean depends on
the process (``ServingCerts``): the front doors (``apollo server``, a gateway's S3 port) never ask for a client
certificate; ``apollo meta`` and ``apollo storage`` admit only peers with a certificate the cluster CA issued;
every cluster role that calls another (storage node and gateway to the metadata service, metadata service
and gateway to storage nodes) presents its own certificate and trusts only the cluster CA.

Certificates are short-lived nowadays, so a new pair is taken without a restart and without dropping a
connection: on SIGHUP and when a file changes (checked every ``CHECK_INTERVAL_S``), the pair is loaded
into the same ``SSLContext`` objects, serving and calling. OpenSSL copies the certificate into each
connection when it starts, so new handshakes present the new one and connections already open keep
theirs. A pair that does not load is logged and the one in use stays: a half-copied renewal must never take
a listener down. A CA added to ``DIR/CAs`` is trusted from the reload on; one removed stays trusted until a
restart (OpenSSL cannot take a CA out of a live context), which the log says.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import signal
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from apollo.client.tls import (
    CAS_DIR,
    CERT_BLOCK,
    CERT_FILE,
    KEY_FILE,
    CertError,
    ca_files,
    calling_context,
    check_pair,
    load_pair,
    read_cas,
    read_pair,
)

__all__ = ["CertError", "ServingCerts", "check_https", "fingerprint", "serving_certs"]

CHECK_INTERVAL_S = 3.0  # how often the files' modification times are compared


def fingerprint(cert: bytes) -> str:
    """SHA-256 of the first certificate, as ``openssl x509 -noout -fingerprint -sha256`` prints it, so an
    operator can tell from the log which certificate a process serves."""
    match = CERT_BLOCK.search(cert)
    if match is None:
        return "?"
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(match.group().decode())).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class ServingCerts:
    """The TLS contexts of one process and the directory they came from.

    ``context`` serves the process's port. A cluster role (``cluster``) reads the cluster CA from
    ``DIR/CAs/*.crt``; when there is one, ``client`` is the context it calls other roles with (its own pair
    as the client certificate, the cluster CA the only one trusted), else None (calls verify as any client
    does). ``require_client_certs`` (``apollo meta``, ``apollo storage``): the port admits only peers whose
    certificate the cluster CA issued (``CERT_REQUIRED``, the handshake fails without one), and the CA
    must be there. Without it (the front doors) no client certificate is asked for: S3 clients have none.

    :raises CertError: at construction, when the directory cannot serve (the caller exits with the message).
    """

    def __init__(self, directory: Path, log: logging.Logger, *, cluster: bool = False,
                 require_client_certs: bool = False) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.log = log
        self.cluster = cluster or require_client_certs
        self.require_client_certs = require_client_certs
        self._stamp = self._stat()
        cert, key = read_pair(self.directory)
        check_pair(cert, key, self.directory)
        self.cas = self._read_cas()
        # Purpose.CLIENT_AUTH: a server's context with the ssl module's secure defaults (no SSLv3,
        # no compression, server cipher preference, forward-secret ciphers); TLS 1.2 is the floor. Only
        # the cluster CA is loaded, never the system's: a certificate any public CA issued admits nobody.
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=self.cas or None)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        if require_client_certs:
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.client = calling_context(self.cas) if self.cas else None
        for context in self._contexts():
            load_pair(context, cert, key)
        self.fingerprint = fingerprint(cert)

    def _contexts(self) -> list[ssl.SSLContext]:
        return [self.context] if self.client is None else [self.context, self.client]

    def _read_cas(self) -> str:
        """The cluster CA of a cluster role; nothing for a front door, which never reads ``DIR/CAs``."""
        if not self.cluster:
            return ""
        cas = read_cas(self.directory)
        if self.require_client_certs and not cas:
            raise CertError(f"{self.directory / CAS_DIR} holds no CA certificate (*.crt): this role admits only "
                            f"peers with a certificate of the cluster CA, so it needs that CA")  # fmt: skip
        return cas

    def _stat(self) -> tuple | None:
        """What tells a changed directory: modification time, size and inode of the pair and of every CA file
        (a Kubernetes secret is replaced by a symlink swap, which changes the inode, not always the time).
        None while either file of the pair is missing."""
        try:
            stats = [os.stat(self.directory / name) for name in (CERT_FILE, KEY_FILE)]
            stats += [os.stat(path) for path in ca_files(self.directory)] if self.cluster else []
        except OSError:
            return None
        return tuple((s.st_mtime_ns, s.st_size, s.st_ino, s.st_dev) for s in stats)

    def reload(self, why: str) -> bool:
        """Load the pair (and the CAs) on disk into every context; on any failure keep the ones in use."""
        self._stamp = self._stat()
        try:
            cert, key = read_pair(self.directory)
            check_pair(cert, key, self.directory)
            cas = self._read_cas()
            for context in self._contexts():
                load_pair(context, cert, key)
        except (CertError, ssl.SSLError, OSError) as exc:
            self.log.error("TLS certificate not reloaded (%s): %s; still serving sha256 %s", why, exc,
                           self.fingerprint)  # fmt: skip
            return False
        previous, self.fingerprint = self.fingerprint, fingerprint(cert)
        self.log.info("TLS certificate reloaded (%s): sha256 %s (was %s)", why, self.fingerprint, previous)
        self._take_cas(cas)
        return True

    def _take_cas(self, cas: str) -> None:
        """Trust CAs added to ``DIR/CAs``. OpenSSL only adds to a live context's trust store, so a CA removed
        stays trusted until a restart, and a CA where there was none starts mutual TLS only at one."""
        old, new = set(_blocks(self.cas)), set(_blocks(cas))
        if new == old:
            return
        if self.client is None:
            self.log.warning("%s: cluster CA certificates appeared; calls to other roles use them after a restart",
                             self.directory / CAS_DIR)  # fmt: skip
            return
        if new - old:
            for context in self._contexts():
                context.load_verify_locations(cadata="\n".join(sorted(new - old)))
            self.log.info("TLS: %d CA certificate(s) added to %s are trusted now", len(new - old),
                          self.directory / CAS_DIR)  # fmt: skip
        if old - new:
            self.log.warning("TLS: %d CA certificate(s) removed from %s stay trusted until this process restarts",
                             len(old - new), self.directory / CAS_DIR)  # fmt: skip
        self.cas = "\n".join(sorted(old | new))  # what the contexts trust

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


def _blocks(cas: str) -> list[str]:
    return [match.group().decode() for match in CERT_BLOCK.finditer(cas.encode())]


def serving_certs(directory: Path, log: logging.Logger, what: str, *, cluster: bool = False,
                  require_client_certs: bool = False) -> ServingCerts:  # fmt: skip
    """The process's TLS contexts, or exit 1 with one line saying what is wrong with the directory (no
    traceback: the operator needs the file and the reason, nothing else)."""
    try:
        certs = ServingCerts(directory, log, cluster=cluster, require_client_certs=require_client_certs)
    except CertError as exc:
        raise SystemExit(f"{what}: --certs: {exc}") from None
    log.info("TLS certificate %s: sha256 %s", directory / CERT_FILE, certs.fingerprint)
    if certs.cas:
        port = ("this port admits only peers with a certificate it issued" if require_client_certs
                else "this port asks S3 clients for no certificate")  # fmt: skip
        log.info("mutual TLS: cluster CA %s (%d certificate(s)); %s; calls to other roles present %s and trust "
                 "that CA only", directory / CAS_DIR, len(_blocks(certs.cas)), port, CERT_FILE)  # fmt: skip
    return certs


def check_https(urls: str, what: str, flag: str) -> None:
    """A role that holds the cluster CA calls the other roles over TLS only: an ``http://`` URL among its
    ``flag`` (comma-separated) would send its signed calls in clear, so it stops the start (exit 1)."""
    plain = [url.strip() for url in urls.split(",") if url.strip() and not url.strip().startswith("https://")]
    if plain:
        raise SystemExit(f"{what}: {flag} {plain[0]} is not https://, but --certs holds the cluster CA "
                         f"({CAS_DIR}/): the roles speak mutual TLS")  # fmt: skip
