#!/usr/bin/env python3
"""Checks a Grafana dashboard JSON and lists the metrics its panels query.

    check_dashboard.py DASHBOARD.json [--title T] [--datasources FILE]
        [--metrics SCRAPE.txt ...] [--list] [--out FILE] [--promql-rules-out FILE]

- The file must parse as JSON; every panel (rows' nested panels included) that
  is not a row needs at least one target with a non-empty `expr`, and every
  panel and target datasource uid must be the provisioned one (from
  --datasources, a Grafana datasource provisioning file). Panel ids are unique.
- The metric names used in panel expressions are extracted from the PromQL
  (functions, keywords, label matchers, grouping labels, ranges, strings and
  Grafana variables are not metric names). --list prints them, one a line, to
  stdout; --out writes them to FILE. Names Prometheus makes itself (`up`,
  `scrape_*`) are left out of that list.
- --metrics takes a saved /metrics scrape (Prometheus text or OpenMetrics);
  give it once per target (API, worker). Every metric name the panels use must
  appear in one of them, else the names missing are listed and the exit status
  is 1. A histogram's _bucket/_sum/_count series count as its samples, and
  names Prometheus makes itself for every target (`up`, `scrape_*`) need no
  scrape.
- --promql-rules-out writes every expression, Grafana variables replaced by
  fixed durations, as recording rules, so that `promtool check rules FILE`
  proves each one parses as PromQL.

Exit status: 0 ok, 1 a check failed, 2 bad usage or unreadable input.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

# Series Prometheus adds for every scrape target; they are never in /metrics.
SYNTHETIC = {
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
}

# PromQL words that look like identifiers but name no metric.
KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
    "group_right", "bool", "offset", "atan2", "inf", "nan",
}

# Grafana's built-in interval variables, replaced for promtool.
GRAFANA_VARS = {
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
    "__interval_ms": "60000",
}

IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def fail_usage(message: str) -> "NoReturn":  # type: ignore[name-defined]
    print(f"check_dashboard: {message}", file=sys.stderr)
    sys.exit(2)


def substitute_grafana_vars(expr: str) -> str:
    def repl(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        return GRAFANA_VARS.get(name, "1m")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (a lexer, not a full parser)."""
    s = substitute_grafana_vars(expr)
    # String literals ("...", '...', `...`): label values, regexes.
    s = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`', '""', s)
    # Explicit names: {__name__="x"} (kept before matchers are dropped).
    names = set(re.findall(r'__name__\s*=\s*"([^"]+)"', expr))
    # Label matchers {...}, range and subquery brackets [...].
    s = re.sub(r"\{[^{}]*\}", " ", s)
    s = re.sub(r"\[[^\[\]]*\]", " ", s)
    # Grouping and matching label lists: by (...), without (...), on (...),
    # ignoring (...), group_left (...), group_right (...).
    s = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", s
    )
    for m in IDENT.finditer(s):
        word = m.group(0)
        if word.lower() in KEYWORDS:
            continue
        # A function or aggregation: the identifier is followed by "(".
        if re.match(r"\s*\(", s[m.end():]):
            continue
        # Part of a number (1e3, 0x1f) or duration (5m): preceded by a digit.
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue
        names.add(word)
    return names


def iter_panels(panels: list) -> list[dict]:
    out = []
    for p in panels:
        out.append(p)
        out.extend(iter_panels(p.get("panels") or []))
    return out


def datasource_uids(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    return set(re.findall(r"^\s*uid:\s*['\"]?([A-Za-z0-9_.-]+)['\"]?\s*(?:#.*)?$", text, re.M))


def scraped_names(path: Path) -> set[str]:
    """Metric names in a Prometheus text / OpenMetrics exposition."""
    names: set[str] = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 3 and parts[1] in ("TYPE", "HELP"):
                names.add(parts[2])
                # OpenMetrics names a counter `x` whose samples are x_total.
                if parts[1] == "TYPE" and len(parts) >= 4 and parts[3] == "counter":
                    if not parts[2].endswith("_total"):
                        names.add(parts[2] + "_total")
            continue
        m = IDENT.match(line)
        if m:
            names.add(m.group(0))
    # A histogram or summary is present when any of its series is.
    for n in list(names):
        for suffix in ("_bucket", "_sum", "_count", "_created"):
            if n.endswith(suffix):
                names.add(n[: -len(suffix)])
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dashboard", type=Path)
    ap.add_argument("--title", help="the dashboard's exact title")
    ap.add_argument("--datasources", type=Path, help="Grafana datasource provisioning file")
    ap.add_argument("--metrics", type=Path, action="append", default=[],
                    help="a saved /metrics scrape; repeat for each target")
    ap.add_argument("--list", action="store_true", help="print the metric names to stdout")
    ap.add_argument("--out", type=Path, help="write the metric names to FILE")
    ap.add_argument("--promql-rules-out", type=Path,
                    help="write the expressions as recording rules for promtool")
    args = ap.parse_args()

    try:
        dash = json.loads(args.dashboard.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        print(f"check_dashboard: {args.dashboard}: {e}", file=sys.stderr)
        return 1

    problems: list[str] = []
    if args.title is not None and dash.get("title") != args.title:
        problems.append(f"title is {dash.get('title')!r}, expected {args.title!r}")

    allowed_uids = datasource_uids(args.datasources) if args.datasources else None
    if args.datasources and not allowed_uids:
        fail_usage(f"no datasource uid found in {args.datasources}")

    def check_ds(where: str, ds: object) -> None:
        if allowed_uids is None:
            return
        if ds is None:
            return  # a target without one inherits the panel's
        uid = ds.get("uid") if isinstance(ds, dict) else ds
        if uid not in allowed_uids:
            problems.append(f"{where}: datasource uid {uid!r} is not provisioned ({sorted(allowed_uids)})")

    exprs: list[tuple[str, str]] = []
    seen_ids: set[int] = set()
    panels = iter_panels(dash.get("panels") or [])
    if not panels:
        problems.append("the dashboard has no panels")
    for p in panels:
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if p.get("id") in seen_ids:
            problems.append(f"{where}: duplicate panel id")
        seen_ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        if allowed_uids is not None and p.get("datasource") is None:
            problems.append(f"{where}: no datasource")
        check_ds(where, p.get("datasource"))
        targets = p.get("targets") or []
        if not any((t.get("expr") or "").strip() for t in targets):
            problems.append(f"{where}: no query")
        for t in targets:
            check_ds(f"{where} target {t.get('refId')}", t.get("datasource"))
            expr = (t.get("expr") or "").strip()
            if expr:
                exprs.append((f"{where} {t.get('refId')}", expr))

    used: dict[str, list[str]] = {}
    for where, expr in exprs:
        names = metric_names(expr)
        if not names:
            problems.append(f"{where}: no metric name found in {expr!r}")
        for n in names:
            used.setdefault(n, []).append(where)
    # The list is what the API and worker must export: without `up` & co.
    listing = "".join(f"{n}\n" for n in sorted(used) if n not in SYNTHETIC)

    if args.list:
        sys.stdout.write(listing)
    if args.out:
        args.out.write_text(listing, encoding="utf-8")
    if args.promql_rules_out:
        lines = ["groups:", "  - name: dashboard-expressions", "    rules:"]
        for i, (_, expr) in enumerate(exprs):
            lines.append(f"      - record: dashboard:expr_{i}")
            lines.append(f"        expr: {json.dumps(substitute_grafana_vars(expr))}")
        args.promql_rules_out.write_text("\n".join(lines) + "\n", encoding="utf-8")

    if args.metrics:
        available: set[str] = set(SYNTHETIC)
        for path in args.metrics:
            try:
                available |= scraped_names(path)
            except OSError as e:
                fail_usage(f"{path}: {e}")
        missing = sorted(n for n in used if n not in available)
        for n in missing:
            problems.append(f"metric {n} is not exported (used by {', '.join(used[n])})")

    for p in problems:
        print(f"check_dashboard: {args.dashboard}: {p}", file=sys.stderr)
    if problems:
        return 1
    print(
        f"check_dashboard: {args.dashboard}: {len(panels)} panels, {len(exprs)} queries, "
        f"{len(used)} metric names" + (", all exported" if args.metrics else ""),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
