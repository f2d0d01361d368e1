#!/usr/bin/env python3
"""Analyst suite: run tests/analyst_suite.sql on DuckDB (the peer engine), compare Sluice's answers
with DuckDB's, and time DuckDB on the same queries.

    python3 tests/analyst_suite.py run     --files FILES --suite tests/analyst_suite.sql --out duckdb.json
    python3 tests/analyst_suite.py compare --expected duckdb.json --actual sluice.json --suite tests/analyst_suite.sql
    python3 tests/analyst_suite.py bench   --files FILES --suite tests/analyst_suite.sql --repeat 5 --out timings.json
    python3 tests/analyst_suite.py serve   --files FILES --suite tests/analyst_suite.sql   (one timed pass per `pass` line)

FILES is a text file with one Parquet path per line (blank lines and lines starting with # are
skipped; a file:// prefix is stripped). Each path must contain a `day=YYYY-MM-DD` directory: that is
where the DATE column `day` comes from, as in the Delta table.

Results JSON: {name: {"columns": [...], "rows": [[...], ...]}} with ints as ints, floats and
decimals as floats, dates as "YYYY-MM-DD", timestamps as "YYYY-MM-DDTHH:MM:SS.ffffffZ" (UTC), lists
as lists, maps and structs as objects, NULL as null.

Only the standard library and duckdb are needed (pin in tests/requirements.txt).
"""
import argparse
import datetime as dt
import decimal
import json
import math
import os
import re
import statistics
import sys
import time
import uuid

# ---------------------------------------------------------------------------------------------
# Suite file

HEADER = re.compile(r"^\s*--\s*query:\s*([A-Za-z0-9_]+)\s*$")
TOLERANCE = re.compile(r"^\s*--\s*tolerance:\s*([0-9.eE+-]+)\s*$")
# Optional header lines right after `-- query: name` (tests/sqlgen.py writes them; see
# tests/differential.py for their meaning). Any other line ends the headers and starts the SQL.
HEADER_LINE = re.compile(r"^\s*--\s*(tolerance|ordered|engines|shape|dialect):\s*(.*?)\s*$")
ENGINES = ("datafusion", "duckdb")
DEFAULT_REL_TOL = 1e-9


def _split_list(value):
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_suite_headers(path):
    """Return one dict per query in file order:
    {"name", "sql", "tolerance" (float or None), "ordered" (bool), "engines" (list, default both),
     "shape" (list of tags), "dialect" (list of rule names), "headers" (raw {key: value})}."""
    queries = []
    name, headers, body = None, {}, []
    in_headers = False

    def flush():
        if name is None:
            return
        sql = "\n".join(body).strip()
        while sql.endswith(";"):
            sql = sql[:-1].rstrip()
        if not sql:
            raise SystemExit(f"{path}: query {name} is empty")
        tol = None
        if "tolerance" in headers:
            try:
                tol = float(headers["tolerance"])
            except ValueError:
                raise SystemExit(f"{path}: query {name}: bad tolerance {headers['tolerance']!r}")
        ordered = headers.get("ordered", "false").lower()
        if ordered not in ("true", "false"):
            raise SystemExit(f"{path}: query {name}: `ordered` must be true or false")
        engines = _split_list(headers.get("engines", ",".join(ENGINES)))
        if not engines or any(e not in ENGINES for e in engines):
            raise SystemExit(f"{path}: query {name}: engines must be a list of {', '.join(ENGINES)}")
        queries.append({
            "name": name,
            "sql": sql,
            "tolerance": tol,
            "ordered": ordered == "true",
            "engines": engines,
            "shape": _split_list(headers.get("shape", "")),
            "dialect": _split_list(headers.get("dialect", "")),
            "headers": dict(headers),
        })

    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            m = HEADER.match(line)
            if m:
                flush()
                name, headers, body, in_headers = m.group(1), {}, [], True
                if any(q["name"] == name for q in queries):
                    raise SystemExit(f"{path}: duplicate query name {name}")
                continue
            if name is None:
                continue  # preamble
            if in_headers:
                h = HEADER_LINE.match(line)
                if h:
                    if h.group(1) in headers:
                        raise SystemExit(f"{path}: query {name}: header {h.group(1)} given twice")
                    headers[h.group(1)] = h.group(2)
                    continue
                in_headers = False
            body.append(line)
    flush()
    if not queries:
        raise SystemExit(f"{path}: no `-- query: name` headers found")
    return queries


def parse_suite(path):
    """Return [(name, sql, tolerance or None)] in file order (header lines other than the
    tolerance are accepted and left out of the SQL; parse_suite_headers returns them)."""
    return [(q["name"], q["sql"], q["tolerance"]) for q in parse_suite_headers(path)]


# ---------------------------------------------------------------------------------------------
# Value normalization (shared by run and compare)

TS_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?$"
)
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def fmt_ts(d, nanos_extra=0):
    """Canonical UTC timestamp text; 9 fraction digits only if sub-microsecond digits exist."""
    if d.tzinfo is not None:
        d = d.astimezone(dt.timezone.utc).replace(tzinfo=None)
    s = d.strftime("%Y-%m-%dT%H:%M:%S") + ".%06d" % d.microsecond
    if nanos_extra:
        s += "%03d" % nanos_extra
    return s + "Z"


def canon_ts_string(s):
    """Parse an ISO-looking timestamp string into the canonical form; None if it isn't one."""
    m = TS_RE.match(s.strip())
    if not m:
        return None
    y, mo, d, h, mi, sec, frac, tz = m.groups()
    frac = (frac or "").ljust(9, "0")
    micros, nanos = int(frac[:6]), int(frac[6:9])
    try:
        base = dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(sec or 0), micros)
    except ValueError:
        return None
    if tz and tz not in ("Z", "z", "UTC"):
        sign = 1 if tz[0] == "+" else -1
        digits = tz[1:].replace(":", "")
        off = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        base = base - sign * off
    return fmt_ts(base, nanos)


def normalize(v):
    """DuckDB Python value (or JSON value) -> JSON-able canonical value."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, int):
        return int(v)
    if isinstance(v, float):
        return v
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, dt.datetime):  # before date: datetime is a date subclass
        return fmt_ts(v)  # naive timestamps are taken as UTC (DuckDB session runs in UTC)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return v.isoformat()
    if isinstance(v, dt.timedelta):
        return v.total_seconds()
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, dict):
        # Old DuckDB versions return MAP as {"key": [...], "value": [...]}
        if set(v.keys()) == {"key", "value"} and isinstance(v["key"], list) and isinstance(v["value"], list):
            return {str(k): normalize(x) for k, x in zip(v["key"], v["value"])}
        return {str(k): normalize(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [normalize(x) for x in v]
    return str(v)


# ---------------------------------------------------------------------------------------------
# DuckDB side

# DuckDB-only compatibility shims, defined only if DuckDB lacks the function. The suite SQL stays
# identical; these map DataFusion names onto DuckDB's (exact) equivalents.
DUCKDB_MACROS = {
    "approx_percentile_cont": "CREATE MACRO approx_percentile_cont(x, p) AS quantile_cont(x, p)",
}


def read_file_list(path):
    files = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("file://"):
                line = line[len("file://"):]
            if not re.search(r"(^|/)day=\d{4}-\d{2}-\d{2}/", line):
                raise SystemExit(f"{path}: {line!r} has no day=YYYY-MM-DD directory")
            files.append(line)
    if not files:
        raise SystemExit(f"{path}: no Parquet files listed")
    missing = [p for p in files if not os.path.exists(p)]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} listed files do not exist, e.g. {missing[0]}")
    return files


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def duckdb_connect(files, threads=None):
    import duckdb

    con = duckdb.connect(":memory:")
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    existing = {r[0] for r in con.execute("SELECT DISTINCT function_name FROM duckdb_functions()").fetchall()}
    for name, ddl in DUCKDB_MACROS.items():
        if name not in existing:
            con.execute(ddl)
    file_list = "[" + ", ".join(sql_str(os.path.abspath(p)) for p in files) + "]"
    # Only `day` is taken from the path: hive_partitioning would also turn any other k=v
    # directory in the path into a column, which is harmless since the suite names its columns.
    con.execute(
        "CREATE VIEW notifications AS SELECT * FROM read_parquet("
        f"{file_list}, hive_partitioning = true, hive_types = {{'day': 'DATE'}}, union_by_name = true)"
    )
    return con


def run_query(con, sql):
    """Execute + fetchall. TIMESTAMPTZ values would need pytz to become Python objects, so such
    columns are cast to TIMESTAMP (the session time zone is UTC, so that is the UTC wall time)."""
    rel = con.sql(sql)
    columns = list(rel.columns)
    types = [str(t) for t in rel.types]
    if any("WITH TIME ZONE" in t for t in types):
        exprs = []
        for c, t in zip(columns, types):
            q = '"' + c.replace('"', '""') + '"'
            if "WITH TIME ZONE" in t:
                exprs.append(f"CAST({q} AS {t.replace('TIMESTAMP WITH TIME ZONE', 'TIMESTAMP')}) AS {q}")
            else:
                exprs.append(q)
        rel = rel.project(", ".join(exprs))
    return columns, rel.fetchall()


def cmd_run(args):
    import duckdb

    queries = parse_suite(args.suite)
    files = read_file_list(args.files)
    con = duckdb_connect(files, args.threads)
    total = con.execute("SELECT count(*) FROM notifications").fetchall()[0][0]
    print(f"duckdb {duckdb.__version__}: {len(files)} files, {total} rows", file=sys.stderr)
    out, failed = {}, 0
    for name, sql, _ in queries:
        try:
            columns, rows = run_query(con, sql)
        except Exception as e:  # report every failing query, then fail
            print(f"ERROR {name}: {e}", file=sys.stderr)
            failed += 1
            continue
        out[name] = {"columns": columns, "rows": [[normalize(v) for v in r] for r in rows]}
        print(f"ran {name}: {len(rows)} rows", file=sys.stderr)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    if failed:
        print(f"{failed} queries failed", file=sys.stderr)
        return 1
    return 0


def cmd_bench(args):
    import duckdb

    queries = parse_suite(args.suite)
    files = read_file_list(args.files)
    con = duckdb_connect(files, args.threads)
    total = con.execute("SELECT count(*) FROM notifications").fetchall()[0][0]
    threads = con.execute("SELECT current_setting('threads')").fetchall()[0][0]
    print(f"duckdb {duckdb.__version__}, threads={threads}: {len(files)} files, {total} rows, "
          f"1 warm-up + {args.repeat} timed runs per query")
    out = {}
    for name, sql, _ in queries:
        run_query(con, sql)  # warm-up
        runs = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            run_query(con, sql)
            runs.append((time.perf_counter() - t0) * 1000.0)
        out[name] = {
            "median_ms": round(statistics.median(runs), 3),
            "min_ms": round(min(runs), 3),
            "runs": [round(r, 3) for r in runs],
        }
    width = max(len(n) for n in out)
    print(f"{'query':<{width}}  {'median ms':>10}  {'min ms':>10}")
    for name, t in out.items():
        print(f"{name:<{width}}  {t['median_ms']:>10.1f}  {t['min_ms']:>10.1f}")
    print(f"{'total':<{width}}  {sum(t['median_ms'] for t in out.values()):>10.1f}  "
          f"{sum(t['min_ms'] for t in out.values()):>10.1f}")
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    return 0


def cmd_serve(args):
    """Times one pass over the suite each time a line `pass` arrives on stdin, and answers it
    with one JSON line {name: ms}, after a warm-up pass announced by the line `ready`. The query
    benchmark alternates these passes with Sluice's, so both engines see the same spells of a
    noisy machine."""
    queries = parse_suite(args.suite)
    con = duckdb_connect(read_file_list(args.files), args.threads)
    for _, sql, _ in queries:
        run_query(con, sql)  # warm-up
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "pass":
            raise SystemExit(f"serve: expected `pass`, got {line!r}")
        timings = {}
        for name, sql, _ in queries:
            t0 = time.perf_counter()
            run_query(con, sql)
            timings[name] = round((time.perf_counter() - t0) * 1000.0, 3)
        print(json.dumps(timings), flush=True)
    return 0


# ---------------------------------------------------------------------------------------------
# Compare

NUM_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


# An ISO 8601 duration as Arrow's JSON writer gives a DataFusion interval or duration
# (`PT3592.475089S`, `-P1DT3S`); DuckDB's INTERVAL is normalized to seconds (a timedelta's).
DURATION_RE = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def canon_duration_string(s):
    """Seconds of an ISO 8601 duration of days, hours, minutes and seconds; None if it isn't one."""
    m = DURATION_RE.match(s)
    if not m or s in ("P", "-P", "PT", "-PT"):
        return None
    sign, days, hours, minutes, seconds = m.groups()
    total = (int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes or 0) * 60
             + float(seconds or 0))
    return -total if sign else total


def canon(v):
    """Canonical form used for comparison; applied to both sides."""
    if isinstance(v, str):
        if DATE_RE.match(v):
            return v
        ts = canon_ts_string(v)
        if ts is not None:
            return ts
        seconds = canon_duration_string(v)
        if seconds is not None:
            return seconds
        return v
    if isinstance(v, list):
        return [canon(x) for x in v]
    if isinstance(v, dict):
        return {str(k): canon(x) for k, x in v.items()}
    return v


def as_number(v):
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    if isinstance(v, str):
        if v in ("NaN", "nan"):
            return math.nan
        if v in ("Infinity", "inf", "+Infinity"):
            return math.inf
        if v in ("-Infinity", "-inf"):
            return -math.inf
        if NUM_RE.match(v.strip()):
            return float(v) if any(c in v for c in ".eE") else int(v)
    return None


def values_equal(a, b, rel_tol):
    """a, b already canonical. Returns True when equal under the tolerance."""
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    na, nb = as_number(a), as_number(b)
    if na is not None and nb is not None and (
        not isinstance(a, str) or not isinstance(b, str)  # two strings compare as strings
    ):
        if isinstance(na, int) and isinstance(nb, int) and rel_tol <= DEFAULT_REL_TOL:
            return na == nb
        fa, fb = float(na), float(nb)
        if math.isnan(fa) or math.isnan(fb):
            return math.isnan(fa) and math.isnan(fb)
        return math.isclose(fa, fb, rel_tol=rel_tol, abs_tol=1e-12)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y, rel_tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k], rel_tol) for k in a)
    return a == b


def result_rows(res):
    cols = res.get("columns") or []
    rows = res.get("rows") or []
    # Accept Arrow-JSON style rows (objects keyed by column name) too.
    return cols, [[r.get(c) for c in cols] if isinstance(r, dict) else r for r in rows]


def short(v):
    s = json.dumps(v, ensure_ascii=False, default=str)
    return s if len(s) <= 120 else s[:117] + "..."


def compare_query(name, exp, act, rel_tol):
    """Return None when equal, else a one-line description of the first difference."""
    ecols, erows = result_rows(exp)
    acols, arows = result_rows(act)
    if len(ecols) != len(acols):
        return f"column count duckdb={len(ecols)} {ecols} sluice={len(acols)} {acols}"
    if len(erows) != len(arows):
        return f"row count duckdb={len(erows)} sluice={len(arows)}"
    for i, (er, ar) in enumerate(zip(erows, arows)):
        if len(er) != len(ecols) or len(ar) != len(acols):
            return f"row {i}: width duckdb={len(er)} sluice={len(ar)}"
        for c, (ev, av) in enumerate(zip(er, ar)):
            ce, ca = canon(ev), canon(av)
            if not values_equal(ce, ca, rel_tol):
                return f"row {i} col {c} ({ecols[c]}): duckdb={short(ev)} sluice={short(av)}"
    return None


def cmd_compare(args):
    queries = parse_suite(args.suite)
    with open(args.expected, encoding="utf-8") as f:
        expected = json.load(f)
    with open(args.actual, encoding="utf-8") as f:
        actual = json.load(f)
    mismatches = 0
    for name, _, tol in queries:
        rel_tol = max(DEFAULT_REL_TOL, tol or 0.0)
        if name not in expected:
            print(f"MISMATCH {name}: missing from expected (duckdb) results {args.expected}")
            mismatches += 1
            continue
        if name not in actual:
            print(f"MISMATCH {name}: missing from actual (sluice) results {args.actual}")
            mismatches += 1
            continue
        problem = compare_query(name, expected[name], actual[name], rel_tol)
        if problem:
            print(f"MISMATCH {name}: {problem}")
            mismatches += 1
            continue
        ecols, erows = result_rows(expected[name])
        acols, _ = result_rows(actual[name])
        note = ""
        if [c.lower() for c in ecols] != [c.lower() for c in acols]:
            note = f" (column names differ: duckdb={ecols} sluice={acols})"
        if tol:
            note += f" (tolerance {tol:g})"
        print(f"ok {name} {len(erows)} rows{note}")
    names = {q[0] for q in queries}
    for extra in sorted(set(actual) - names):
        print(f"note: {extra} in actual results is not in the suite (ignored)")
    print(f"suite: {len(queries)} queries, {mismatches} mismatches")
    return 1 if mismatches else 0


# ---------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("run", help="run the suite on DuckDB and write normalized results")
    r.add_argument("--files", required=True, help="text file: one Parquet path per line")
    r.add_argument("--suite", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")

    c = sub.add_parser("compare", help="compare Sluice results with DuckDB results")
    c.add_argument("--expected", required=True, help="DuckDB results JSON (from `run`)")
    c.add_argument("--actual", required=True, help="Sluice results JSON")
    c.add_argument("--suite", required=True)

    b = sub.add_parser("bench", help="time every suite query on DuckDB")
    b.add_argument("--files", required=True)
    b.add_argument("--suite", required=True)
    b.add_argument("--repeat", type=int, default=5)
    b.add_argument("--out", required=True)
    b.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")

    v = sub.add_parser("serve", help="time one pass over the suite per `pass` line on stdin")
    v.add_argument("--files", required=True)
    v.add_argument("--suite", required=True)
    v.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")

    args = p.parse_args(argv)
    if getattr(args, "repeat", 1) < 1:
        p.error("--repeat must be >= 1")
    commands = {"run": cmd_run, "compare": cmd_compare, "bench": cmd_bench, "serve": cmd_serve}
    return commands[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
