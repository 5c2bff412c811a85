#!/usr/bin/env python3
"""Drives a running moka-ingest console for scripts/bench-console.sh (standard library only).

  console_bench.py latency BASE USER PASSWORD N   -> p50/p95/max of three pages, N requests each
  console_bench.py replay  BASE USER PASSWORD     -> "replay all that match" (reason validation),
                                                     printing the action's progress as it runs
Only BASE (a loopback URL) is contacted.
"""
import http.cookiejar
import random
import re
import sys
import time
import urllib.parse
import urllib.request


def session(base, user, password):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    body = urllib.parse.urlencode({"username": user, "password": password}).encode()
    with opener.open(base + "/login", body) as r:
        page = r.read().decode()
    if "whoami" not in page:
        sys.exit("login failed")
    return opener


def csrf(page):
    return re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)


def timed(opener, url):
    start = time.perf_counter()
    with opener.open(url) as r:
        r.read()
        assert r.status == 200, (url, r.status)
    return (time.perf_counter() - start) * 1000


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def latency(base, user, password, n):
    opener = session(base, user, password)
    rnd = random.Random(7)
    pages = {
        "overview": lambda: base + "/",
        "dead letters (validation, field phone, last week)": lambda: base
        + "/dead-letters?kind=validation&field=phone&window=week",
        "dead letters (error text, page 3)": lambda: base + "/dead-letters?q=timeout&page=2",
        "candidate search (prefix)": lambda: base
        + "/candidates?q="
        + urllib.parse.quote(
            rnd.choice(
                [
                    "c%05d" % rnd.randrange(20000),
                    "user%04d" % rnd.randrange(10000),
                    "13800%03d" % rnd.randrange(1000),
                    rnd.choice(["张", "李", "王", "Zhang", "Li"]),
                ]
            )
        ),
        "candidate page": lambda: base + "/candidates/c%07d" % rnd.randrange(1, 200001),
    }
    print("%-52s %8s %8s %8s" % ("page", "p50 ms", "p95 ms", "max ms"))
    for name, url in pages.items():
        for _ in range(5):  # warm-up: cached plans and pages
            timed(opener, url())
        samples = [timed(opener, url()) for _ in range(n)]
        print("%-52s %8.1f %8.1f %8.1f" % (name, pct(samples, 50), pct(samples, 95), max(samples)))


def replay(base, user, password):
    opener = session(base, user, password)
    with opener.open(base + "/dead-letters?kind=validation") as r:
        page = r.read().decode()
    form = {"csrf": csrf(page), "kind": "validation", "do": "replay-all"}
    with opener.open(base + "/dead-letters/confirm", urllib.parse.urlencode(form).encode()) as r:
        confirm = r.read().decode()
    said = re.search(r"Replay (\d+) messages?", confirm).group(1)
    carried = dict(re.findall(r'<input type="hidden" name="([a-z]+)" value="([^"]*)"', confirm))
    carried = {k: v.replace("&amp;", "&").replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">") for k, v in carried.items()}
    start = time.time()
    with opener.open(base + "/dead-letters/act", urllib.parse.urlencode(carried).encode()) as r:
        action = r.geturl()
    print("confirmation: replay %s messages; action page %s" % (said, action))
    while True:
        time.sleep(1)
        with opener.open(action) as r:
            page = r.read().decode()
        progress = re.search(r'id="progress">([^<]*)<', page).group(1)
        print("  %5.1fs  %s" % (time.time() - start, progress), flush=True)
        if "running" not in re.search(r'id="state">(.*?)</dd>', page, re.S).group(1):
            print("finished in %.1fs: %s" % (time.time() - start, re.sub(r"<[^>]+>", "", re.search(r'id="state">(.*?)</dd>', page, re.S).group(1)).strip()))
            return


if __name__ == "__main__":
    what, base, user, password = sys.argv[1:5]
    if what == "latency":
        latency(base, user, password, int(sys.argv[5]))
    else:
        replay(base, user, password)
