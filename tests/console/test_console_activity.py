"""The console's activity charts: rates from the S3 counters, drawn as SVG; on a real server, live."""

from __future__ import annotations

import re
import time

from console_support import CONSOLE, Browserless, console_user
from prometheus_client import CollectorRegistry, Counter, Histogram

from apollo.console.activity import Activity, chart, rates, totals_from
from apollo.testing.server import ServerProcess


def _registry() -> tuple[CollectorRegistry, Counter, Counter, Histogram]:
    registry = CollectorRegistry()
    requests = Counter("apollo_s3_requests_total", "", ["op", "status"], registry=registry)
    sent = Counter("apollo_s3_bytes_out_total", "", registry=registry)
    latency = Histogram("apollo_s3_request_seconds", "", ["op"], registry=registry)
    return registry, requests, sent, latency


def test_rates_between_samples_count_requests_errors_bytes_and_mean_latency():
    registry, requests, sent, latency = _registry()
    clock = [100.0]
    activity = Activity(lambda: totals_from(registry.collect(), clock[0]), kept=3)
    activity.sample()
    for status, seconds in (("200", 0.010), ("200", 0.030), ("503", 0.020), ("404", 0.040)):
        requests.labels("GetObject", status).inc()
        latency.labels("GetObject").observe(seconds)
    sent.inc(8_000_000)
    clock[0] += 4.0
    activity.sample()
    [rate] = activity.history()
    assert (rate.requests, rate.server_errors, rate.mb_out, rate.mb_in) == (1.0, 0.25, 2.0, 0.0)
    assert abs(rate.latency_ms - 25.0) < 1e-9
    for _ in range(5):
        clock[0] += 1.0
        activity.sample()
    assert len(activity.history()) == 3  # bounded: the oldest samples go
    assert rates(activity._samples[0], activity._samples[0]).latency_ms == 0.0  # no request, no latency


def test_a_chart_is_an_svg_line_through_every_point_or_says_it_is_collecting():
    drawn = chart("S3 requests", "req/s", [(0.0, 1.0), (5.0, 3.0), (10.0, 2.0)], "chart-requests")
    points = re.search(r'points="([^"]+)"', drawn).group(1).split()
    assert len(points) == 3 and points[0].startswith("0.0,") and points[-1].startswith("560.0,")
    assert "2.0 req/s now, peak 3.0 req/s" in drawn
    assert "collecting" in chart("S3 requests", "req/s", [(0.0, 1.0)], "chart-requests")


def test_the_activity_page_draws_the_servers_traffic_for_the_root_key(console_server: ServerProcess):
    s3 = console_server.s3()
    s3.create_bucket(Bucket="activity-traffic")
    client = Browserless(console_server.endpoint)
    client.login()
    deadline = time.monotonic() + 20
    while True:  # a sample every 5 s: a line needs three of them (two rates)
        for n in range(20):
            s3.put_object(Bucket="activity-traffic", Key=f"k{n}", Body=b"x" * 1000)
        page = client.request(CONSOLE + "/activity")
        if 'id="chart-requests"><figcaption>' in page.body or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert page.status == 200 and page.header("Refresh") == "5"
    assert re.search(r'id="chart-requests"><figcaption>S3 requests: [0-9.]+ req/s now', page.body), page.body
    assert "<polyline" in page.body and 'id="chart-in"' in page.body
    user = Browserless(console_server.endpoint)
    user.login(*console_user(console_server, "readwrite"))
    assert user.request(CONSOLE + "/activity").status == 403
