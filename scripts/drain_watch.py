#!/usr/bin/env python3
"""The drain benchmarks' clock: watches the workers' committed submissions through their /metrics.

    scripts/drain_watch.py N http://127.0.0.1:18091/metrics [more worker /metrics URLs...]

Sums `moka_worker_messages_total` over the outcomes that leave a `submissions` row (applied,
stale, duplicate, dead; not retry) across the given workers, and prints one line when the first
submission is committed (`started`) and one when N are (`done`), then waits to be stopped. The worker counts a
batch's submissions once its transaction has committed.

Why not `SELECT count(*) FROM submissions`: polled every 20 ms, that count is a scan of the
growing table, and at 200,000 rows the backend running it took about a quarter of a core of the
two-core machine (11.5% of all CPU samples in `perf record -a`), taken from the PostgreSQL the
benchmark measures, while `limits ref-drain` times itself at no such cost. A scrape of /metrics
costs the worker a few microseconds and PostgreSQL nothing. The scripts check the table's count
once, at the end.

Standard library only. One persistent HTTP connection per worker.
"""

import http.client
import sys
import time
import urllib.parse

STORED = ("applied", "stale", "duplicate", "dead")
COUNTER = "moka_worker_messages_total"


def stored(text):
    """The sum of the counter over the outcomes that leave a `submissions` row."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(COUNTER + "{"):
            continue
        labels, _, value = line.rpartition(" ")
        if any(f'outcome="{o}"' in labels for o in STORED):
            total += float(value)
    return int(total)


class Scraper:
    """Keeps one connection to a worker's /metrics, reopened if the worker closes it."""

    def __init__(self, url):
        u = urllib.parse.urlsplit(url)
        self.host, self.port, self.path = u.hostname, u.port, u.path or "/metrics"
        self.conn = None

    def get(self):
        for _ in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                self.conn.request("GET", self.path)
                resp = self.conn.getresponse()
                body = resp.read().decode()
                if resp.status != 200:
                    raise RuntimeError(f"{self.host}:{self.port}{self.path} answered {resp.status}")
                return stored(body)
            except (ConnectionError, http.client.HTTPException):
                self.conn = None  # the worker closed an idle connection: reconnect once
        raise RuntimeError(f"{self.host}:{self.port}{self.path} did not answer")


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    n = int(sys.argv[1])
    scrapers = [Scraper(u) for u in sys.argv[2:]]
    deadline = time.monotonic() + 3600
    started = False
    while time.monotonic() < deadline:
        try:
            total = sum(s.get() for s in scrapers)
        except (OSError, RuntimeError):
            # A worker still starting has no listener yet.
            time.sleep(0.05)
            continue
        if not started and total > 0:
            print("started", flush=True)
            started = True
        if total >= n:
            print("done", flush=True)
            # Stay until stopped (or stdin closes): a coprocess that exits takes its output pipe
            # with it, maybe before the script has read this line.
            sys.stdin.read()
            return
        time.sleep(0.01 if not started else 0.02)
    sys.exit(f"fewer than {n} submissions committed within an hour")


if __name__ == "__main__":
    main()
