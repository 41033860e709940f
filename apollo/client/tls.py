"""Certificate directories, read the same way by every Apollo process that holds one.

MinIO's layout, so operators and their tooling (cert-manager secrets, certbot hooks) need nothing new::

    DIR/public.crt     this process's certificate, then any chain (PEM)
    DIR/private.key    its key (PEM, unencrypted: a process that restarts unattended has nobody to type a passphrase)
    DIR/CAs/*.crt      the cluster CA(s): the only issuers trusted for the roles' certificates, both ways

The roles (``apollo.roles.tls``) serve with the pair and, given CAs, demand and verify client certificates
and present the pair when they call other roles. A native client (``client_context``) presents the pair, if
there is one, and trusts only ``DIR/CAs`` when it has any (else the system's CAs, as before).

Pairs go into a context from bytes read once, through memory files, never a temp file holding the key.
"""

from __future__ import annotations

import asyncio
import os
import re
import ssl
from pathlib import Path
from urllib.parse import urlsplit

CERT_FILE = "public.crt"
KEY_FILE = "private.key"
CAS_DIR = "CAs"  # MinIO's name for the trusted CAs beside the pair
CERTS_ENV = "APOLLO_CERTS"  # a native client's certificate directory when none is given
CERT_BLOCK = re.compile(rb"-----BEGIN CERTIFICATE-----\s+[A-Za-z0-9+/=\s]+?-----END CERTIFICATE-----")


class CertError(Exception):
    """A certificate directory that cannot serve or call; the message is one line for an operator."""


def _encrypted(*_args: object) -> bytes:
    """The password callback: reached only for an encrypted key. Without it OpenSSL would prompt on the
    terminal and block the start (or a reload) forever."""
    raise CertError("the key is encrypted: give Apollo an unencrypted key (readable by its user only)")


def read_pair(directory: Path) -> tuple[bytes, bytes]:
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


def load_pair(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
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


def _reason(exc: ssl.SSLError) -> str:
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc.reason or exc))


def check_pair(cert: bytes, key: bytes, directory: Path) -> None:
    """Load the pair into a scratch context first. Loading straight into a live one is not safe: OpenSSL
    replaces the certificate before it checks the key, so a mismatched key would leave the live context
    with a new certificate and no key, and every new handshake would fail.

    :raises CertError: the pair cannot be used, with the file and the reason.
    """
    if not CERT_BLOCK.search(cert):
        raise CertError(f"{directory / CERT_FILE} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    if b"PRIVATE KEY-----" not in key:
        raise CertError(f"{directory / KEY_FILE} holds no PEM private key (-----BEGIN ... PRIVATE KEY-----)")
    try:
        load_pair(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert, key)
    except CertError as exc:  # from the password callback, which does not know the directory
        raise CertError(f"{directory / KEY_FILE}: {exc}") from None
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc) or exc.reason == "KEY_VALUES_MISMATCH":
            raise CertError(f"{directory / KEY_FILE} is not the key of the certificate in "
                            f"{directory / CERT_FILE}") from None  # fmt: skip
        raise CertError(f"{directory}: {CERT_FILE} and {KEY_FILE} do not load as a certificate chain and its "
                        f"key (OpenSSL: {_reason(exc)})") from None  # fmt: skip


def ca_files(directory: Path) -> list[Path]:
    """``DIR/CAs/*.crt``, in name order; none when the directory has no ``CAs``."""
    return sorted(p for p in (directory / CAS_DIR).glob("*.crt") if p.is_file())


def read_cas(directory: Path) -> str:
    """Every certificate of ``DIR/CAs/*.crt`` as one PEM text (``cadata``); empty when there is none.

    :raises CertError: a file that cannot be read or holds no certificate OpenSSL takes.
    """
    blocks = []
    for path in ca_files(directory):
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CertError(f"cannot read {path}: {exc.strerror or exc}") from None
        found = [match.group().decode() for match in CERT_BLOCK.finditer(data)]
        if not found:
            raise CertError(f"{path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
        try:  # one file at a time, so that the message names the broken one
            ssl.create_default_context(cadata="\n".join(found))
        except ssl.SSLError as exc:
            raise CertError(f"{path} does not load as a CA certificate (OpenSSL: {_reason(exc)})") from None
        blocks += found
    return "\n".join(blocks)


def calling_context(cas: str) -> ssl.SSLContext:
    """A client's context that trusts ``cas`` only (not the system's CAs: a certificate a public CA issued
    for any name must not pass for a role) and checks host names, TLS 1.2 at least; no pair loaded yet."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=cas)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def client_context(directory: str | os.PathLike) -> ssl.SSLContext:
    """A native client's TLS context from a certificate directory: it presents ``DIR/public.crt`` (a client
    certificate, which a cluster with mutual TLS demands) when the directory has one, and trusts
    ``DIR/CAs/*.crt`` only when there are any, else the system's CAs (or ``SSL_CERT_FILE``).

    Read once: a client that outlives its certificate is made anew with the renewed one.
    :raises CertError: a directory that is missing, or holds a broken pair or CA file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CertError(f"{directory} is not a directory (certs= / {CERTS_ENV}: a directory with "
                        f"{CERT_FILE}, {KEY_FILE} and {CAS_DIR}/*.crt)")  # fmt: skip
    cas = read_cas(directory)
    if cas:
        context = calling_context(cas)
    else:
        context = ssl.create_default_context()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
    if (directory / CERT_FILE).exists() or (directory / KEY_FILE).exists():
        cert, key = read_pair(directory)
        check_pair(cert, key, directory)
        load_pair(context, cert, key)
    return context


def environment_context() -> ssl.SSLContext | None:
    """``client_context`` of the directory ``$APOLLO_CERTS`` names; None when it is not set.

    :raises CertError: a directory that is missing or broken.
    """
    certs = os.environ.get(CERTS_ENV)
    return client_context(certs) if certs else None


# OpenSSL reasons of a handshake that failed over a certificate or over TLS itself: the peer never read a
# request on that connection. Not a record broken mid-stream, after which a call may have been served.
_HANDSHAKE_REASONS = ("CERTIFICATE", "UNKNOWN_CA", "HANDSHAKE_FAILURE", "WRONG_VERSION_NUMBER", "PROTOCOL_VERSION")


def tls_failure(exc: BaseException | None) -> ssl.SSLError | None:
    """The TLS handshake error behind a connection failure, if one is: a certificate refused either way (ours
    by the server, or the server's by us), or a peer that speaks no TLS. That is a configuration problem no
    retry mends, and the peer never read the request."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        # aiohttp's connection errors carry the ssl module's error (and some subclass it too).
        inner = getattr(exc, "certificate_error", None) or getattr(exc, "os_error", None)
        if isinstance(inner, BaseException) and inner is not exc:
            exc = inner
            continue
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        if isinstance(exc, ssl.SSLError):
            reason = str(exc.reason or exc)
            return exc if any(part in reason for part in _HANDSHAKE_REASONS) else None
        exc = exc.__cause__ or exc.__context__
    return None


async def refuses_us(url: str, context: ssl.SSLContext | None, timeout_s: float = 2.0) -> bool:
    """Whether the TLS service at ``url`` ends a new connection from ``context`` before any answer, as an
    Apollo role under mutual TLS does to a client without a certificate of the cluster CA.

    The client cannot tell that from the error alone: asyncio's servers (the roles' aiohttp on uvloop or
    asyncio alike) close a handshake they refuse without sending the TLS alert, and under TLS 1.3 the
    client's side of the handshake is already done by then, so all it sees is a server that disconnected.
    So ask ``/health/live`` on a fresh connection, which every role answers to a client it admits: no byte
    at all means refused; an answer, or no connection, means something else went wrong.
    """
    parts = urlsplit(url)
    context = context or ssl.create_default_context()
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_connection(parts.hostname, parts.port or 443, ssl=context)
    except (OSError, TimeoutError):  # not even a handshake: the caller's own retries deal with that
        return False
    try:
        async with asyncio.timeout(timeout_s):
            writer.write(f"GET /health/live HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n\r\n".encode())
            return await reader.read(1) == b""
    except (ConnectionError, ssl.SSLError):  # closed abruptly, no byte of an answer
        return True
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
