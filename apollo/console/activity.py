"""The console's live activity: S3 requests, bytes and latency over the last minutes, from the server's
own metrics, drawn as inline SVG (the console has no JavaScript).

``Activity`` samples the S3 counters every ``SAMPLE_S`` into a ring of ``SAMPLES_KEPT`` (10 minutes) and
turns consecutive samples into rates: requests and 5xx answers per second, MB/s in and out, and the mean
latency of the interval. With ``--workers N`` it reads every worker's counters (the multiprocess files
``/metrics`` sums), so every worker's console draws the same server.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from apollo import metrics
from apollo.console.render import esc

SAMPLE_S = 5.0
SAMPLES_KEPT = 120
_WIDTH, _HEIGHT = 560, 120


@dataclass(frozen=True)
class Totals:
    """The S3 counters at one moment."""

    at: float
    requests: float
    server_errors: float
    bytes_in: float
    bytes_out: float
    seconds: float  # summed latency of the requests counted


@dataclass(frozen=True)
class Rates:
    """What happened between two samples, per second (latency: the interval's mean, in ms)."""

    at: float
    requests: float
    server_errors: float
    mb_in: float
    mb_out: float
    latency_ms: float


def totals_from(families: Iterable, at: float) -> Totals:
    """The counters in ``families`` (what a prometheus registry's ``collect`` yields)."""
    requests = errors = bytes_in = bytes_out = seconds = 0.0
    for family in families:
        for sample in family.samples:
            if sample.name == "apollo_s3_requests_total":
                requests += sample.value
                errors += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
            elif sample.name == "apollo_s3_bytes_in_total":
                bytes_in += sample.value
            elif sample.name == "apollo_s3_bytes_out_total":
                bytes_out += sample.value
            elif sample.name == "apollo_s3_request_seconds_sum":
                seconds += sample.value
    return Totals(at, requests, errors, bytes_in, bytes_out, seconds)


def rates(earlier: Totals, later: Totals) -> Rates:
    span = max(later.at - earlier.at, 1e-9)
    count = later.requests - earlier.requests
    latency = (later.seconds - earlier.seconds) / count * 1000 if count > 0 else 0.0
    return Rates(later.at, count / span, (later.server_errors - earlier.server_errors) / span,
                 (later.bytes_in - earlier.bytes_in) / span / 1e6, (later.bytes_out - earlier.bytes_out) / span / 1e6,
                 latency)  # fmt: skip


class Activity:
    def __init__(self, read: Callable[[], Totals] | None = None, kept: int = SAMPLES_KEPT) -> None:
        """``read``: the counters now (default: this server's metrics, all workers')."""
        self._read = read or (lambda: totals_from(metrics.aggregated().collect(), time.time()))
        self._samples: deque[Totals] = deque(maxlen=kept + 1)

    def sample(self) -> None:
        self._samples.append(self._read())

    def history(self) -> list[Rates]:
        samples = list(self._samples)
        return [rates(a, b) for a, b in zip(samples, samples[1:], strict=False)]

    async def sampling(self, app: web.Application) -> AsyncIterator[None]:
        """An aiohttp cleanup context: samples while the app runs."""

        async def loop() -> None:
            while True:
                self.sample()
                await asyncio.sleep(SAMPLE_S)

        task = asyncio.create_task(loop())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def chart(title: str, unit: str, points: list[tuple[float, float]], element_id: str) -> str:
    """A line chart of (time, value) as inline SVG, with its latest value and its peak in the title."""
    if len(points) < 2:
        return f'<p class="empty" id="{esc(element_id)}">{esc(title)}: collecting (a sample every {SAMPLE_S:.0f} s)</p>'
    start, end = points[0][0], points[-1][0]
    peak = max(value for _, value in points) or 1.0
    coordinates = " ".join(f"{(t - start) / max(end - start, 1e-9) * _WIDTH:.1f},"
                           f"{_HEIGHT - value / peak * (_HEIGHT - 4) - 2:.1f}" for t, value in points)  # fmt: skip
    label = f"{title}: {points[-1][1]:.1f} {unit} now, peak {peak:.1f} {unit} (last {end - start:.0f} s)"
    return (f'<figure class="chart" id="{esc(element_id)}"><figcaption>{esc(label)}</figcaption>'
            f'<svg viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}" role="img" '
            f'aria-label="{esc(label)}"><polyline fill="none" stroke="#2c6bc9" stroke-width="2" '
            f'points="{coordinates}"/></svg></figure>')  # fmt: skip
