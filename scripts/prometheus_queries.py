#!/usr/bin/env python3
"""Checks the dashboard's and the alerting rules' PromQL against a running Prometheus.

    scripts/prometheus_queries.py --prometheus http://127.0.0.1:9090 \
        --dashboard deploy/grafana/moka-ingest.json --rules deploy/prometheus/alerts.yml [--wait 60]

Every dashboard target expression (Grafana's `$__rate_interval`, `$__interval` and `$__range`
replaced by `1m`, datasource variables removed) must be answered `success` by `/api/v1/query`
with a non-empty result. Every rule expression must be answered `success` (an alert's condition is
rightly empty when nothing is wrong), and every `moka_…` metric it names must exist:
`count(<metric>)` must be non-empty. One line per query, then a summary; exit 1 if any failed.

`--wait SECONDS` retries the failing queries until they pass or the time is up: a fresh
Prometheus needs two scrapes before a `rate()` has a value.

Standard library only.
"""

import argparse
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

GRAFANA_INTERVALS = ("__rate_interval", "__interval", "__range")
METRIC = re.compile(r"moka_[a-z_]+")


# --- The dashboard -------------------------------------------------------------------------------


def dashboard_exprs(path):
    """Every target expression of every panel (rows' nested panels included), ready to query."""
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    dash = dash.get("dashboard", dash)  # the API's export wraps it
    variables = (dash.get("templating") or {}).get("list") or []
    exprs = []

    def walk(panels):
        for panel in panels or []:
            for target in panel.get("targets") or []:
                expr = target.get("expr")
                if expr and not target.get("hide"):
                    exprs.append(substitute(expr, variables))
            walk(panel.get("panels"))

    walk(dash.get("panels"))
    return exprs


def var_pattern(name):
    """`$name`, `${name}`, `${name:format}` and `[[name]]`."""
    n = re.escape(name)
    return re.compile(r"\$\{" + n + r"(?::[^}]*)?\}|\$" + n + r"\b|\[\[" + n + r"(?::[^\]]*)?\]\]")


def substitute(expr, variables):
    for name in GRAFANA_INTERVALS:
        expr = var_pattern(name).sub("1m", expr)
    for var in variables:
        name = var.get("name")
        if not name:
            continue
        pattern = var_pattern(name)
        if var.get("type") == "datasource":
            # A datasource variable has no business in PromQL; if it is there, drop the matcher
            # that uses it, then any bare reference.
            expr = re.sub(r'[a-zA-Z_][a-zA-Z0-9_]*\s*(?:=~|!~|!=|=)\s*"(?:' + pattern.pattern + r')"\s*,?', "", expr)
            expr = re.sub(r"\{\s*\}", "", expr)
            expr = re.sub(r",\s*\}", "}", expr)
            expr = pattern.sub("", expr)
        else:
            current = (var.get("current") or {}).get("value")
            if isinstance(current, list):
                current = "|".join(current)
            if not current or current in ("$__all", "All"):
                current = ".*"
            expr = pattern.sub(lambda _m, v=current: v, expr)
    return expr


# --- The rules file (the YAML subset rule files are written in) ----------------------------------


def rule_exprs(path):
    """The `expr:` of every rule, from a YAML (or JSON) rules file, without a YAML library.

    Handles `expr: plain`, quoted scalars, block scalars (`|`, `|-`, `>`, `>-`) and plain scalars
    continued on more-indented lines, which is how Prometheus rule files are written.
    """
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        data = json.loads(text)
    except ValueError:
        pass
    else:
        return [r["expr"] for g in data.get("groups", []) for r in g.get("rules", []) if "expr" in r]

    lines = text.splitlines()
    exprs = []
    key = re.compile(r"^(\s*(?:-\s+)?)expr:(?:\s+(.*))?$")
    i = 0
    while i < len(lines):
        m = key.match(lines[i])
        i += 1
        if not m:
            continue
        indent = len(m.group(1))  # the column of `expr`
        value = (m.group(2) or "").strip()
        continued = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and (len(line) - len(line.lstrip(" "))) <= indent:
                break
            if line.strip().startswith("#") and not value.startswith(("|", ">")):
                i += 1
                continue
            continued.append(line)
            i += 1
        while continued and not continued[-1].strip():
            continued.pop()
        if value[:1] in ("|", ">") and re.fullmatch(r"[|>][-+0-9]*(\s+#.*)?", value):
            body = [l.strip() for l in continued]
            exprs.append("\n".join(body).strip())
        elif value.startswith("'"):
            joined = " ".join([value] + [l.strip() for l in continued])
            exprs.append(joined.strip()[1:].rsplit("'", 1)[0].replace("''", "'"))
        elif value.startswith('"'):
            joined = " ".join([value] + [l.strip() for l in continued]).strip()
            try:
                exprs.append(json.loads(joined[: joined.rindex('"') + 1]))
            except ValueError:
                exprs.append(joined.strip('"'))
        else:
            plain = " ".join([value] + [l.strip() for l in continued])
            plain = re.sub(r"\s+#.*$", "", plain)  # a comment after a plain scalar
            exprs.append(plain.strip())
    return [e for e in exprs if e]


# --- Querying ------------------------------------------------------------------------------------


def query(base, expr, timeout):
    """(ok, series count, message) for one instant query."""
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:  # Prometheus answers 400/422/503 with a JSON error
        body = e.read()
        try:
            doc = json.loads(body)
            return False, 0, f"{doc.get('errorType', e.code)}: {doc.get('error', '')}"
        except ValueError:
            return False, 0, f"HTTP {e.code}"
    except (urllib.error.URLError, OSError) as e:
        return False, 0, f"request failed: {getattr(e, 'reason', e)}"
    try:
        doc = json.loads(body)
    except ValueError:
        return False, 0, "not JSON"
    if doc.get("status") != "success":
        return False, 0, f"{doc.get('errorType', 'status')}: {doc.get('error', doc.get('status'))}"
    data = doc.get("data") or {}
    result = data.get("result")
    if data.get("resultType") in ("scalar", "string"):
        return True, 1, ""
    return True, len(result or []), ""


class Check:
    def __init__(self, expr, need_result, origin):
        self.expr = expr
        self.need_result = need_result
        self.origin = origin
        self.passed = False
        self.line = ""

    def run(self, base, timeout):
        ok, n, msg = query(base, self.expr, timeout)
        shown = " ".join(self.expr.split())
        if not ok:
            self.passed, self.line = False, f"ERROR {msg} {shown}"
        elif self.need_result and n == 0:
            self.passed, self.line = False, f"EMPTY {shown}"
        else:
            self.passed, self.line = True, f"ok   {n:>3} series  {shown}"
        return self.passed


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="Prometheus base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", required=True, help="Grafana dashboard JSON")
    ap.add_argument("--rules", required=True, help="Prometheus rules file (YAML)")
    ap.add_argument("--wait", type=float, default=0, metavar="SECONDS",
                    help="retry failing queries until they pass or this much time has passed")
    ap.add_argument("--timeout", type=float, default=10, help="per-query HTTP timeout (s)")
    args = ap.parse_args(argv)

    checks = []
    for expr in dashboard_exprs(args.dashboard):
        checks.append(Check(expr, True, "dashboard"))
    metrics = []
    for expr in rule_exprs(args.rules):
        checks.append(Check(expr, False, "rule"))
        for name in METRIC.findall(expr):
            if name not in metrics:
                metrics.append(name)
    for name in metrics:
        checks.append(Check(f"count({name})", True, "rule metric"))
    if not checks:
        print("no expressions found", file=sys.stderr)
        return 1

    deadline = time.monotonic() + args.wait
    pending = list(checks)
    while True:
        pending = [c for c in pending if not c.run(args.prometheus, args.timeout)]
        if not pending or time.monotonic() >= deadline:
            break
        print(f"{len(pending)} of {len(checks)} not passing yet; retrying "
              f"({max(0, deadline - time.monotonic()):.0f} s left)", file=sys.stderr)
        time.sleep(min(5.0, max(0.5, deadline - time.monotonic())))

    for origin in ("dashboard", "rule", "rule metric"):
        group = [c for c in checks if c.origin == origin]
        if group:
            print(f"# {origin} ({len(group)})")
            for c in group:
                print(c.line)
    failed = [c for c in checks if not c.passed]
    counts = {o: sum(1 for c in checks if c.origin == o) for o in ("dashboard", "rule", "rule metric")}
    print(f"{len(checks) - len(failed)} of {len(checks)} queries passed "
          f"({counts['dashboard']} dashboard, {counts['rule']} rule, {counts['rule metric']} metric); "
          f"{len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
