#!/usr/bin/env python3
"""A steady stream of distinct, signed candidates to an ingress, each request's answer recorded.

The client side of the failover runs (scripts/chaos.sh): every candidate is sent once (never
retried, so that an answer is the whole story of its request), and one line per request goes to
--out: `moka_id,sent_at,answered_at,status` (status 0: no HTTP answer at all). It runs until
SIGTERM or SIGINT, then prints a summary line. Standard library only.

    stream.py --url http://127.0.0.1:18190/api/v2/moka_candidates --access-key AK --secret S \
              --rate 200 --prefix run42 --out /tmp/run42.csv
"""
import argparse
import hashlib
import hmac
import json
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

PATH = "/api/v2/moka_candidates"


def signed_body(access_key, secret, payload, tonce):
    # The `raw` encoding (the default): values as they are, names sorted.
    params = {"access_key": access_key, "payload": payload, "tonce": str(tonce)}
    text = "POST|" + PATH + "|" + "&".join(f"{k}={params[k]}" for k in sorted(params))
    params["signature"] = hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
    return urllib.parse.urlencode(params).encode()


def candidate(moka_id, n, resume_url=None):
    extra = {"resumeUrl": resume_url} if resume_url else {}
    return json.dumps(
        {
            **extra,
            "id": moka_id,
            "name": f"候选人 {n}",
            "phone": f"138{n % 100000000:08d}",
            "email": f"c{n}@example.com",
            "jobTitle": "后端工程师",
            "operator": {"name": "李四", "email": "lisi@example.com", "phone": "15828748567"},
            "educationInfo": [{"startDate": "2007-09", "endDate": "2011-07", "school": "北京大学"}],
        },
        ensure_ascii=False,
    )


def main():
    a = argparse.ArgumentParser()
    a.add_argument("--url", required=True)
    a.add_argument("--access-key", required=True)
    a.add_argument("--secret", required=True)
    a.add_argument("--rate", type=float, default=200, help="requests per second, all threads together")
    a.add_argument("--threads", type=int, default=16)
    a.add_argument("--prefix", required=True, help="candidate ids are <prefix>-<n>")
    a.add_argument("--out", required=True)
    a.add_argument("--timeout", type=float, default=10)
    a.add_argument("--attachment-url", help="every candidate links this résumé (loopback only)")
    a.add_argument("--bad-every", type=int, default=0, help="every Nth request carries a wrong signature")
    args = a.parse_args()

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    counter = [0]
    lines = []
    start = time.monotonic()
    interval = 1.0 / args.rate

    def worker():
        while not stop.is_set():
            with lock:
                n = counter[0]
                counter[0] += 1
            # Paced: request n leaves at start + n / rate (or as soon as a thread is free).
            delay = start + n * interval - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
            moka_id = f"{args.prefix}-{n}"
            secret = args.secret + "-wrong" if args.bad_every and n % args.bad_every == 0 else args.secret
            body = signed_body(args.access_key, secret, candidate(moka_id, n, args.attachment_url), int(time.time()))
            req = urllib.request.Request(args.url, data=body, method="POST")
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
            sent = time.time()
            try:
                with urllib.request.urlopen(req, timeout=args.timeout) as r:
                    status = r.status
            except urllib.error.HTTPError as e:
                status = e.code
            except Exception:  # no HTTP answer (refused, reset, timed out, a broken status line)
                status = 0
            with lock:
                lines.append(f"{moka_id},{sent:.3f},{time.time():.3f},{status}\n")

    threads = [threading.Thread(target=worker) for _ in range(args.threads)]
    for t in threads:
        t.start()
    while not stop.is_set():
        stop.wait(0.5)
    for t in threads:
        t.join()
    with open(args.out, "w") as f:
        f.writelines(lines)
    codes = {}
    for line in lines:
        s = line.rsplit(",", 1)[1].strip()
        codes[s] = codes.get(s, 0) + 1
    print(f"sent {len(lines)} in {time.monotonic() - start:.1f} s, answers {dict(sorted(codes.items()))}", flush=True)


if __name__ == "__main__":
    main()
