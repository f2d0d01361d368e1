#!/usr/bin/env python3
"""Differential testing of Sluice's query handler: the same generated SQL (tests/sqlgen.py) runs on
Sluice, on plain DataFusion (the same engine without Sluice's rewrites) and on DuckDB (a peer),
and the answers are compared.

    python3 tests/differential.py duckdb  --files FILES --suite queries.sql --out duckdb.json
    python3 tests/differential.py compare --suite queries.sql --sluice s.json --datafusion d.json \\
                                          --duckdb k.json [--report report.json]

`duckdb` runs every query of the suite on DuckDB like `analyst_suite.py run` (same connection,
same normalization), but never stops on a failing query: its entry is {"error": "<message>"}.

Result files (all three): {name: {"columns": [...], "rows": [[...], ...]} or {"error": "..."}},
values normalized as analyst_suite.normalize does.

`compare`, per query of the suite:
- Sluice vs DataFusion, always. They are the same engine, so they must agree; both failing
  counts as agreeing (on that pair).
- Sluice vs DuckDB, unless the query says `-- engines: datafusion` (only for a rule of
  DIALECT_RULES below, named by its `-- dialect:` header).
Rows are compared in order when the query says `-- ordered: true`, else as multisets. The column
count must match; column names are not compared (the engines name expressions differently).
Floats are compared with the query's `-- tolerance:` (relative; 1e-9 when absent).
Outcome: agree, differ (first difference shown) or error (one side failed where the other did
not, or every engine failed). Exit status 1 when any query differs or errs.
"""
import argparse
import json
import math
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import analyst_suite  # noqa: E402  (tests/analyst_suite.py: parsing, DuckDB connection, normalize)

# ---------------------------------------------------------------------------------------------
# THE dialect exclusions: every way in which DuckDB may legitimately answer differently from
# DataFusion/Sluice, in one place. A generated query names the rule it relies on with a
# `-- dialect: RULE` header; the comparer refuses unknown names. Kinds:
#   datafusion_only   the query carries `-- engines: datafusion`: DuckDB's answer is not compared.
#   datafusion_error  DataFusion refuses the query where DuckDB answers it: Sluice must fail as
#                     DataFusion does (both failing = agree); DuckDB's answer is not compared. If
#                     DataFusion answers after all, the rule is stale: the answers are compared
#                     with DuckDB's as usual and a note says so.
#   relaxation        applies to every query, in the comparison with DuckDB only (and never
#                     hides a Sluice-vs-DataFusion difference).
# Constructs that DuckDB and DataFusion treat differently but that the generator simply never
# writes (integer division, NULL ordering, EXCEPT ALL, ...) are listed, each with its reason, in
# tests/sqlgen.py's docstring ("Rules that keep DuckDB and DataFusion 55 answering alike").
DIALECT_RULES = {
    "approx_percentile": {
        "kind": "datafusion_only",
        "why": "approx_percentile_cont is DataFusion's t-digest estimate; DuckDB has no such function "
               "(analyst_suite defines a macro with the exact quantile_cont, and DuckDB has no "
               "WITHIN GROUP form of it at all). The estimate differs from the exact value by up to "
               "several percent. Sluice vs DataFusion is still compared (with the query's tolerance: "
               "DataFusion's own t-digest depends on how rows are split between partitions, so "
               "queries over large groups carry a wide tolerance, over small groups an exact one).",
    },
    "approx_distinct": {
        "kind": "datafusion_only",
        "why": "approx_distinct is DataFusion's HyperLogLog estimate; DuckDB's approx_count_distinct "
               "is a different estimator (and named differently).",
    },
    "duplicate_unqualified_names": {
        "kind": "datafusion_error",
        "why": "DataFusion refuses a projection with two expressions of the same unqualified name "
               "(`SELECT 1 AS x, 2 AS x`, `SELECT platform, platform ...`: 'Projections require "
               "unique expression names'); DuckDB answers. Sluice must refuse it too. (Qualified "
               "duplicates such as `SELECT a.platform, b.platform` run on both and are compared.)",
    },
    "like_escape_not_backslash": {
        "kind": "datafusion_error",
        "why": "DataFusion's LIKE supports no escape character but the backslash (`x LIKE "
               "'%!%%' ESCAPE '!'`: 'LIKE does not support escape_char other than the backslash'); "
               "DuckDB answers. Sluice's LIKE kernel hands such patterns to DataFusion, so it must "
               "refuse them as well.",
    },
    "numeric_types": {
        "kind": "relaxation",
        "why": "Numbers are compared as numbers, not by type: DuckDB's sum(BIGINT) is HUGEINT, its "
               "rank() BIGINT where DataFusion's is UInt64, its sum of DECIMAL(p,s) DECIMAL(38,s) "
               "where DataFusion's is DECIMAL(p+10,s); decimals are normalized to floats on both "
               "sides. Sluice vs DataFusion also requires the same kind of value (int, float, "
               "string, bool, null).",
    },
    "durations": {
        "kind": "relaxation",
        "why": "A difference of timestamps is an interval: Arrow's JSON writer gives DataFusion's as "
               "ISO 8601 text (`PT3592.475089S`), DuckDB's is a timedelta normalized to seconds; "
               "both are compared as seconds (analyst_suite.canon).",
    },
    "column_names": {
        "kind": "relaxation",
        "why": "Column names are not compared, only their count: the engines name unaliased "
               "expressions differently (`count(*)` vs `count_star()`).",
    },
}

# Settings of the DuckDB peer that work around DuckDB bugs (wrong answers, not dialect): the peer
# must be right for the comparison to mean anything.
DUCKDB_SETTINGS = {
    "SET disabled_optimizers = 'window_self_join'":
        "DuckDB 2.0.0's window_self_join optimizer (a window aggregate turned into a grouped "
        "aggregate joined back) drops a filter on a hive partition column from one side: "
        "`SELECT k, d, n, sum(n) OVER (PARTITION BY k) FROM (SELECT k, d, count(*) AS n FROM "
        "read_parquet('.../*/*.parquet', hive_partitioning = true) WHERE d < 3 GROUP BY k, d) s` "
        "sums n over every d. (Same optimizer as duckdb/duckdb#24780.)",
}

DEFAULT_REL_TOL = analyst_suite.DEFAULT_REL_TOL


def rules_of(q):
    """The DIALECT_RULES entries a query names; unknown names are a broken suite."""
    out = []
    for r in q["dialect"]:
        if r not in DIALECT_RULES:
            raise SystemExit(f"query {q['name']}: unknown dialect rule {r!r} "
                             f"(known: {', '.join(DIALECT_RULES)})")
        out.append(r)
    if "duckdb" not in q["engines"] and not any(
            DIALECT_RULES[r]["kind"] in ("datafusion_only", "datafusion_error") for r in out):
        print(f"note: {q['name']} excludes DuckDB without naming a dialect rule", file=sys.stderr)
    return out


# ---------------------------------------------------------------------------------------------
# DuckDB runner


def run_query(con, sql):
    """Like analyst_suite.run_query, but robust to duplicate output names: TIMESTAMPTZ columns
    are cast by position (#n), since a projection by name would pick the first of two columns
    named alike (SELECT a.first_at, b.first_at ... would answer a.first_at twice)."""
    rel = con.sql(sql)
    columns = list(rel.columns)
    types = [str(t) for t in rel.types]
    if any("WITH TIME ZONE" in t for t in types):
        exprs = []
        for i, t in enumerate(types):
            if "WITH TIME ZONE" in t:
                exprs.append(f"CAST(#{i + 1} AS {t.replace('TIMESTAMP WITH TIME ZONE', 'TIMESTAMP')}) AS c{i + 1}")
            else:
                exprs.append(f"#{i + 1} AS c{i + 1}")
        rel = rel.project(", ".join(exprs))
    return columns, rel.fetchall()


def cmd_duckdb(args):
    import duckdb

    queries = analyst_suite.parse_suite_headers(args.suite)
    files = analyst_suite.read_file_list(args.files)
    con = analyst_suite.duckdb_connect(files, args.threads)
    for setting in DUCKDB_SETTINGS:
        try:
            con.execute(setting)
        except Exception as e:  # an older or newer DuckDB without that optimizer
            print(f"note: {setting} failed: {e}", file=sys.stderr)
    total = con.execute("SELECT count(*) FROM notifications").fetchall()[0][0]
    print(f"duckdb {duckdb.__version__}: {len(files)} files, {total} rows, {len(queries)} queries",
          file=sys.stderr)
    out, failed, skipped = {}, 0, 0
    t_all = time.perf_counter()
    for q in queries:
        name = q["name"]
        if "duckdb" not in q["engines"]:
            # Still run: an error here is expected and recorded, and nothing compares it.
            skipped += 1
        fired = []

        def interrupt(fired=fired):
            fired.append(True)
            con.interrupt()

        timer = threading.Timer(args.timeout, interrupt) if args.timeout else None
        t0 = time.perf_counter()
        try:
            if timer:
                timer.start()
            columns, rows = run_query(con, q["sql"])
            out[name] = {"columns": columns,
                         "rows": [[analyst_suite.normalize(v) for v in r] for r in rows]}
            if args.verbose:
                print(f"ran {name}: {len(rows)} rows, {(time.perf_counter() - t0) * 1000:.1f} ms",
                      file=sys.stderr)
        except Exception as e:  # recorded, never fatal
            msg = " ".join(str(e).split())
            if fired:
                msg = f"timed out after {args.timeout:g} s: {msg}"
            out[name] = {"error": msg}
            failed += 1
            if args.verbose or "duckdb" in q["engines"]:
                print(f"ERROR {name}: {msg[:300]}", file=sys.stderr)
        finally:
            if timer:
                timer.cancel()
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"duckdb: {len(queries)} queries in {time.perf_counter() - t_all:.1f} s, {failed} failed "
          f"({skipped} not meant for DuckDB)", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------------------
# Comparison


def canon_row(row):
    return [analyst_suite.canon(v) for v in row]


def _num_key(x):
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return (1, 0.0, repr(x))
    # ~9 significant digits, so that values within the tolerance usually sort alike
    return (0, float(f"{float(x):.9g}"), "")


def sort_key(v):
    """Total order over canonical values of any kind (the kind first)."""
    if v is None:
        return (0,)
    if isinstance(v, bool):
        return (1, v)
    n = analyst_suite.as_number(v) if not isinstance(v, str) else None
    if n is not None:
        return (2, _num_key(n))
    if isinstance(v, str):
        return (3, v)
    if isinstance(v, list):
        return (4, tuple(sort_key(x) for x in v))
    if isinstance(v, dict):
        return (5, tuple((k, sort_key(v[k])) for k in sorted(v)))
    return (6, repr(v))


def exact_key(v):
    """sort_key with every float left out: rows that may match under a tolerance share it."""
    if isinstance(v, float):
        return (2, "float")
    if isinstance(v, list):
        return (4, tuple(exact_key(x) for x in v))
    if isinstance(v, dict):
        return (5, tuple((k, exact_key(v[k])) for k in sorted(v)))
    if isinstance(v, (int, bool)) or v is None or isinstance(v, str):
        return sort_key(v)
    return (6, repr(v))


def kind(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "float"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def rows_equal(a, b, tol):
    return len(a) == len(b) and all(analyst_suite.values_equal(x, y, tol) for x, y in zip(a, b))


def describe_row_diff(i, ra, rb, cols, la, lb, tol):
    for c, (x, y) in enumerate(zip(ra, rb)):
        if not analyst_suite.values_equal(x, y, tol):
            cname = cols[c] if c < len(cols) else c
            return (f"row {i} col {c} ({cname}): {la}={analyst_suite.short(x)} "
                    f"{lb}={analyst_suite.short(y)}")
    return f"row {i}: {la}={analyst_suite.short(ra)} {lb}={analyst_suite.short(rb)}"


def compare_results(a, b, la, lb, ordered, tol, strict_kinds):
    """None when equal, else a one-line description of the first difference."""
    acols, arows = analyst_suite.result_rows(a)
    bcols, brows = analyst_suite.result_rows(b)
    if len(acols) != len(bcols):
        return f"column count {la}={len(acols)} {acols} {lb}={len(bcols)} {bcols}"
    if len(arows) != len(brows):
        return f"row count {la}={len(arows)} {lb}={len(brows)}"
    for i, (ra, rb) in enumerate(zip(arows, brows)):
        if len(ra) != len(acols) or len(rb) != len(bcols):
            return f"row {i}: width {la}={len(ra)} {lb}={len(rb)}"
    if strict_kinds:
        # Same engine: a column's values must be of the same kind (a rewrite that turns an
        # integer column into a float one changed the schema, even if the numbers are equal).
        for c in range(len(acols)):
            ka = next((kind(r[c]) for r in arows if r[c] is not None), None)
            kb = next((kind(r[c]) for r in brows if r[c] is not None), None)
            if ka and kb and ka != kb:
                return f"col {c} ({acols[c]}): {la} gives {ka} values, {lb} gives {kb}"
    ca = [canon_row(r) for r in arows]
    cb = [canon_row(r) for r in brows]
    if ordered:
        for i, (ra, rb) in enumerate(zip(ca, cb)):
            if not rows_equal(ra, rb, tol):
                return describe_row_diff(i, ra, rb, acols, la, lb, tol)
        return None
    sa = sorted(ca, key=lambda r: tuple(sort_key(v) for v in r))
    sb = sorted(cb, key=lambda r: tuple(sort_key(v) for v in r))
    if all(rows_equal(x, y, tol) for x, y in zip(sa, sb)):
        return None
    # Rounding in the sort key can order two rows that are equal under the tolerance differently
    # on the two sides: match the rows again within groups of equal exact (non-float) values.
    groups = {}
    for r in sb:
        groups.setdefault(tuple(exact_key(v) for v in r), []).append(r)
    for i, r in enumerate(sa):
        cands = groups.get(tuple(exact_key(v) for v in r), [])
        for j, other in enumerate(cands):
            if rows_equal(r, other, tol):
                del cands[j]
                break
        else:
            nearest = cands[0] if cands else sb[min(i, len(sb) - 1)]
            return (f"multiset: {la} row {analyst_suite.short(r)} has no match in {lb} "
                    f"(sorted position {i}; nearest {lb} row {analyst_suite.short(nearest)})")
    return None


def is_error(res):
    return res is None or "error" in res


def err_text(res):
    if res is None:
        return "missing from results"
    return res["error"]


def compare_one(q, sluice, datafusion, duckdb):
    """Returns (outcome, [problem lines], notes, duckdb_excluded)."""
    name = q["name"]
    tol = max(DEFAULT_REL_TOL, q["tolerance"] or 0.0)
    rules = rules_of(q)
    kinds = {DIALECT_RULES[r]["kind"] for r in rules}
    s, d, k = sluice.get(name), datafusion.get(name), duckdb.get(name)
    problems, notes = [], []
    outcome = "agree"

    # 1. Sluice vs DataFusion: always, strictly.
    if is_error(s) and is_error(d):
        pass
    elif is_error(s) or is_error(d):
        outcome = "error"
        problems.append(f"sluice {'error: ' + err_text(s)[:300] if is_error(s) else 'ok'}; "
                        f"datafusion {'error: ' + err_text(d)[:300] if is_error(d) else 'ok'}")
    else:
        diff = compare_results(s, d, "sluice", "datafusion", q["ordered"], tol, strict_kinds=True)
        if diff:
            outcome = "differ"
            problems.append(f"[sluice vs datafusion] {diff}")

    # 2. Sluice vs DuckDB, unless a dialect rule excludes DuckDB.
    excluded = "duckdb" not in q["engines"] or "datafusion_only" in kinds
    expect_df_error = "datafusion_error" in kinds
    if expect_df_error:
        if is_error(d):
            excluded = True
        else:
            notes.append(f"rule {', '.join(rules)}: DataFusion answered; the rule may be stale")
    if not excluded:
        if is_error(s) and is_error(k):
            if is_error(d) and outcome == "agree":
                outcome = "error"
                problems.append(f"every engine failed: sluice: {err_text(s)[:200]}; "
                                f"duckdb: {err_text(k)[:200]}")
        elif is_error(s) or is_error(k):
            if outcome != "differ":
                outcome = "error"
            problems.append(f"sluice {'error: ' + err_text(s)[:300] if is_error(s) else 'ok'}; "
                            f"duckdb {'error: ' + err_text(k)[:300] if is_error(k) else 'ok'}")
        else:
            diff = compare_results(s, k, "sluice", "duckdb", q["ordered"], tol, strict_kinds=False)
            if diff:
                outcome = "differ"
                problems.append(f"[sluice vs duckdb] {diff}")
    elif is_error(s) and is_error(d) and not expect_df_error and outcome == "agree":
        # DuckDB is not compared and both DataFusion engines failed: nothing was tested.
        outcome = "error"
        problems.append(f"sluice and datafusion both failed: {err_text(s)[:300]}")
    return outcome, problems, notes, excluded


def load_results(path):
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise SystemExit(f"{path}: expected a JSON object keyed by query name")
    return data


def cmd_compare(args):
    queries = analyst_suite.parse_suite_headers(args.suite)
    sluice = load_results(args.sluice)
    datafusion = load_results(args.datafusion)
    duckdb = load_results(args.duckdb)
    counts = {"agree": 0, "differ": 0, "error": 0}
    excluded_n = 0
    per_shape = {}
    report = {}
    for q in queries:
        outcome, problems, notes, excluded = compare_one(q, sluice, datafusion, duckdb)
        counts[outcome] += 1
        excluded_n += excluded
        for tag in q["shape"] or ["untagged"]:
            st = per_shape.setdefault(tag, {"agree": 0, "differ": 0, "error": 0})
            st[outcome] += 1
        if outcome != "agree":
            print(f"{outcome.upper()} {q['name']}: " + " | ".join(problems))
        for n in notes:
            print(f"note: {q['name']}: {n}")
        report[q["name"]] = {"outcome": outcome, "problems": problems, "notes": notes,
                             "duckdb_compared": not excluded, "shape": q["shape"],
                             "dialect": q["dialect"]}
    names = {q["name"] for q in queries}
    for label, data in (("sluice", sluice), ("datafusion", datafusion), ("duckdb", duckdb)):
        extra = [n for n in data if n not in names]
        if extra:
            print(f"note: {len(extra)} results in the {label} file are not in the suite, e.g. {extra[0]}")
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump({"summary": dict(counts, queries=len(queries), duckdb_excluded=excluded_n),
                       "per_shape": dict(sorted(per_shape.items())),
                       "rules": DIALECT_RULES, "queries": report}, f, indent=1, ensure_ascii=False)
            f.write("\n")
    if args.shapes:
        width = max(len(t) for t in per_shape) if per_shape else 5
        for tag, st in sorted(per_shape.items()):
            print(f"  {tag:<{width}}  {sum(st.values()):>5}  agree {st['agree']:>5}  "
                  f"differ {st['differ']:>3}  error {st['error']:>3}")
    print(f"differential: {len(queries)} queries, {counts['agree']} agree, {counts['differ']} differ, "
          f"{counts['error']} errors ({excluded_n} with DuckDB excluded by dialect)")
    return 1 if counts["differ"] or counts["error"] else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)

    r = sub.add_parser("duckdb", help="run the suite on DuckDB, recording failures as errors")
    r.add_argument("--files", required=True, help="text file: one Parquet path per line")
    r.add_argument("--suite", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    r.add_argument("--timeout", type=float, default=120.0,
                   help="seconds after which one query is interrupted and recorded as an error (0: none)")
    r.add_argument("--verbose", action="store_true", help="one line per query")

    c = sub.add_parser("compare", help="compare Sluice with DataFusion and DuckDB")
    c.add_argument("--suite", required=True)
    c.add_argument("--sluice", required=True)
    c.add_argument("--datafusion", required=True)
    c.add_argument("--duckdb", required=True)
    c.add_argument("--report", help="write per-query outcomes and per-shape counts as JSON")
    c.add_argument("--shapes", action="store_true", help="print counts per shape tag")

    args = p.parse_args(argv)
    return {"duckdb": cmd_duckdb, "compare": cmd_compare}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
