"""Admission: how many S3 requests one access key, and the whole process, may have in flight.

One key's job (a training run whose thousands of ranks all read at once, a client in a retry loop) must
not take every slot of a gateway from the others. Beyond its share a request is answered at once with
503 SlowDown, which every S3 SDK retries with backoff, rather than queued: a queue would hold each
request's buffers and connection while the client's own timeout runs out anyway.

Counts are per process (each of ``--workers N`` has its own); a request holds its slot until its answer
is sent, a streamed GET included.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from apollo import metrics
from apollo.gateway.s3errors import s3error


class Admission:
    def __init__(self, per_key_max: int, total_max: int) -> None:
        self.per_key_max = per_key_max
        self.total_max = total_max
        self._per_key: Counter[str] = Counter()
        self._total = 0

    @contextlib.contextmanager
    def admit(self, access_key: str) -> Iterator[None]:
        """A slot for one request of ``access_key``; raises SlowDown when there is none."""
        if self._total >= self.total_max:
            metrics.refused_requests.labels("process").inc()
            raise s3error("SlowDown", f"This server has {self.total_max} requests in progress, its limit; retry "
                                      "with backoff")  # fmt: skip
        if self._per_key[access_key] >= self.per_key_max:
            metrics.refused_requests.labels("key").inc()
            raise s3error("SlowDown", f"Your access key has {self.per_key_max} requests in progress on this "
                                      "server, its limit; retry with backoff")  # fmt: skip
        self._per_key[access_key] += 1
        self._total += 1
        try:
            yield
        finally:
            self._total -= 1
            self._per_key[access_key] -= 1
            if not self._per_key[access_key]:
                del self._per_key[access_key]  # the counter holds only keys with requests in flight


ADMISSION = web.AppKey("admission", Admission)


@web.middleware
async def admission_middleware(request: web.Request, handler) -> web.StreamResponse:
    """After authentication: the key is the one the signature proved; anonymous requests (where a bucket
    policy allows them) share one share, under no key name. Health checks and scrapes pass."""
    if "auth" not in request:
        return await handler(request)
    with request.app[ADMISSION].admit(request.get("access_key") or ""):
        return await handler(request)
