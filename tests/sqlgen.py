#!/usr/bin/env python3
"""Seeded generator of random analytic SQL over `notifications`, for differential testing of
Sluice's query handler against plain DataFusion and DuckDB (tests/differential.py).

    python3 tests/sqlgen.py --seed 7 --count 300 --out queries.sql [--stats]

The same seed gives the same file (only random.Random(seed) is used; no set or hash order).

Output: the analyst-suite format (tests/analyst_suite.sql, analyst_suite.parse_suite_headers).
Per query:
    -- query: q00001_<shape>
    -- tolerance: 1e-6                 (relative float tolerance; absent: exact)
    -- ordered: true                   (the ORDER BY fully determines the row order; absent:
                                        rows are compared as multisets)
    -- engines: datafusion             (DuckDB not compared; always with a dialect rule)
    -- dialect: approx_percentile      (rules of differential.DIALECT_RULES the query relies on)
    -- shape: join,having,...          (what the query exercises; the first is its main shape)
    SELECT ...
    <blank line>

What is generated: the shapes Sluice's rewrites target (counts from the Delta log, counts of
columns without nulls, regrouping of pivots over low-cardinality columns, grouping by numbered
strings, map look-ups, LIKE per distinct value, date_trunc of UTC timestamps, one t-digest for
several approximate percentiles, unnest of one list) and their edges, plus a broad mix of
analytic SQL around them: see SHAPES at the bottom.

Rules that keep DuckDB and DataFusion 55 answering alike (each was seen to differ):
- No integer `/` (DataFusion: integer division, DuckDB: float); no decimal literals outside
  CAST(... AS DOUBLE|DECIMAL) (DataFusion: Float64, DuckDB: DECIMAL).
- NULL ordering is always spelled out (DataFusion sorts NULLs first for DESC, DuckDB last),
  also in window ORDER BYs.
- CAST(double AS BIGINT) only of floor()/round() results (DuckDB rounds, DataFusion truncates).
- upper() only of ASCII columns (upper('ß') is 'SS' in DataFusion, 'ẞ' in DuckDB).
- No backslash in a LIKE pattern without ESCAPE '\\' (DataFusion's LIKE treats `\\` as an escape
  by default, DuckDB does not).
- LIMIT/OFFSET only under an ORDER BY that is total (all group keys, or all output columns).
- EXCEPT ALL / INTERSECT ALL only with a left input without duplicates (an aggregate):
  DataFusion removes every copy of a row found on the right (apache/datafusion#12956, #12955).
- Exact percentiles (median, quantile_cont, percentile_cont) of DOUBLE (DataFusion returns the
  input type) and p in 0.25/0.5/0.75 (DataFusion truncates the interpolation weight to 6
  decimals, exact only for short binary fractions).
- No two aggregates of a query that differ only by a CAST (`sum(x)` and `sum(CAST(x AS
  DOUBLE))`): DataFusion names both `sum(x)` and refuses the query (apache/datafusion#18975).
- No sum(NULL) (DataFusion: "SUM not supported for Null"), no metrics[<column>] (DataFusion's
  get_field needs a literal key), no extract(epoch FROM <interval>) (DataFusion truncates it to
  whole seconds), no CAST(timestamp AS VARCHAR) (the engines format differently), no octet_length
  (DuckDB has none for VARCHAR), no array_agg without ORDER BY, no random()/now().
- Durations (received_at - occurred_at) only under min/max (sum of intervals differs in type).
- extract(epoch FROM ts) differences only in approx_percentile_cont (DataFusion only): the
  engines compute epochs differently in the last bits; LAG_US computes the lag exactly.
- At most one ORDER BY among the ordered aggregates of a query (string_agg ... ORDER BY x and
  ... ORDER BY y DESC: DataFusion "Conflicting ordering requirements in aggregate functions").
- No LIMIT directly over window functions: DataFusion 55 computes `count(*) OVER ()` over the
  limited rows only, in two plans (both wrong answers):
    SELECT k, count(*) OVER () AS w FROM (SELECT DISTINCT x AS k FROM (VALUES (1), (2), (3),
    (4)) AS t(x)) s ORDER BY k LIMIT 2                       -- w = 2, not 4 (TopK aggregation
                                                             -- below a window, PR #25066)
    SELECT k, x, count(*) OVER () AS w, max(x) OVER (PARTITION BY k ORDER BY x ROWS BETWEEN 1
    PRECEDING AND 1 FOLLOWING) AS m FROM (SELECT * FROM (VALUES ('a', 1), ('a', 2), ('b', 3))
    AS t1(k, x) UNION ALL SELECT * FROM (VALUES ('b', 4), ('c', 5), ('c', 6)) AS t2(k, x)) AS t
    ORDER BY k, x LIMIT 2                                    -- w = 2, not 6 (the sort's fetch
                                                             -- is pushed below the window)
- IS [NOT] DISTINCT FROM is parenthesized (DataFusion's parser gives it the lowest precedence,
  apache/datafusion#23692).
- Results stay small: aggregates, or ORDER BY + LIMIT; raw-row self-joins always filter both
  sides by day and by a low-cardinality column.
The DuckDB side also needs one DuckDB bug worked around (differential.DUCKDB_SETTINGS).
"""
import argparse
import random
import re
import sys

# ---------------------------------------------------------------------------------------------
# The data's vocabulary (tests/it data and the validation sample alike). Literals are a mix of
# values that occur and values that don't, so that filters match much, little or nothing.

DAYS = [f"2026-11-{d}" for d in range(10, 22)]
NULL_DAY = "2026-11-12"  # text, lang, post_id, ... NULL on every row; tags and metrics empty
WIDE_DAY = "2026-11-15"  # thousands of distinct platforms and types
NO_DAYS = ["2030-01-01", "2026-11-09", "2026-11-22", "2025-12-31"]  # no file has these

PLATFORMS = ["mastodon", "bsky", "threads", "lemmy"]
PLATFORM_LITS = PLATFORMS + ["p0042", "p1234", "nosuch", "Mastodon"]
TYPES = ["post.created", "post.edited", "post.updated", "post.liked", "post.shared",
         "post.commented", "post.deleted", "post.restored"]
TYPE_LITS = TYPES + ["kind.7", "post.nosuch"]
LANGS = ["en", "de", "fr", "es", "ja"]
LANG_LITS = LANGS + ["xx"]
PRODUCER_LITS = ["node-a-1", "node-b-1", "node-z-9"]
POST_LITS = ["post0", "post1", "post7", "post42", "post123", "post99999999"]
USER_LITS = ["u0", "u1", "u12", "u123", "u99999999"]
TAG_LITS = ["tag0", "tag1", "tag7", "tag42", "rust", "café", "日本", "", "nosuch"]
METRIC_KEYS = ["likes", "shares", "replies"]
# received_at - occurred_at in microseconds, exactly, in both engines: whole minutes by epoch
# (exact in a double) plus date_part('microsecond') (seconds and microseconds within the minute).
# extract(epoch FROM received_at) - extract(epoch FROM occurred_at) differs in the last bits
# between the engines, which a relative tolerance cannot absorb for lags of a few microseconds.
LAG_US = ("(CAST(extract(epoch FROM date_trunc('minute', {p}received_at)) - "
          "extract(epoch FROM date_trunc('minute', {p}occurred_at)) AS BIGINT) * 1000000 + "
          "date_part('microsecond', {p}received_at) - date_part('microsecond', {p}occurred_at))")
SPLIT_SEPARATORS = [" ", ".", '"']
DATE_PARTS = ["hour", "minute", "second", "dow", "doy", "week", "month", "day", "year", "quarter", "isodow"]

LOW_CARD = ["platform", "type", "lang", "producer_id"]  # what regroup/codes treat as low-card
NULLABLE = {"post_id", "author_id", "actor_id", "text", "lang", "attributes"}
STRING_COLS = ["platform", "id", "type", "post_id", "author_id", "actor_id", "text", "lang",
               "attributes", "producer_id"]
ALL_COLS = STRING_COLS + ["occurred_at", "received_at", "tags", "metrics", "batch_sequence",
                          "batch_row", "day"]

LIKE_PATTERNS = {
    "platform": ["mast%", "%sky", "p00%", "_sky", "%o%", "threads", "", "%", "p1%9"],
    "type": ["post.%", "post._iked", "%.created", "kind.1%", "%ed", "post.%ed", "%.%"],
    "text": ["%é%", "%ß%", "%日本%", "", "%", "hello%", "%quote%", "% and %", "%'%", '%"%',
             "%_%", "___", "words 1%", "%more", "%🎉%", "%ünï%", "%  %"],
    "attributes": ['%"client":"web"%', '%"v":3%', "{%}", "%ios%", '%"client":"android"%', "%"],
    "lang": ["e_", "%a", "j%", "%"],
    "post_id": ["post1%", "post_", "post12_", "%9"],
    "author_id": ["u1%", "u__", "%0"],
    "actor_id": ["u1%", "u___"],
    "producer_id": ["node-a-%", "%-1", "node-_-1"],
    "id": ["%1%", "%-%"],
}
# Patterns with a literal % or _ need an escape; DataFusion only supports backslash.
ESCAPED_PATTERNS = {"text": ["%\\%%", "%\\_%", "50\\%%", "%\\_off\\_%"],
                    "platform": ["p\\_%"], "type": ["post\\.%", "post\\_liked"]}
ILIKE_PATTERNS = {"platform": ["MAST%", "%SKY", "Threads"], "type": ["POST.LIKED", "%Created"],
                  "text": ["HELLO%", "%QUOTE%", "%CAFÉ%", "%ÜNÏ%", "%STRASSE%"],
                  "attributes": ['%"CLIENT":"WEB"%', "%IOS%"], "lang": ["EN", "J%"]}


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


class Query:
    """One generated query: SQL text plus what its headers say."""

    def __init__(self, shape):
        self.tags = [shape]
        self.tolerance = None
        self.ordered = False
        self.rules = []
        self.sql = ""
        self.agg_order = None  # the ORDER BY of the query's ordered aggregate, if any
        self.agg_calls = {}  # aggregate calls by their name without casts (see agg_ok)

    def agg_ok(self, call):
        """False when the query already has an aggregate that differs from `call` only by
        CASTs: DataFusion names `sum(CAST(x AS DOUBLE))` and `sum(x)` alike and refuses the
        query ("Schema contains duplicate unqualified field name", apache/datafusion#18975)."""
        key = re.sub(r"[()\s]", "", re.sub(r" AS (DOUBLE|BIGINT|DECIMAL\(\d+,\d+\))\)", ")",
                                            call.replace("CAST(", "(")))
        if self.agg_calls.get(key, call) != call:
            return False
        self.agg_calls[key] = call
        return True

    def tag(self, *tags):
        for t in tags:
            if t not in self.tags:
                self.tags.append(t)

    def floats(self, tol=1e-6):
        """The result holds floats whose last bits depend on evaluation order."""
        self.tolerance = max(self.tolerance or 0.0, tol)

    def datafusion_only(self, rule):
        if rule not in self.rules:
            self.rules.append(rule)

    def render(self, name):
        lines = [f"-- query: {name}"]
        if self.tolerance:
            lines.append(f"-- tolerance: {self.tolerance:g}")
        if self.ordered:
            lines.append("-- ordered: true")
        if self.rules:
            lines.append("-- engines: datafusion")
            lines.append("-- dialect: " + ",".join(self.rules))
        lines.append("-- shape: " + ",".join(self.tags))
        return "\n".join(lines) + "\n" + self.sql.strip() + "\n"


class Col:
    """An output column: its alias, whether it is a group key, a float, nullable."""

    def __init__(self, alias, key=False, is_float=False, nullable=True):
        self.alias, self.key, self.is_float, self.nullable = alias, key, is_float, nullable


class Key:
    """A grouping expression: SQL (with `{p}` for a table prefix), alias, estimated distinct
    values, tags, and whether it can be NULL."""

    def __init__(self, sql, alias, card, tags=(), nullable=False, plain=False, lowcard=False):
        self.sql, self.alias, self.card, self.tags = sql, alias, card, list(tags)
        self.nullable, self.plain, self.lowcard = nullable, plain, lowcard

    def at(self, p=""):
        return self.sql.replace("{p}", p)


# Grouping keys. platform and type are low-cardinality except on WIDE_DAY (thousands), hence
# their estimates; a query whose product of estimates is large gets ORDER BY + LIMIT.
KEYS = [
    Key("{p}platform", "platform", 3000, plain=True, lowcard=True),
    Key("{p}type", "type", 2000, plain=True, lowcard=True),
    Key("{p}lang", "lang", 6, nullable=True, plain=True, lowcard=True),
    Key("{p}producer_id", "producer_id", 4, plain=True, lowcard=True),
    Key("{p}day", "day", 12, ["day_group"], plain=True),
    Key("coalesce({p}lang, 'und')", "lang_or_und", 6, ["computed_group", "coalesce"], lowcard=True),
    Key("lower({p}type)", "type_lower", 2000, ["computed_group", "string_fn"], lowcard=True),
    Key("upper({p}platform)", "platform_upper", 3000, ["computed_group", "string_fn"], lowcard=True),
    Key("CASE WHEN {p}type IN ('post.liked', 'post.shared', 'post.commented') THEN 'engagement' "
        "WHEN {p}type LIKE 'post.%' THEN 'content' ELSE 'other' END", "type_class", 3,
        ["computed_group", "case"], lowcard=True),
    Key("substr({p}type, 1, 6)", "type_prefix", 40, ["computed_group", "string_fn"], lowcard=True),
    Key("date_trunc('day', {p}occurred_at)", "day_start", 12, ["date_trunc"]),
    Key("date_trunc('hour', {p}occurred_at)", "hour_start", 300, ["date_trunc"]),
    Key("date_trunc('month', {p}received_at)", "month_start", 2, ["date_trunc"]),
    Key("CAST(date_part('hour', {p}occurred_at) AS BIGINT)", "hour_of_day", 24, ["date_part"]),
    Key("CAST(extract(dow FROM {p}occurred_at) AS BIGINT)", "weekday", 7, ["date_part"]),
    Key("{p}metrics['likes'] IS NULL", "no_likes", 2, ["map"]),
    Key("{p}attributes LIKE '%\"client\":\"web\"%'", "web_client", 3, ["like"], nullable=True),
    Key("{p}batch_row % 5", "row_mod", 5, ["arith"]),
    Key("cardinality({p}tags)", "tag_count", 6, ["list_fn"]),
    Key("starts_with({p}platform, 'm')", "starts_m", 2, ["starts_with"]),
    Key("length({p}text)", "text_len", 60, ["string_fn"], nullable=True),
    Key("{p}post_id", "post_id", 5000, nullable=True, plain=True),
    Key("{p}author_id", "author_id", 3000, nullable=True, plain=True),
    Key("{p}metrics['shares']", "shares", 300, ["map"], nullable=True),
]
KEY_BY_ALIAS = {k.alias: k for k in KEYS}
LOWCARD_KEYS = [k for k in KEYS if k.plain and k.lowcard]


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)

    # -- small random helpers ------------------------------------------------------------------

    def pick(self, seq):
        return seq[self.r.randrange(len(seq))]

    def chance(self, p):
        return self.r.random() < p

    def sample(self, seq, n):
        seq = list(seq)
        return self.r.sample(seq, min(n, len(seq)))

    def one_of(self, *makers):
        """Calls one of the makers (so that only the chosen one tags the query)."""
        return self.pick(makers)()

    def day(self):
        return self.pick(DAYS)

    def day_lit(self, d=None):
        return f"DATE '{d or self.day()}'"

    def ts_lit(self, day=None, hour=None):
        day = day or self.day()
        hour = self.r.randrange(24) if hour is None else hour
        frac = self.pick(["", "", ".5", ".999999"])
        return f"TIMESTAMP '{day} {hour:02d}:{self.r.randrange(60):02d}:{self.r.randrange(60):02d}{frac}'"

    def nulls(self):
        return self.pick(["NULLS FIRST", "NULLS LAST"])

    # -- predicates ----------------------------------------------------------------------------

    def day_pred(self, q, p=""):
        """Filters on the partition column, including days no file has."""
        q.tag("day_filter")
        d1, d2 = sorted(self.sample(DAYS, 2))
        k = self.r.randrange(12)
        if k == 0:
            q.tag("pruned_day")
            return f"{p}day = {self.day_lit(self.pick(NO_DAYS))}"
        if k == 1:
            return f"{p}day BETWEEN {self.day_lit(d1)} AND {self.day_lit(d2)}"
        if k == 2:
            days = self.sample(DAYS + NO_DAYS[:1], self.r.randint(2, 3))
            return f"{p}day IN ({', '.join(self.day_lit(d) for d in days)})"
        if k == 3:
            return f"{p}day >= {self.day_lit(d2)}"
        if k == 4:
            return f"{p}day < {self.day_lit(d1)}"
        if k == 5:
            return f"{p}day > '{d1}'"  # a string literal, coerced to DATE by both engines
        if k == 6:
            return f"{p}day <> {self.day_lit(self.pick([NULL_DAY, WIDE_DAY]))}"
        if k == 7:
            return f"NOT ({p}day BETWEEN {self.day_lit(d1)} AND {self.day_lit(d2)})"
        if k == 8:
            q.tag("date_part")
            return f"date_part('dow', {p}day) IN (0, 6)"
        if k == 9:
            q.tag("cast")
            return f"CAST({p}day AS VARCHAR) LIKE '2026-11-1%'"
        if k == 10:
            return f"{p}day = {self.day_lit(self.pick([NULL_DAY, WIDE_DAY]))}"
        return f"{p}day = {self.day_lit()}"

    def lowcard_pred(self, q, p=""):
        col = self.pick(LOW_CARD)
        lits = {"platform": PLATFORM_LITS, "type": TYPE_LITS, "lang": LANG_LITS,
                "producer_id": PRODUCER_LITS}[col]
        k = self.r.randrange(6)
        if k == 0:
            return f"{p}{col} = {sql_str(self.pick(lits))}"
        if k == 1:
            return f"{p}{col} <> {sql_str(self.pick(lits))}"
        if k in (2, 3):
            q.tag("in_list")
            vals = self.sample(lits, self.r.randint(2, 4))
            neg = "NOT " if k == 3 else ""
            return f"{p}{col} {neg}IN ({', '.join(sql_str(v) for v in vals)})"
        if k == 4:
            return f"{p}{col} > {sql_str(self.pick(lits))}"
        # Parenthesized: DataFusion 55's parser reads `a IS NOT DISTINCT FROM 'x' OR b` as
        # `a IS NOT DISTINCT FROM ('x' OR b)` (apache/datafusion#23692).
        return f"({p}{col} IS NOT DISTINCT FROM {sql_str(self.pick(lits))})"

    def like_pred(self, q, p="", col=None):
        """LIKE / NOT LIKE / ILIKE / starts_with on string columns."""
        col = col or self.pick(list(LIKE_PATTERNS))
        k = self.r.randrange(10)
        if k <= 3:
            q.tag("like")
            return f"{p}{col} LIKE {sql_str(self.pick(LIKE_PATTERNS[col]))}"
        if k == 4:
            q.tag("not_like")
            return f"{p}{col} NOT LIKE {sql_str(self.pick(LIKE_PATTERNS[col]))}"
        if k in (5, 9) and col in ILIKE_PATTERNS:
            q.tag("ilike")
            neg = "NOT " if self.chance(0.3) else ""
            return f"{p}{col} {neg}ILIKE {sql_str(self.pick(ILIKE_PATTERNS[col]))}"
        if k == 6 and col in ESCAPED_PATTERNS:
            q.tag("like_escape")
            if self.chance(0.15):
                # DataFusion refuses any escape character but the backslash (DuckDB answers):
                # Sluice's LIKE kernel hands such patterns to DataFusion, which must refuse too.
                q.datafusion_only("like_escape_not_backslash")
                return f"{p}{col} LIKE {sql_str(self.pick(ESCAPED_PATTERNS[col]).replace(chr(92), '!'))} ESCAPE '!'"
            return f"{p}{col} LIKE {sql_str(self.pick(ESCAPED_PATTERNS[col]))} ESCAPE '\\'"
        if k == 7:
            q.tag("starts_with")
            pats = [x.split("%")[0].split("_")[0] for x in LIKE_PATTERNS[col]]
            return f"starts_with({p}{col}, {sql_str(self.pick(pats))})"
        if k == 8 and col == "text":
            # A pattern that is not a constant (DataFusion's own kernel in Sluice).
            q.tag("like", "like_column_pattern")
            return f"{p}text LIKE {p}lang || '%'"
        q.tag("like")
        return f"{p}{col} LIKE {sql_str(self.pick(LIKE_PATTERNS[col]))}"

    def null_pred(self, q, p=""):
        q.tag("null_check")
        col = self.pick(sorted(NULLABLE) + ["platform", "type"])
        neg = self.pick(["IS NOT NULL", "IS NOT NULL", "IS NULL"])
        return f"{p}{col} {neg}"

    def num_pred(self, q, p=""):
        k = self.r.randrange(7)
        if k <= 2:
            q.tag("map")
            key = self.pick(METRIC_KEYS + ["nosuch"])
            op = self.pick([">", ">=", "<", "=", "<>"])
            return f"{p}metrics[{sql_str(key)}] {op} {self.pick([0, 1, 10, 100, 1000, 4999])}"
        if k == 3:
            q.tag("map")
            return f"{p}metrics['shares'] BETWEEN {self.r.randrange(100)} AND {self.r.randrange(100, 300)}"
        if k == 4:
            q.tag("map", "null_check")
            return f"{p}metrics[{sql_str(self.pick(METRIC_KEYS))}] IS {self.pick(['', 'NOT '])}NULL"
        if k == 5:
            q.tag("arith")
            return f"{p}batch_row % {self.pick([2, 3, 7])} = {self.r.randrange(2)}"
        return f"{p}batch_row < {self.pick([10, 100, 1000])}"

    def ts_pred(self, q, p=""):
        q.tag("ts_between")
        d1, d2 = sorted(self.sample(DAYS, 2))
        col = self.pick(["occurred_at", "occurred_at", "received_at"])
        k = self.r.randrange(3)
        if k == 0:
            return f"{p}{col} BETWEEN {self.ts_lit(d1)} AND {self.ts_lit(d2)}"
        if k == 1:
            return f"{p}{col} >= {self.ts_lit(d1)} AND {p}{col} < {self.ts_lit(d2)}"
        q.tag("date_trunc")
        return f"date_trunc('hour', {p}{col}) = TIMESTAMP '{d1} {self.r.randrange(24):02d}:00:00'"

    def list_pred(self, q, p=""):
        q.tag("list_fn")
        if self.chance(0.5):
            return f"array_has({p}tags, {sql_str(self.pick(TAG_LITS))})"
        return f"cardinality({p}tags) {self.pick(['=', '>', '>='])} {self.r.randrange(3)}"

    def pred(self, q, p="", depth=0):
        k = self.r.randrange(14 if depth < 2 else 11)
        if k <= 2:
            return self.day_pred(q, p)
        if k <= 4:
            return self.lowcard_pred(q, p)
        if k <= 6:
            return self.like_pred(q, p)
        if k == 7:
            return self.null_pred(q, p)
        if k == 8:
            return self.num_pred(q, p)
        if k == 9:
            return self.ts_pred(q, p)
        if k == 10:
            return self.list_pred(q, p)
        q.tag("bool_combo")
        if k == 11:
            return f"({self.pred(q, p, depth + 1)} AND {self.pred(q, p, depth + 1)})"
        if k == 12:
            return f"({self.pred(q, p, depth + 1)} OR {self.pred(q, p, depth + 1)})"
        return f"NOT ({self.pred(q, p, depth + 1)})"

    def where(self, q, p="", n=None):
        n = self.r.choice([1, 1, 1, 2, 2, 3]) if n is None else n
        return " AND ".join(self.pred(q, p) for _ in range(n))

    def where_avoiding(self, q, cols):
        """A one-predicate WHERE that names none of `cols` (or None). The predicate is made
        on a scratch query and its tags are kept only if it is used."""
        for _ in range(20):
            scratch = Query(q.tags[0])
            cond = self.pred(scratch)
            if not any(re.search(rf"\b{c}\b", cond) for c in cols):
                q.tag(*scratch.tags[1:])
                return cond
        return None

    # -- value expressions ---------------------------------------------------------------------

    def int_expr(self, q, p=""):
        k = self.r.randrange(12)
        if k <= 1:
            return f"{p}batch_row"
        if k == 2:
            return f"{p}batch_sequence"
        if k <= 5:
            q.tag("map")
            return f"{p}metrics[{sql_str(self.pick(METRIC_KEYS + ['likes', 'nosuch']))}]"
        if k == 6:
            q.tag("string_fn")
            return f"length({p}{self.pick(['text', 'lang', 'platform', 'attributes'])})"
        if k == 7:
            q.tag("arith")
            return f"{p}batch_row % {self.pick([3, 7, 10])}"
        if k == 8:
            q.tag("date_part")
            return f"CAST(date_part({sql_str(self.pick(['hour', 'minute', 'day', 'doy']))}, {p}occurred_at) AS BIGINT)"
        if k == 9:
            if self.chance(0.5):
                q.tag("lag")
                return LAG_US.replace("{p}", p)
            q.tag("map", "coalesce")
            return f"coalesce({p}metrics['likes'], 0)"
        if k == 10:
            q.tag("case")
            return f"CASE WHEN {p}lang = {sql_str(self.pick(LANG_LITS))} THEN 1 ELSE 0 END"
        q.tag("map", "arith")
        return f"{p}metrics['likes'] + {p}metrics['shares']"

    def double_expr(self, q, p=""):
        q.tag("double")
        k = self.r.randrange(5)
        if k <= 1:
            return f"CAST({self.int_expr(q, p)} AS DOUBLE)"
        if k == 2:
            return f"CAST({self.int_expr(q, p)} AS DOUBLE) * CAST(0.25 AS DOUBLE)"
        if k == 3:
            q.tag("arith", "nullif")
            return f"CAST({self.int_expr(q, p)} AS DOUBLE) / NULLIF(CAST({p}batch_row AS DOUBLE), 0)"
        q.tag("lag")
        return f"CAST({LAG_US.replace('{p}', p)} AS DOUBLE) / 1000"

    # -- aggregates ----------------------------------------------------------------------------

    def agg(self, q, p="", small=False):
        """One aggregate: (sql, is_float). `small`: the query's groups are small enough for a
        string_agg of every value."""
        k = self.r.randrange(30)
        if k <= 2:
            return "count(*)", False
        if k == 3:
            return "count(1)", False
        if k <= 5:
            return f"count({p}{self.pick(ALL_COLS)})", False
        if k <= 7:
            q.tag("count_distinct")
            return f"count(DISTINCT {p}{self.pick(LOW_CARD + ['post_id', 'author_id', 'day'])})", False
        if k <= 10:
            return f"{self.pick(['sum', 'min', 'max'])}({self.int_expr(q, p)})", False
        if k == 11:
            q.floats()
            return f"avg({self.int_expr(q, p)})", True
        if k == 12:
            col = self.pick(["platform", "type", "lang", "text", "post_id", "occurred_at",
                             "received_at", "day", "attributes"])
            return f"{self.pick(['min', 'max'])}({p}{col})", False
        if k == 13:
            q.tag("decimal")
            scale = self.pick(["CAST({e} AS DECIMAL(12,2))",
                               "CAST({e} AS DECIMAL(12,2)) * CAST(1.25 AS DECIMAL(4,2))"])
            return f"{self.pick(['sum', 'sum', 'min', 'max'])}({scale.format(e=self.int_expr(q, p))})", False
        if k <= 15:
            q.floats()
            return f"{self.pick(['sum', 'avg'])}({self.double_expr(q, p)})", True
        if k == 16:
            q.tag("bool_agg")
            return f"{self.pick(['bool_and', 'bool_or'])}({self.pred(q, p, 2)})", False
        if k == 17:
            col = self.pick(LOW_CARD)
            desc = self.pick(["", " DESC"])
            order = f"{p}{col}{desc}"
            if q.agg_order not in (None, order):
                return "count(*)", False  # a second, different ordering: DataFusion refuses
            q.agg_order = order
            q.tag("string_agg")
            if small:
                return f"string_agg({p}{col}, '|' ORDER BY {p}{col}{desc})", False
            return f"string_agg(DISTINCT {p}{col}, ',' ORDER BY {p}{col}{desc})", False
        if k == 18:
            q.tag("median")
            q.floats(1e-9)
            return f"median(CAST({self.int_expr(q, p)} AS DOUBLE))", True
        if k == 19:
            q.tag("percentile_exact")
            q.floats(1e-9)
            pct = self.pick(["0.25", "0.5", "0.75"])
            e = f"CAST({self.int_expr(q, p)} AS DOUBLE)"
            if self.chance(0.5):
                return f"quantile_cont({e}, {pct})", True
            return f"percentile_cont({pct}) WITHIN GROUP (ORDER BY {e})", True
        if k == 20:
            q.tag("stddev")
            q.floats()
            return f"{self.pick(['stddev_samp', 'var_pop', 'var_samp'])}({self.double_expr(q, p)})", True
        if k <= 23:
            q.tag("pivot")
            col = self.pick(LOW_CARD)
            lits = {"platform": PLATFORMS, "type": TYPES, "lang": LANGS, "producer_id": PRODUCER_LITS}[col]
            then = self.pick(["1 ELSE 0", "1 ELSE 0", "1", f"{p}batch_row ELSE 0"])
            return f"sum(CASE WHEN {p}{col} = {sql_str(self.pick(lits))} THEN {then} END)", False
        if k <= 26:
            q.tag("filter_clause")
            inner, is_float = self.pick([("count(*)", False), (f"count({p}post_id)", False),
                                         (f"sum({p}batch_row)", False),
                                         (f"max({p}occurred_at)", False),
                                         (f"count(DISTINCT {p}lang)", False)])
            if "DISTINCT" in inner:
                q.tag("count_distinct")
            cond = self.pred(q, p, 1) if self.chance(0.5) else self.lowcard_pred(q, p)
            return f"{inner} FILTER (WHERE {cond})", is_float
        if k == 27:
            q.tag("lag")
            return f"{self.pick(['min', 'max'])}({p}received_at - {p}occurred_at)", False
        if k == 28:
            return f"count({p}metrics[{sql_str(self.pick(METRIC_KEYS))}])", False
        q.tag("case", "like")
        return f"sum(CASE WHEN {self.like_pred(q, p)} THEN 1 ELSE 0 END)", False

    def aggs(self, q, n, p="", small=False, prefix="a"):
        out = []
        for i in range(n):
            sql, is_float = self.agg(q, p, small)
            if not q.agg_ok(sql):
                sql, is_float = "count(*)", False
            out.append((sql, Col(f"{prefix}{i + 1}", is_float=is_float)))
        return out

    def having(self, q, p=""):
        q.tag("having")
        cond = self.having_cond(q, p)
        calls = re.findall(r"(?:sum|max|min)\([^()]*(?:\([^()]*\))?[^()]*\)", cond)
        if not all(q.agg_ok(c) for c in calls):
            return "count(*) > 1"
        return cond

    def having_cond(self, q, p=""):
        k = self.r.randrange(7)
        if k <= 1:
            return f"count(*) > {self.pick([0, 1, 5, 50, 500, 5000])}"
        if k == 2:
            q.tag("map")
            return f"sum({p}metrics['likes']) > {self.pick([0, 1000, 100000])}"
        if k == 3:
            q.tag("count_distinct")
            return f"count(DISTINCT {p}post_id) >= {self.pick([1, 2, 10])}"
        if k == 4:
            return f"min({p}occurred_at) < {self.ts_lit()}"
        if k == 5:
            q.tag("filter_clause")
            return f"count(*) FILTER (WHERE {p}lang IS NULL) > 0"
        return f"(count(*) > 10 OR max({p}batch_row) < 100)"

    # -- keys, ordering, limits ----------------------------------------------------------------

    def keys(self, n, pool=None):
        pool = list(pool or KEYS)
        # Keep joins of wide keys rare: at most one of the very wide keys per query.
        chosen = []
        for k in self.sample(pool, len(pool)):
            if len(chosen) == n:
                break
            if k.card >= 3000 and any(c.card >= 3000 for c in chosen):
                continue
            chosen.append(k)
        return chosen

    def order_by(self, cols, keys_unique):
        """A total ORDER BY over the output: the keys when they are unique per row, else every
        column (keys first, floats last). Rows equal in every ordered column are identical."""
        use = [c for c in cols if c.key] if keys_unique and any(c.key for c in cols) else (
            [c for c in cols if c.key] + [c for c in cols if not c.key and not c.is_float]
            + [c for c in cols if not c.key and c.is_float])
        parts = []
        for c in use:
            d = self.pick(["", "", " DESC"])
            parts.append(f"{c.alias}{d} {self.nulls()}")
        return "ORDER BY " + ", ".join(parts)

    def finish(self, q, sql, cols, keys_unique=True, est_rows=1, order_p=0.5, limit_p=0.25,
               topn=None, allow_limit=True):
        """Adds ORDER BY / LIMIT: a total ORDER BY when the result could be large (then with a
        LIMIT) or by chance; otherwise the rows are compared as a multiset."""
        big = est_rows > 2500
        if big or (est_rows > 1 and self.chance(order_p)):
            q.ordered = True
            if topn is not None and keys_unique and self.chance(0.4):
                # Top N by an exact aggregate, the (unique) keys breaking ties.
                keys = ", ".join(f"{c.alias} {self.nulls()}" for c in cols if c.key)
                order = f"ORDER BY {topn} DESC NULLS LAST" + (f", {keys}" if keys else "")
                q.tag("top_n")
            else:
                order = self.order_by(cols, keys_unique)
            sql += "\n" + order
            if allow_limit and (big or self.chance(limit_p)):
                q.tag("limit")
                sql += f"\nLIMIT {self.pick([1, 3, 10, 20, 50, 100, 200])}"
                if self.chance(0.3):
                    q.tag("offset")
                    sql += f" OFFSET {self.pick([1, 2, 5, 10])}"
        return sql

    @staticmethod
    def est(keys):
        n = 1
        for k in keys:
            n *= k.card
        return min(n, 10 ** 6)

    def grouped_select(self, q, keys, aggs, from_sql="notifications", where=None, having=None,
                       p="", by_position=None, topn=True, extra_order_p=0.5):
        """SELECT keys, aggs FROM ... [WHERE] [GROUP BY] [HAVING] + ordering."""
        items, cols = [], []
        for k in keys:
            q.tag(*k.tags)
            expr = k.at(p)
            items.append(expr if (k.plain and not p) else f"{expr} AS {k.alias}")
            cols.append(Col(k.alias, key=True, nullable=k.nullable))
        for sql, col in aggs:
            items.append(f"{sql} AS {col.alias}")
            cols.append(col)
        out = "SELECT " + ",\n       ".join(items) + f"\nFROM {from_sql}"
        if where:
            out += f"\nWHERE {where}"
        if keys:
            if by_position is None:
                by_position = self.chance(0.15)
            if by_position:
                q.tag("group_by_position")
                out += "\nGROUP BY " + ", ".join(str(i + 1) for i in range(len(keys)))
            else:
                out += "\nGROUP BY " + ", ".join(k.at(p) for k in keys)
        if having:
            out += f"\nHAVING {having}"
        exact_aggs = [c.alias for _, c in aggs if not c.is_float]
        return self.finish(q, out, cols, True, self.est(keys) if keys else 1, order_p=extra_order_p,
                           topn=self.pick(exact_aggs) if (topn and exact_aggs and keys) else None)

    # -- shapes --------------------------------------------------------------------------------

    def shape_agg(self, q):
        """Single-table aggregate, 0-3 group keys, optional WHERE/HAVING."""
        keys = self.keys(self.pick([0, 1, 1, 2, 2, 3]))
        aggs = self.aggs(q, self.r.randint(1, 4))
        where = self.where(q) if self.chance(0.7) else None
        having = self.having(q) if self.chance(0.2) else None
        q.sql = self.grouped_select(q, keys, aggs, where=where, having=having)

    def shape_log_count(self, q):
        """count(*) by day / with day filters: answered from the Delta log by Sluice when the
        query is exactly that; the variants sit just inside and just outside the rewrite."""
        dayf = self.day_pred(q) if self.chance(0.7) else None
        k = self.r.randrange(12)
        if k <= 3:
            cnt = self.pick(["count(*)", "count(*)", "count(1)", "count('x')"])
            sql = f"SELECT day, {cnt} AS n\nFROM notifications" + (f"\nWHERE {dayf}" if dayf else "")
            sql += "\nGROUP BY day"
            if self.chance(0.2):
                q.tag("having")
                sql += f"\nHAVING count(*) > {self.pick([0, 1000, 3000])}"
            q.sql = self.finish(q, sql, [Col("day", key=True, nullable=False), Col("n")], True, 12,
                                topn="n")
        elif k == 4:
            q.sql = "SELECT count(*) AS n\nFROM notifications" + (f"\nWHERE {dayf}" if dayf else "")
        elif k == 5:
            # A filter on another column: not from the log.
            sql = (f"SELECT day, count(*) AS n\nFROM notifications\nWHERE {self.lowcard_pred(q)}"
                   + (f" AND {dayf}" if dayf else "") + "\nGROUP BY day")
            q.sql = self.finish(q, sql, [Col("day", key=True), Col("n")], True, 12)
        elif k == 6:
            # Grouped by day, day not selected.
            q.sql = "SELECT count(*) AS n\nFROM notifications" + (f"\nWHERE {dayf}" if dayf else "") + "\nGROUP BY day"
        elif k == 7:
            q.tag("filter_clause")
            d = self.day()
            q.sql = (f"SELECT count(*) AS n,\n       count(*) FILTER (WHERE day = {self.day_lit(d)}) AS on_day,\n"
                     f"       count(DISTINCT day) AS days,\n       min(day) AS first_day,\n       max(day) AS last_day\n"
                     "FROM notifications" + (f"\nWHERE {dayf}" if dayf else ""))
        elif k == 8:
            q.tag("subquery")
            q.sql = ("SELECT count(*) AS n\nFROM (SELECT day, platform FROM notifications"
                     + (f" WHERE {dayf}" if dayf else "") + ") AS t")
        elif k == 9:
            q.tag("window")
            sql = ("SELECT day, count(*) AS n, sum(count(*)) OVER () AS total\nFROM notifications"
                   + (f"\nWHERE {dayf}" if dayf else "") + "\nGROUP BY day")
            q.sql = self.finish(q, sql, [Col("day", key=True), Col("n"), Col("total")], True, 12,
                                allow_limit=False)
        elif k == 10:
            # Grouped by day and a non-partition column: not from the log.
            key = self.pick(LOWCARD_KEYS[2:])
            sql = (f"SELECT day, {key.sql.replace('{p}', '')}, count(*) AS n\nFROM notifications"
                   + (f"\nWHERE {dayf}" if dayf else "") + f"\nGROUP BY day, {key.sql.replace('{p}', '')}")
            q.sql = self.finish(q, sql, [Col("day", key=True), Col(key.alias, key=True), Col("n")], True, 80)
        else:
            q.tag("count_null")
            q.sql = ("SELECT count(*) AS n, count(NULL) AS nulls, count(1) AS ones\nFROM notifications"
                     + (f"\nWHERE {dayf}" if dayf else ""))

    def shape_null_count(self, q):
        """count(col) and IS NOT NULL guards: Sluice drops them for columns the log says hold no
        null; the variants behind computed projections and outer joins must not be."""
        col = self.pick(sorted(NULLABLE) + ["platform", "id", "type", "producer_id", "occurred_at", "tags", "metrics"])
        dayf = self.one_of(lambda: None, lambda: f"day <> DATE '{NULL_DAY}'", lambda: f"day = DATE '{NULL_DAY}'",
                           lambda: self.day_pred(q), lambda: "day BETWEEN DATE '2026-11-13' AND DATE '2026-11-20'")
        if dayf:
            q.tag("day_filter")
        w = f"\nWHERE {dayf}" if dayf else ""
        k = self.r.randrange(9)
        if k == 0:
            cols = self.sample(ALL_COLS, 3)
            q.sql = ("SELECT " + ", ".join(f"count({c}) AS c_{c}" for c in cols) + ", count(*) AS n\n"
                     f"FROM notifications{w}")
        elif k == 1:
            sql = f"SELECT day, count({col}) AS c, count(*) AS n\nFROM notifications{w}\nGROUP BY day"
            q.sql = self.finish(q, sql, [Col("day", key=True), Col("c"), Col("n")], True, 12)
        elif k == 2:
            q.tag("null_check")
            extra = self.pick(["", f" AND {self.pick(sorted(NULLABLE))} IS NOT NULL",
                               f" OR {self.lowcard_pred(q)}"])
            cond = f"{col} IS NOT NULL{extra}"
            q.sql = f"SELECT count(*) AS n, count({col}) AS c\nFROM notifications\nWHERE ({cond})" + (
                f" AND {dayf}" if dayf else "")
        elif k == 3:
            q.tag("subquery")
            q.sql = (f"SELECT count(x) AS c, count(*) AS n\nFROM (SELECT {col} AS x, day FROM notifications) AS t{w}")
        elif k == 4:
            # A computed column of the same name holds nulls the log knows nothing of.
            q.tag("subquery", "nullif")
            c = self.pick(["post_id", "author_id", "platform", "type"])
            lit = sql_str(self.pick(POST_LITS if c == "post_id" else USER_LITS if c == "author_id"
                                    else PLATFORMS if c == "platform" else TYPES))
            expr = self.pick([f"NULLIF({c}, {lit})", f"CASE WHEN lang = 'en' THEN {c} END"])
            q.sql = (f"SELECT count({c}) AS c, count(*) AS n\nFROM (SELECT {expr} AS {c}, day FROM notifications) AS t{w}")
        elif k == 5:
            # Behind an outer join, b's columns are null where nothing matched.
            q.tag("join", "join_left")
            d1, d2 = self.day(), self.day()
            c = self.pick(["post_id", "platform", "id", "text"])
            q.sql = (f"SELECT count(b.{c}) AS c, count(*) AS n, count(a.platform) AS a_rows\n"
                     f"FROM (SELECT DISTINCT platform FROM notifications WHERE day = DATE '{d1}') AS a\n"
                     f"LEFT JOIN notifications AS b\n  ON a.platform = b.platform AND b.day = DATE '{d2}' "
                     f"AND b.type = {sql_str(self.pick(TYPE_LITS))}")
            if self.chance(0.4):
                q.sql += f"\nWHERE b.{c} IS NOT NULL"
        elif k == 6:
            key = self.pick(LOWCARD_KEYS)
            cols = self.sample(["post_id", "text", "lang", "author_id", "platform", "attributes"], 2)
            sql = (f"SELECT {key.at()}, " + ", ".join(f"count({c}) AS c_{c}" for c in cols)
                   + f", count(*) AS n\nFROM notifications{w}\nGROUP BY {key.at()}")
            q.sql = self.finish(q, sql, [Col(key.alias, key=True)] + [Col(f"c_{c}") for c in cols] + [Col("n")],
                                True, key.card)
        elif k == 7:
            q.tag("union_all", "subquery")
            d = self.day()
            q.sql = (f"SELECT count({col}) AS c, count(*) AS n\nFROM (SELECT {col} FROM notifications WHERE day = DATE '{d}'\n"
                     f"      UNION ALL\n      SELECT {col} FROM notifications WHERE day = DATE '{NULL_DAY}') AS t")
        else:
            q.tag("filter_clause", "null_check")
            q.sql = (f"SELECT count(*) FILTER (WHERE {col} IS NOT NULL) AS c,\n       count(*) FILTER (WHERE {col} IS NULL) AS z,\n"
                     f"       count({col}) AS c2\nFROM notifications{w}")

    def lowcard_agg(self, q, outer_cols):
        """An aggregate of regroup's kinds: over low-cardinality columns (pivot, FILTER,
        count(DISTINCT), min/max, sum of an integer) or over other columns."""
        col = self.pick([c for c in LOW_CARD if c not in outer_cols] or LOW_CARD)
        lits = {"platform": PLATFORMS, "type": TYPES, "lang": LANGS, "producer_id": PRODUCER_LITS}[col]
        v = sql_str(self.pick(lits))
        k = self.r.randrange(16)
        if k <= 3:
            q.tag("pivot")
            return f"sum(CASE WHEN {col} = {v} THEN 1 ELSE 0 END)"
        if k == 4:
            q.tag("pivot")
            return f"sum(CASE WHEN {col} = {v} THEN 1 END)"
        if k == 5:
            q.tag("pivot", "in_list")
            vs = ", ".join(sql_str(x) for x in self.sample(lits, 2))
            return f"count(CASE WHEN {col} IN ({vs}) THEN 1 END)"
        if k <= 7:
            q.tag("filter_clause")
            cond = self.pick([f"{col} = {v}", f"{col} IS NULL", f"{col} LIKE 'post.%'",
                              f"{col} <> {v}", f"lang IS NOT NULL AND {col} = {v}"])
            inner = self.pick(["count(*)", "count(*)", "count(post_id)", "sum(batch_row)",
                               "max(occurred_at)", "count(lang)", "sum(metrics['likes'])"])
            return f"{inner} FILTER (WHERE {cond})"
        if k == 8:
            q.tag("count_distinct")
            return f"count(DISTINCT {col})"
        if k == 9:
            return f"{self.pick(['min', 'max'])}({col})"
        if k == 10:
            q.tag("string_fn")
            return f"sum(length({col}))"
        if k == 11:
            q.tag("pivot", "like")
            return f"sum(CASE WHEN {col} LIKE {sql_str(self.pick(['post.%', '%d', 'm%', 'e%']))} THEN 1 ELSE 0 END)"
        # over other columns, combinable per inner group
        other = self.pick(["count(post_id)", "sum(batch_row)", "min(occurred_at)", "max(received_at)",
                           "count(text)", "sum(metrics['likes'])", "max(metrics['shares'])",
                           "min(batch_sequence)", "count(*)"])
        if "metrics" in other:
            q.tag("map")
        return other

    def shape_pivot(self, q):
        """Pivots over low-cardinality columns (Sluice's regroup): outer groups of 0-2 low-card
        columns or expressions of them, aggregates of regroup's kinds, sometimes one that is not
        (avg, count(DISTINCT post_id)) so that nothing is rewritten."""
        pool = [KEY_BY_ALIAS[a] for a in ("platform", "type", "lang", "producer_id", "lang_or_und",
                                          "type_class", "day", "type_lower")]
        keys = self.keys(self.pick([0, 1, 1, 1, 2]), pool)
        outer_cols = [k.alias for k in keys]
        aggs = []
        for i in range(self.r.randint(2, 7)):
            sql = self.lowcard_agg(q, outer_cols)
            aggs.append((sql if q.agg_ok(sql) else "count(*)", Col(f"p{i + 1}")))
        if self.chance(0.15):
            q.tag("not_rewritable")
            sql, is_float = self.pick([("avg(CAST(batch_row AS DOUBLE))", True), ("count(DISTINCT post_id)", False)])
            if is_float:
                q.floats()
            aggs.append((sql, Col("x1", is_float=is_float)))
        where = None
        if self.chance(0.5):
            where = self.one_of(lambda: self.day_pred(q), lambda: self.lowcard_pred(q),
                                lambda: self.where(q, n=1))
        q.sql = self.grouped_select(q, keys, aggs, where=where)

    def shape_lowcard_group(self, q):
        """GROUP BY one or two low-cardinality string columns (numbered by Sluice), plain or
        through a subquery's aliases, with count/sum/min/max/avg and count(DISTINCT)."""
        keys = self.keys(self.pick([1, 1, 2, 2]), LOWCARD_KEYS)
        names = [k.alias for k in keys]
        aggs = []
        for i in range(self.r.randint(1, 4)):
            k = self.r.randrange(8)
            if k == 0:
                sql, f = "count(*)", False
            elif k == 1:
                sql, f = f"count({self.pick(ALL_COLS)})", False
            elif k == 2:
                q.tag("count_distinct")
                sql, f = f"count(DISTINCT {self.pick([c for c in LOW_CARD if c not in names])})", False
            elif k == 3:
                sql, f = f"{self.pick(['sum', 'min', 'max'])}({self.int_expr(q)})", False
            elif k == 4:
                q.floats()
                sql, f = f"avg({self.int_expr(q)})", True
            elif k == 5:
                sql, f = f"{self.pick(['min', 'max'])}({self.pick(['platform', 'type', 'lang', 'occurred_at', 'day'])})", False
            else:
                sql, f = self.agg(q)
            aggs.append((sql, Col(f"a{i + 1}", is_float=f)))
        where = self.where(q, n=1) if self.chance(0.5) else None
        if self.chance(0.3):
            # Through a subquery that renames the columns.
            q.tag("subquery")
            cols = sorted(set(names + ["platform", "type", "lang", "producer_id", "post_id", "batch_row",
                                       "batch_sequence", "occurred_at", "received_at", "metrics", "text",
                                       "tags", "day", "attributes", "author_id", "actor_id", "id"]))
            inner = "SELECT " + ", ".join(cols) + " FROM notifications" + (f" WHERE {where}" if where else "")
            q.sql = self.grouped_select(q, keys, aggs, from_sql=f"({inner}) AS s")
        else:
            q.sql = self.grouped_select(q, keys, aggs, where=where)

    def shape_distinct(self, q):
        q.tag("distinct")
        k = self.r.randrange(4)
        if k <= 1:
            keys = self.keys(self.pick([1, 2]), LOWCARD_KEYS + [KEY_BY_ALIAS["day"], KEY_BY_ALIAS["lang_or_und"],
                                                               KEY_BY_ALIAS["hour_start"], KEY_BY_ALIAS["no_likes"]])
            items = [k_.at() if k_.plain else f"{k_.at()} AS {k_.alias}" for k_ in keys]
            for k_ in keys:
                q.tag(*k_.tags)
            where = self.where(q, n=1) if self.chance(0.6) else None
            sql = "SELECT DISTINCT " + ", ".join(items) + "\nFROM notifications" + (f"\nWHERE {where}" if where else "")
            q.sql = self.finish(q, sql, [Col(k_.alias, key=True) for k_ in keys], True, self.est(keys))
        elif k == 2:
            q.tag("subquery")
            cols = self.sample(["post_id", "platform", "author_id", "lang", "type", "day"], 2)
            q.sql = (f"SELECT count(*) AS n\nFROM (SELECT DISTINCT {', '.join(cols)} FROM notifications"
                     + (f" WHERE {self.where(q, n=1)}" if self.chance(0.6) else "") + ") AS t")
        else:
            q.tag("string_fn")
            sql = ("SELECT DISTINCT lang, length(text) AS text_len\nFROM notifications\n"
                   f"WHERE {self.day_pred(q)}")
            q.sql = self.finish(q, sql, [Col("lang", key=True), Col("text_len", key=True)], True, 400)

    def shape_map_lookup(self, q):
        """metrics['key'] in SELECT, WHERE and GROUP BY, including keys no row has."""
        q.tag("map")
        k = self.r.randrange(4)
        if k == 0:
            keys = self.keys(self.pick([0, 1, 1, 2]), LOWCARD_KEYS + [KEY_BY_ALIAS["day"]])
            aggs = []
            for i, key in enumerate(self.sample(METRIC_KEYS + ["nosuch"], self.r.randint(2, 4))):
                fn = self.pick(["sum", "max", "min", "count"])
                aggs.append((f"{fn}(metrics[{sql_str(key)}])", Col(f"m{i + 1}")))
            if self.chance(0.3):
                q.floats()
                aggs.append(("avg(CAST(metrics['likes'] AS DOUBLE))", Col("avg_likes", is_float=True)))
            where = self.num_pred(q) if self.chance(0.6) else None
            q.sql = self.grouped_select(q, keys, aggs, where=where)
        elif k == 1:
            # Top posts by likes: total order by (likes, post_id).
            where = "post_id IS NOT NULL AND metrics['likes'] IS NOT NULL"
            if self.chance(0.5):
                where += f" AND {self.day_pred(q)}"
            q.ordered = True
            q.tag("top_n", "limit")
            q.sql = (f"SELECT post_id, max(metrics['likes']) AS max_likes, sum(metrics['shares']) AS shares, count(*) AS n\n"
                     f"FROM notifications\nWHERE {where}\nGROUP BY post_id\n"
                     f"ORDER BY max_likes DESC NULLS LAST, post_id ASC NULLS LAST\nLIMIT {self.pick([5, 20, 100])}")
        elif k == 2:
            key = self.pick([KEY_BY_ALIAS["shares"], Key("{p}metrics['replies']", "replies", 50, ["map"], True),
                             Key("cardinality({p}metrics)", "metric_count", 4, ["map_fn"])])
            q.tag(*key.tags)
            aggs = self.aggs(q, self.r.randint(1, 2))
            q.sql = self.grouped_select(q, [key], aggs, where=self.where(q, n=1) if self.chance(0.5) else None)
        else:
            q.tag("map_fn")
            d = self.day()
            q.ordered = True
            q.sql = (f"SELECT id, metrics['likes'] AS likes, metrics['nosuch'] AS nosuch, cardinality(metrics) AS n_keys,\n"
                     f"       map_keys(metrics) AS metric_keys\nFROM notifications\n"
                     f"WHERE day = DATE '{d}' AND batch_row < {self.pick([3, 10])}\n"
                     f"ORDER BY id, likes NULLS FIRST, n_keys\nLIMIT 50")

    def shape_like(self, q):
        """LIKE / NOT LIKE / ILIKE / starts_with on string columns (Sluice matches per distinct
        value of a batch), in WHERE, FILTER and CASE."""
        k = self.r.randrange(4)
        if k == 0:
            col = self.pick(["text", "attributes", "platform", "type", "post_id"])
            where = self.like_pred(q, col=col)
            if self.chance(0.5):
                where += f" AND {self.day_pred(q)}"
            q.sql = f"SELECT count(*) AS n, count(DISTINCT {col}) AS distinct_values\nFROM notifications\nWHERE {where}"
        elif k == 1:
            keys = self.keys(self.pick([0, 1, 1]), LOWCARD_KEYS)
            aggs = []
            for i in range(self.r.randint(1, 4)):
                cond = self.like_pred(q)
                form = self.pick(["count(*) FILTER (WHERE {c})", "sum(CASE WHEN {c} THEN 1 ELSE 0 END)",
                                  "count(CASE WHEN {c} THEN 1 END)"])
                if "FILTER" in form:
                    q.tag("filter_clause")
                else:
                    q.tag("case")
                aggs.append((form.format(c=cond), Col(f"l{i + 1}")))
            q.sql = self.grouped_select(q, keys, aggs, where=self.day_pred(q) if self.chance(0.4) else None)
        elif k == 2:
            col = self.pick(["text", "attributes"])
            sql = (f"SELECT {col}, count(*) AS n\nFROM notifications\nWHERE {self.like_pred(q, col=col)}\n"
                   f"GROUP BY {col}")
            q.sql = self.finish(q, sql, [Col(col, key=True), Col("n")], True, 5000)
        else:
            keys = self.keys(1, LOWCARD_KEYS)
            aggs = self.aggs(q, self.r.randint(1, 3))
            where = " OR ".join(self.like_pred(q) for _ in range(self.r.randint(1, 3)))
            q.tag("bool_combo")
            q.sql = self.grouped_select(q, keys, aggs, where=f"({where})")

    def shape_date_trunc(self, q):
        """date_trunc of the UTC timestamps (Sluice: by arithmetic for hour and day)."""
        q.tag("date_trunc")
        unit = self.pick(["hour", "hour", "day", "day", "minute", "month", "week", "second"])
        col = self.pick(["occurred_at", "occurred_at", "received_at"])
        expr = f"date_trunc('{unit}', {col})"
        est = {"hour": 300, "day": 12, "minute": 20000, "month": 2, "week": 3, "second": 40000}[unit]
        where = None
        if unit in ("minute", "second") or self.chance(0.4):
            where = self.one_of(lambda: self.day_pred(q), lambda: self.ts_pred(q),
                                lambda: f"day = DATE '{self.day()}'")
            if "BETWEEN" not in where and "=" in where and "day" in where:
                est = est // 12
        keys = [Key(expr, "bucket", est)]
        if self.chance(0.3):
            keys.append(self.pick(LOWCARD_KEYS[2:]))
        aggs = [("count(*)", Col("n"))] + self.aggs(q, self.r.randint(0, 2), prefix="t")
        if self.chance(0.3):
            aggs.append((f"min({col})", Col("first_at")))
        q.sql = self.grouped_select(q, keys, aggs, where=where)

    def shape_approx_percentile(self, q):
        """Several approx_percentile_cont calls on the same DOUBLE values (one shared t-digest in
        Sluice), and calls the rewrite must leave alone. DataFusion only (dialect rule)."""
        q.datafusion_only("approx_percentile")
        q.tag("double")
        small = self.chance(0.5)
        vals = self.pick(["CAST(metrics['likes'] AS DOUBLE)", "CAST(batch_row AS DOUBLE)",
                          "(extract(epoch FROM received_at) - extract(epoch FROM occurred_at)) * 1000",
                          f"CAST({LAG_US.replace('{p}', '')} AS DOUBLE) / 1000",
                          "CAST(metrics['shares'] AS DOUBLE) * CAST(2 AS DOUBLE)"]
                         + ["CAST(metrics['nosuch'] AS DOUBLE)"] * (self.r.randrange(8) == 0))
        if "metrics" in vals:
            q.tag("map")
        if "nosuch" in vals:
            q.tag("all_null")
        if "epoch" in vals:
            q.tag("lag")
        pcts = ["0.1", "0.25", "0.5", "0.75", "0.9", "0.95", "0.99"]
        if "epoch" in vals and not small:
            # 1% of the lags are up to an hour, 99% under 30 s: the t-digest's p99 sits on that
            # edge and swings by 90% between two DataFusion runs.
            pcts = pcts[:-1]
        ps = sorted(self.sample(pcts, self.r.randint(2, 4)))
        aggs = [(f"approx_percentile_cont({vals}, {p_})", Col(f"p{i + 1}", is_float=True)) for i, p_ in enumerate(ps)]
        k = self.r.randrange(6)
        if k == 0:
            q.tag("not_rewritable")
            aggs.append((f"approx_percentile_cont({vals}, 0.5, 200)", Col("centroids", is_float=True)))
        elif k == 1:
            q.tag("not_rewritable", "filter_clause")
            aggs.append((f"approx_percentile_cont({vals}, 0.5) FILTER (WHERE lang = 'en')", Col("en", is_float=True)))
        elif k == 2:
            q.tag("within_group")
            aggs.append((f"approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY {vals})", Col("wg", is_float=True)))
        elif k == 3:
            q.tag("not_rewritable")
            aggs.append(("approx_percentile_cont(CAST(metrics['replies'] AS DOUBLE), 0.5)", Col("other", is_float=True)))
        elif k == 4:
            q.datafusion_only("approx_distinct")
            q.tag("approx_distinct")
            aggs.append(("approx_distinct(post_id)", Col("posts")))
        aggs.append(("count(*)", Col("n")))
        keys = self.keys(self.pick([0, 1, 1]), LOWCARD_KEYS + [KEY_BY_ALIAS["day"]])
        # DataFusion's t-digest depends on how rows are split between partitions (its answers
        # vary by up to ~8% between two runs on the validation data); over groups of at most a
        # few dozen values it keeps every value and is exact. Small groups: exact comparison;
        # large: a wide tolerance (0.25), which still catches a percentile answered for another.
        if small:
            q.tag("small_groups")
            d = self.pick(DAYS + [self.pick(NO_DAYS)])
            if d in NO_DAYS:
                q.tag("empty")
            where = f"day = DATE '{d}' AND batch_row < {self.pick([5, 10, 20])}"
            q.floats(1e-9)
        else:
            where = self.where(q, n=1) if self.chance(0.5) else None
            q.floats(0.25)
        q.sql = self.grouped_select(q, keys, aggs, where=where, topn=False)

    def shape_unnest(self, q):
        """unnest(tags), one list column (Sluice's ListUnnestExec), with groups and filters."""
        q.tag("unnest")
        k = self.r.randrange(7)
        if k <= 1:
            keep = self.pick(["post_id", "platform", "day", "lang"])
            where = self.where(q, n=1) if self.chance(0.6) else None
            inner = f"SELECT unnest(tags) AS tag, {keep} FROM notifications" + (f" WHERE {where}" if where else "")
            aggs = [("count(*)", Col("uses")), (f"count(DISTINCT {keep})", Col("distinct_keep"))]
            q.tag("count_distinct", "subquery")
            sql = f"SELECT tag, count(*) AS uses, count(DISTINCT {keep}) AS distinct_keep\nFROM ({inner}) AS t"
            if self.chance(0.3):
                sql += "\nWHERE tag <> ''"
            sql += "\nGROUP BY tag"
            q.sql = self.finish(q, sql, [Col("tag", key=True)] + [c for _, c in aggs], True, 400, topn="uses")
        elif k == 2:
            key = self.pick(LOWCARD_KEYS)
            inner = f"SELECT {key.at()}, unnest(tags) AS tag FROM notifications WHERE {self.day_pred(q)}"
            sql = f"SELECT {key.alias}, tag, count(*) AS uses\nFROM ({inner}) AS t\nGROUP BY {key.alias}, tag"
            q.tag("subquery")
            q.sql = self.finish(q, sql, [Col(key.alias, key=True), Col("tag", key=True), Col("uses")], True,
                                key.card * 50)
        elif k == 3:
            q.tag("null_day")
            d = self.pick([NULL_DAY, NULL_DAY, self.day()])
            q.sql = (f"SELECT count(*) AS n, count(DISTINCT tag) AS tags\nFROM (SELECT unnest(tags) AS tag FROM notifications "
                     f"WHERE day = DATE '{d}') AS t")
        elif k == 4:
            # Raw rows: id, tag under a total order (a tag may repeat in one list: equal rows).
            q.ordered = True
            q.tag("limit")
            q.sql = (f"SELECT id, platform, unnest(tags) AS tag\nFROM notifications\n"
                     f"WHERE day = DATE '{self.day()}' AND batch_row < {self.pick([5, 20])}\n"
                     f"ORDER BY id, platform, tag\nLIMIT 100")
        elif k == 5:
            # Null lists: CASE gives NULL instead of the list (no row in both engines).
            q.tag("case", "null_list")
            q.sql = ("SELECT count(*) AS n, count(tag) AS non_null\nFROM (SELECT unnest(CASE WHEN lang IS NULL THEN NULL ELSE tags END) AS tag "
                     f"FROM notifications WHERE {self.day_pred(q)}) AS t")
        else:
            # Top tags per platform, ranked (the analyst suite's shape).
            q.tag("window", "subquery")
            q.ordered = True
            n = self.pick([3, 5])
            q.sql = ("SELECT platform, tag, uses, tag_rank\nFROM (\n"
                     "    SELECT platform, tag, uses, rank() OVER (PARTITION BY platform ORDER BY uses DESC) AS tag_rank\n"
                     "    FROM (\n        SELECT platform, tag, count(*) AS uses\n"
                     f"        FROM (SELECT platform, unnest(tags) AS tag FROM notifications WHERE day <> DATE '{WIDE_DAY}') AS t\n"
                     "        GROUP BY platform, tag\n    ) AS per_tag\n) AS ranked\n"
                     f"WHERE tag_rank <= {n}\nORDER BY platform, tag_rank, tag")

    def shape_grouping_sets(self, q):
        """GROUPING SETS / ROLLUP / CUBE, with GROUPING(col) sometimes."""
        q.tag("grouping_sets")
        pool = [KEY_BY_ALIAS[a] for a in ("platform", "type", "lang", "producer_id", "day", "lang_or_und",
                                          "type_class", "weekday")]
        keys = self.keys(self.pick([2, 2, 3]), pool)
        exprs = [k.at() for k in keys]
        form = self.r.randrange(4)
        if form == 0:
            q.tag("rollup")
            gb = f"ROLLUP ({', '.join(exprs)})"
        elif form == 1:
            q.tag("cube")
            gb = f"CUBE ({', '.join(exprs[:2])})" + (f", {exprs[2]}" if len(exprs) > 2 else "")
        elif form == 2:
            sets = [f"({', '.join(exprs)})", f"({exprs[0]})", "()"]
            if len(exprs) > 2:
                sets.insert(1, f"({exprs[1]}, {exprs[2]})")
            gb = f"GROUPING SETS ({', '.join(sets)})"
        else:
            gb = f"GROUPING SETS ({', '.join(f'({e})' for e in exprs)})"
        items, cols = [], []
        for k in keys:
            q.tag(*k.tags)
            items.append(k.at() if k.plain else f"{k.at()} AS {k.alias}")
            cols.append(Col(k.alias, key=True))
        with_grouping = self.chance(0.5)
        if with_grouping:
            q.tag("grouping_fn")
            for i, k in enumerate(keys):
                items.append(f"grouping({k.at()}) AS g{i + 1}")
                cols.append(Col(f"g{i + 1}", key=True))
        for sql, col in self.aggs(q, self.r.randint(1, 3)):
            items.append(f"{sql} AS {col.alias}")
            cols.append(col)
        # No filter on a key column: after `WHERE lang = 'de'` DataFusion 55 takes lang for a
        # constant and drops it from the ORDER BY, although the grouping sets give it NULLs too:
        #   SELECT k, v, count(*) AS n FROM (VALUES ('a', 1), ('a', 2), ('b', 3)) AS t(k, v)
        #   WHERE k = 'a' GROUP BY GROUPING SETS ((k, v), ()) ORDER BY k NULLS FIRST, v
        # puts the grand total (NULL, NULL) last. A wrong answer under LIMIT; see the report.
        key_cols = [c for c in ALL_COLS if any(re.search(rf"\b{c}\b", k.at()) for k in keys)]
        where = self.where_avoiding(q, key_cols) if self.chance(0.5) else None
        if self.chance(0.5) and "day" not in key_cols:
            where = (where + " AND " if where else "") + f"day <> DATE '{WIDE_DAY}'"
            est = 200
        else:
            est = self.est(keys)
        sql = "SELECT " + ",\n       ".join(items) + "\nFROM notifications" + (f"\nWHERE {where}" if where else "")
        sql += f"\nGROUP BY {gb}"
        if self.chance(0.15):
            sql += f"\nHAVING {self.having(q)}"
        # Keys alone repeat across grouping sets (a NULL key vs the subtotal); with every
        # grouping() column they are unique, else order by everything.
        q.sql = self.finish(q, sql, cols, with_grouping, est)

    def window_order(self, keys, first=None):
        parts = [first] if first else []
        parts += [f"{k} {self.nulls()}" for k in keys]
        return ", ".join(parts)

    def shape_window(self, q):
        """Window functions over aggregates; every ORDER BY inside a window that feeds
        row_number/lag/lead/first_value is total within its partition."""
        q.tag("window")
        keys = self.keys(self.pick([1, 2, 2]), LOWCARD_KEYS[2:] + [KEY_BY_ALIAS[a] for a in
                                                                 ("day", "lang_or_und", "type_class", "weekday")])
        if self.chance(0.5):
            # platform/type only where they are few
            keys = [self.pick([KEY_BY_ALIAS["platform"], KEY_BY_ALIAS["type"]])] + keys[:1]
            wide_filter = f"day <> DATE '{WIDE_DAY}'"
        else:
            wide_filter = None
        names = [k.alias for k in keys]
        where = " AND ".join(x for x in [wide_filter, self.where(q, n=1) if self.chance(0.4) else None] if x)
        inner_items = [k.at() if k.plain else f"{k.at()} AS {k.alias}" for k in keys]
        inner = ("SELECT " + ", ".join(inner_items) + ", count(*) AS n, sum(metrics['likes']) AS likes, "
                 "max(batch_row) AS top_row FROM notifications" + (f" WHERE {where}" if where else "")
                 + " GROUP BY " + ", ".join(k.at() for k in keys))
        part = names[:1] if len(names) > 1 and self.chance(0.6) else []
        rest = [n for n in names if n not in part]
        over_part = f"PARTITION BY {', '.join(part)} " if part else ""
        fns = []
        for i in range(self.r.randint(1, 4)):
            k = self.r.randrange(12)
            nm = f"w{i + 1}"
            if k == 0:
                fns.append((f"rank() OVER ({over_part}ORDER BY n DESC)", Col(nm)))
            elif k == 1:
                fns.append((f"dense_rank() OVER ({over_part}ORDER BY likes DESC NULLS LAST)", Col(nm)))
            elif k == 2:
                fns.append((f"row_number() OVER ({over_part}ORDER BY {self.window_order(rest, 'n DESC')})", Col(nm)))
            elif k == 3:
                fns.append((f"sum(n) OVER ({over_part}ORDER BY {self.window_order(rest)} "
                            "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)", Col(nm)))
            elif k == 4:
                fns.append((f"sum(n) OVER ({over_part.strip()})", Col(nm)))
            elif k == 5:
                default = self.pick(["", ", 1, 0"])
                fns.append((f"{self.pick(['lag', 'lead'])}(n{default}) OVER ({over_part}ORDER BY {self.window_order(rest)})", Col(nm)))
            elif k == 6:
                fns.append((f"first_value({rest[0]}) OVER ({over_part}ORDER BY {self.window_order(rest, 'n DESC')})", Col(nm)))
            elif k == 7:
                fns.append(("count(*) OVER ()", Col(nm)))
            elif k == 8:
                q.floats()
                fns.append((f"CAST(n AS DOUBLE) / CAST(sum(n) OVER ({over_part.strip()}) AS DOUBLE)", Col(nm, is_float=True)))
            elif k == 9:
                fns.append((f"ntile(3) OVER ({over_part}ORDER BY {self.window_order(rest)})", Col(nm)))
            elif k == 10:
                q.floats()
                fns.append((f"{self.pick(['percent_rank', 'cume_dist'])}() OVER ({over_part}ORDER BY n)", Col(nm, is_float=True)))
            else:
                fns.append((f"max(likes) OVER ({over_part}ORDER BY {self.window_order(rest)} "
                            "ROWS BETWEEN 1 PRECEDING AND 1 FOLLOWING)", Col(nm)))
        items = names + ["n", "likes"] + [f"{s} AS {c.alias}" for s, c in fns]
        cols = [Col(n_, key=True) for n_ in names] + [Col("n"), Col("likes")] + [c for _, c in fns]
        sql = "SELECT " + ",\n       ".join(items) + f"\nFROM ({inner}) AS t"
        if self.chance(0.25) and any("rank()" in s for s, _ in fns):
            # Filter on a window result: one more level.
            rk = next(c.alias for s, c in fns if "rank()" in s)
            sql = f"SELECT *\nFROM ({sql}) AS ranked\nWHERE {rk} <= 2"
        # Few rows (low-cardinality keys, the wide day excluded for platform/type); no LIMIT
        # over window functions (DataFusion bugs, see the module doc).
        q.sql = self.finish(q, sql, cols, True, 100, order_p=0.8, allow_limit=False)

    def agg_subquery(self, q, key, where, alias_n="n"):
        agg, f = self.pick([("count(*)", False), ("sum(metrics['likes'])", False), ("max(occurred_at)", False),
                            ("count(DISTINCT post_id)", False), ("min(batch_row)", False)])
        return f"SELECT {key.at()} AS k, {agg} AS {alias_n} FROM notifications WHERE {where} GROUP BY {key.at()}"

    def shape_join(self, q):
        """Joins of aggregated subqueries, or of the table with itself under tight filters."""
        q.tag("join")
        kind = self.pick(["INNER", "LEFT", "RIGHT", "FULL"])
        q.tag(f"join_{kind.lower()}")
        k = self.r.randrange(5)
        if k <= 1:
            key = self.pick([KEY_BY_ALIAS[a] for a in ("platform", "type", "lang", "day", "lang_or_und", "producer_id")]
                            + [KEY_BY_ALIAS["post_id"], KEY_BY_ALIAS["author_id"]])
            wide = key.card >= 3000
            w1 = self.day_pred(q) if not wide else f"day = DATE '{self.day()}' AND type = {sql_str(self.pick(TYPES))}"
            w2 = self.where(q, n=1) if not wide else f"day = DATE '{self.day()}' AND platform = {sql_str(self.pick(PLATFORMS))}"
            a = self.agg_subquery(q, key, w1, "n")
            b = self.agg_subquery(q, key, w2, "m")
            on = "a.k = b.k" if self.chance(0.8) else "a.k IS NOT DISTINCT FROM b.k"
            q.tag("cte")
            sql = (f"WITH a AS ({a}),\n     b AS ({b})\n"
                   f"SELECT coalesce(a.k, b.k) AS k, a.n AS n, b.m AS m\nFROM a {kind} JOIN b ON {on}")
            q.sql = self.finish(q, sql, [Col("k", key=True), Col("n", key=True), Col("m", key=True)], False,
                                key.card, order_p=0.5)
        elif k == 2:
            # Self-join on post_id, both sides filtered by day and type, aggregated.
            jk = self.pick([("post_id", "post_id"), ("author_id", "author_id"), ("author_id", "actor_id")])
            t1, t2 = self.pick(TYPE_LITS), self.pick(TYPE_LITS)
            d1 = self.day()
            q.tag("self_join", "subquery")
            a = f"SELECT * FROM notifications WHERE day = DATE '{d1}' AND type = {sql_str(t1)}"
            b = (f"SELECT {jk[1]}, platform, occurred_at, metrics, day FROM notifications WHERE type = {sql_str(t2)} "
                 f"AND {self.day_pred(q)}")
            grp = self.pick(["a.platform", "b.platform", "a.lang", "b.day"])
            sql = (f"SELECT {grp} AS g,\n       count(*) AS pairs,\n       count(DISTINCT a.{jk[0]}) AS keys,\n"
                   f"       min(b.occurred_at) AS first_b,\n       max(b.metrics['likes']) AS likes,\n"
                   f"       sum(CASE WHEN b.occurred_at > a.occurred_at THEN 1 ELSE 0 END) AS later\n"
                   f"FROM ({a}) AS a\n{kind} JOIN ({b}) AS b ON a.{jk[0]} = b.{jk[1]}\nGROUP BY {grp}")
            q.tag("map", "case", "count_distinct")
            q.sql = self.finish(q, sql, [Col("g", key=True)] + [Col(x) for x in ("pairs", "keys", "first_b", "likes", "later")],
                                True, 20)
        elif k == 3:
            # Raw rows of a tightly filtered join on platform, with duplicate-looking columns.
            d1, d2 = self.day(), self.day()
            q.tag("self_join", "subquery", "limit")
            q.ordered = True
            a = f"SELECT id, platform, type, batch_row FROM notifications WHERE day = DATE '{d1}' AND batch_row < 3"
            b = (f"SELECT id, platform, lang FROM notifications WHERE day = DATE '{d2}' AND batch_row < 2 "
                 f"AND type = {sql_str(self.pick(TYPES))}")
            sql = (f"SELECT a.id AS a_id, b.id AS b_id, coalesce(a.platform, b.platform) AS platform, a.type, b.lang\n"
                   f"FROM ({a}) AS a\n{kind} JOIN ({b}) AS b ON a.platform = b.platform")
            order = ", ".join(f"{c} {self.nulls()}" for c in ("a_id", "b_id", "platform", "type", "lang"))
            q.sql = sql + f"\nORDER BY {order}\nLIMIT 200"
        else:
            # Against a small VALUES table (a dimension).
            q.tag("values")
            dim = ("(VALUES ('mastodon', 'M', 1), ('bsky', 'B', 2), ('threads', 'T', 3), ('nosuch', 'X', 4))"
                   " AS d(platform, code, rnk)")
            where = self.day_pred(q)
            sql = (f"SELECT d.code, d.rnk, count(n.id) AS n, max(n.batch_row) AS top_row\n"
                   f"FROM {dim}\n{kind} JOIN (SELECT * FROM notifications WHERE {where}) AS n ON n.platform = d.platform\n"
                   f"GROUP BY d.code, d.rnk")
            q.sql = self.finish(q, sql, [Col("code", key=True), Col("rnk", key=True), Col("n"), Col("top_row")],
                                True, 5)

    def shape_semi_anti(self, q):
        """IN / NOT IN / EXISTS / NOT EXISTS subqueries (NULL semantics of NOT IN included)."""
        k = self.pick([0, 1, 2, 3, 3, 4, 4, 5, 6])
        d = self.day()
        t = sql_str(self.pick(TYPE_LITS))
        if k == 0:
            q.tag("in_subquery")
            cond = f"n.post_id IN (SELECT post_id FROM notifications WHERE type = {t} AND {self.day_pred(q)})"
        elif k == 1:
            q.tag("not_in_subquery")
            guard = self.pick(["", " AND post_id IS NOT NULL"])
            cond = f"n.post_id NOT IN (SELECT post_id FROM notifications WHERE type = {t} AND day = DATE '{d}'{guard})"
        elif k == 2:
            q.tag("in_subquery" if self.chance(0.5) else "not_in_subquery")
            neg = "NOT " if "not_in_subquery" in q.tags else ""
            cond = f"n.lang {neg}IN (SELECT lang FROM notifications WHERE platform = {sql_str(self.pick(PLATFORM_LITS))} AND day = DATE '{d}')"
        elif k == 3:
            q.tag("exists")
            cond = (f"EXISTS (SELECT 1 FROM notifications m WHERE m.post_id = n.post_id AND m.type = {t}"
                    + (" AND m.occurred_at > n.occurred_at" if self.chance(0.3) else "") + ")")
        elif k == 4:
            q.tag("not_exists")
            cond = f"NOT EXISTS (SELECT 1 FROM notifications m WHERE m.author_id = n.author_id AND m.day = DATE '{d}' AND m.type = {t})"
        elif k == 5:
            q.tag("in_subquery", "having")
            cond = (f"n.post_id IN (SELECT post_id FROM notifications WHERE day = DATE '{d}' GROUP BY post_id "
                    f"HAVING count(*) > {self.pick([1, 3, 10])})")
        else:
            q.tag("in_subquery")
            cond = f"n.author_id IN (SELECT actor_id FROM notifications WHERE type = {t} AND day = DATE '{d}')"
        outer = f"n.day = DATE '{self.day()}'" if self.chance(0.7) else self.day_pred(q, "n.")
        keys = self.keys(self.pick([0, 1, 1]), LOWCARD_KEYS)
        aggs = [("count(*)", Col("n_rows"))] + self.aggs(q, self.r.randint(0, 2), p="n.", prefix="x")
        q.sql = self.grouped_select(q, keys, aggs, from_sql="notifications AS n", where=f"{outer} AND {cond}", p="n.")

    def shape_scalar_subquery(self, q):
        q.tag("scalar_subquery")
        k = self.r.randrange(5)
        d = self.day()
        if k == 0:
            key = self.pick(LOWCARD_KEYS)
            sql = (f"SELECT {key.at()}, count(*) AS n,\n       (SELECT count(*) FROM notifications WHERE {self.day_pred(q)}) AS total\n"
                   f"FROM notifications\nWHERE day = DATE '{d}'\nGROUP BY {key.at()}")
            q.sql = self.finish(q, sql, [Col(key.alias, key=True), Col("n"), Col("total")], True, key.card)
        elif k == 1:
            q.tag("map")
            q.sql = (f"SELECT count(*) AS n, min(metrics['likes']) AS min_likes\nFROM notifications\n"
                     f"WHERE metrics['likes'] > (SELECT avg(metrics['likes']) FROM notifications WHERE {self.day_pred(q)})")
        elif k == 2:
            q.tag("having")
            key = self.pick(LOWCARD_KEYS)
            sql = (f"SELECT {key.at()}, count(*) AS n\nFROM notifications\nGROUP BY {key.at()}\n"
                   f"HAVING count(*) > (SELECT count(*) FROM notifications\n"
                   f"                   WHERE platform = {sql_str(self.pick(PLATFORM_LITS))} AND day = DATE '{d}')")
            q.sql = self.finish(q, sql, [Col(key.alias, key=True), Col("n")], True, key.card)
        elif k == 3:
            # Correlated, including groups with no match (count 0, max NULL).
            q.tag("correlated")
            fn = self.pick(["count(*)", "max(m.batch_row)", "min(m.occurred_at)", "count(DISTINCT m.lang)"])
            d2 = self.pick(DAYS + NO_DAYS)
            q.sql = (f"SELECT t.platform,\n       (SELECT {fn} FROM notifications m\n"
                     f"        WHERE m.platform = t.platform AND m.day = DATE '{d2}') AS v\n"
                     f"FROM (SELECT DISTINCT platform FROM notifications WHERE day = DATE '{d}' AND day <> DATE '{WIDE_DAY}'\n"
                     "      UNION ALL SELECT 'nosuch' AS platform) AS t")
            q.ordered = True
            q.sql += "\nORDER BY t.platform"
        else:
            q.tag("constant")
            q.sql = (f"SELECT (SELECT count(*) FROM notifications WHERE {self.day_pred(q)}) AS a,\n"
                     f"       (SELECT max(day) FROM notifications WHERE day = DATE '{self.pick(NO_DAYS)}') AS b,\n"
                     f"       (SELECT min(occurred_at) FROM notifications WHERE {self.lowcard_pred(q)}) AS c")

    def shape_cte(self, q):
        q.tag("cte")
        key = self.pick([KEY_BY_ALIAS[a] for a in ("platform", "type", "lang", "producer_id", "lang_or_und")])
        dayf = self.day_pred(q) if self.chance(0.5) else f"day <> DATE '{WIDE_DAY}'"
        daily = (f"daily AS (SELECT day, {key.at()} AS k, count(*) AS n, sum(metrics['likes']) AS likes "
                 f"FROM notifications WHERE {dayf} GROUP BY day, {key.at()})")
        k = self.r.randrange(3)
        if k == 0:
            sql = (f"WITH {daily}\nSELECT k, min(n) AS min_n, max(n) AS max_n, sum(n) AS total, count(*) AS days, "
                   "sum(likes) AS likes\nFROM daily\nGROUP BY k")
            q.sql = self.finish(q, sql, [Col("k", key=True)] + [Col(c) for c in ("min_n", "max_n", "total", "days", "likes")],
                                True, key.card)
        elif k == 1:
            # The CTE referenced twice, joined with itself.
            q.tag("join", "self_join")
            sql = (f"WITH {daily}\nSELECT a.day, a.k, a.n, b.n AS prev_n\nFROM daily a\n"
                   f"LEFT JOIN daily b ON b.k = a.k AND b.day = a.day - INTERVAL '1' DAY")
            q.sql = self.finish(q, sql, [Col("day", key=True), Col("k", key=True), Col("n"), Col("prev_n")], True,
                                12 * min(key.card, 20), order_p=0.6)
            if "INTERVAL" in q.sql:
                # date - interval is a DATE in DataFusion, a TIMESTAMP in DuckDB; both compare
                # equal to the DATE column, which is all this uses.
                q.tag("interval")
        else:
            sql = (f"WITH {daily},\n     totals AS (SELECT k, sum(n) AS n FROM daily GROUP BY k)\n"
                   "SELECT d.k, count(*) AS days_over_avg\nFROM daily d JOIN totals t ON d.k = t.k\n"
                   "WHERE CAST(d.n AS DOUBLE) * 12 > CAST(t.n AS DOUBLE)\nGROUP BY d.k")
            q.tag("join")
            q.sql = self.finish(q, sql, [Col("k", key=True), Col("days_over_avg")], True, key.card)

    def setop_branch(self, q, key):
        agg = self.pick(["count(*)", "sum(batch_row)", "count(DISTINCT post_id)", "max(batch_row)"])
        return (f"SELECT {key.at()} AS k, {agg} AS v FROM notifications WHERE {self.where(q, n=1)} "
                f"GROUP BY {key.at()}")

    def shape_setop(self, q):
        """UNION ALL / UNION / EXCEPT / INTERSECT of aggregates (each branch is a GROUP BY, so
        its rows are distinct, which keeps EXCEPT ALL / INTERSECT ALL to what DataFusion gets
        right, see apache/datafusion#12956)."""
        op = self.pick(["UNION ALL", "UNION", "EXCEPT", "INTERSECT", "EXCEPT ALL", "INTERSECT ALL"])
        q.tag({"UNION ALL": "union_all", "UNION": "union", "EXCEPT": "except", "INTERSECT": "intersect",
               "EXCEPT ALL": "except", "INTERSECT ALL": "intersect"}[op])
        pool = [KEY_BY_ALIAS[a] for a in ("platform", "type", "lang", "producer_id", "lang_or_und", "type_class")]
        k = self.r.randrange(3)
        if k == 0:
            a, b = self.setop_branch(q, self.pick(pool)), self.setop_branch(q, self.pick(pool))
            sql = f"{a}\n{op}\n{b}"
        elif k == 1:
            # Three branches, the first two parenthesized.
            op2 = self.pick(["UNION ALL", "EXCEPT", "INTERSECT", "UNION"])
            branches = [self.setop_branch(q, self.pick(pool)) for _ in range(3)]
            sql = f"({branches[0]}\n {op}\n {branches[1]})\n{op2}\n{branches[2]}"
        else:
            # Distinct values of one string column against another day's.
            col = self.pick(["platform", "lang", "type", "producer_id"])
            d1, d2 = self.day(), self.day()
            sql = (f"SELECT {col} AS k, 0 AS v FROM notifications WHERE day = DATE '{d1}' GROUP BY {col}\n{op}\n"
                   f"SELECT {col} AS k, 0 AS v FROM notifications WHERE day = DATE '{d2}' AND {self.pred(q)} GROUP BY {col}")
        if self.chance(0.4):
            q.tag("subquery")
            sql = f"SELECT k, count(*) AS copies, sum(v) AS v\nFROM ({sql}) AS u\nGROUP BY k"
            cols = [Col("k", key=True), Col("copies"), Col("v")]
            unique = True
        else:
            cols = [Col("k", key=True), Col("v", key=True)]
            unique = False
        q.sql = self.finish(q, sql, cols, unique, 3000)

    def shape_dup_names(self, q):
        """Duplicate output column names: qualified ones run everywhere; unqualified ones are
        refused by DataFusion (dialect rule duplicate_unqualified_names), and Sluice must too."""
        q.tag("dup_names")
        k = self.r.randrange(8)
        d1, d2 = self.pick([d for d in DAYS if d != WIDE_DAY]), self.day()
        if k <= 2:
            key = self.pick([KEY_BY_ALIAS[a] for a in ("platform", "lang", "type", "producer_id")])
            col = key.alias
            agg = self.pick(["count(*)", "min(occurred_at)", "max(batch_row)", "sum(metrics['likes'])"])
            a = f"SELECT {col}, {agg} AS n FROM notifications WHERE day = DATE '{d1}' AND day <> DATE '{WIDE_DAY}' GROUP BY {col}"
            b = f"SELECT {col}, {agg} AS n FROM notifications WHERE day = DATE '{d2}' AND day <> DATE '{WIDE_DAY}' GROUP BY {col}"
            kind = self.pick(["JOIN", "LEFT JOIN", "FULL JOIN"])
            q.tag("join")
            sel = self.pick([f"a.{col}, b.{col}, a.n, b.n", "a.*, b.*"])
            q.sql = f"SELECT {sel}\nFROM ({a}) AS a\n{kind} ({b}) AS b ON a.{col} = b.{col}"
            if self.chance(0.6):
                q.ordered = True
                q.sql += f"\nORDER BY 1 {self.nulls()}, 2 {self.nulls()}, 3 {self.nulls()}, 4 {self.nulls()}"
        elif k == 3:
            q.tag("constant", "join")
            q.sql = ("SELECT *\nFROM (SELECT 1 AS x, 'a' AS y) AS a\n"
                     f"CROSS JOIN (SELECT 2 AS x, count(*) AS y FROM notifications WHERE day = DATE '{d1}') AS b")
        elif k == 4:
            q.tag("join")
            q.sql = (f"SELECT a.m, b.m\nFROM (SELECT min(occurred_at) AS m FROM notifications WHERE day = DATE '{d1}') AS a\n"
                     f"CROSS JOIN (SELECT max(received_at) AS m FROM notifications WHERE day = DATE '{d2}') AS b")
        elif k == 5:
            q.tag("subquery")
            sub = "(SELECT DISTINCT platform FROM notifications WHERE day = DATE '{}' AND batch_row < 50)"
            q.sql = (f"SELECT t.platform, s.platform\nFROM {sub.format(d1)} AS t\n"
                     f"JOIN {sub.format(d2)} AS s ON t.platform = s.platform")
        else:
            q.datafusion_only("duplicate_unqualified_names")
            q.sql = self.pick([
                "SELECT 1 AS x, 2 AS x",
                f"SELECT platform, platform\nFROM notifications\nWHERE day = DATE '{d1}'\nGROUP BY platform",
                f"SELECT count(*) AS n, sum(batch_row) AS n\nFROM notifications\nWHERE day = DATE '{d1}'",
            ])

    def shape_empty(self, q):
        """Queries whose input is empty: filters matching nothing, pruned-away days."""
        q.tag("empty")
        cond = self.pick([f"day = DATE '{self.pick(NO_DAYS)}'", "day < DATE '2026-11-10'", "day > DATE '2026-11-21'",
                          "platform = 'nosuch'", "1 = 0", "FALSE", "occurred_at > TIMESTAMP '2031-01-01 00:00:00'",
                          f"post_id = 'nosuch' AND day = DATE '{self.day()}'", f"lang IS NOT NULL AND day = DATE '{NULL_DAY}'",
                          f"cardinality(tags) > 0 AND day = DATE '{NULL_DAY}'"])
        if "day" in cond:
            q.tag("day_filter")
            if any(d in cond for d in NO_DAYS) or "<" in cond or ">" in cond:
                q.tag("pruned_day")
        k = self.r.randrange(5)
        if k <= 1:
            aggs = self.aggs(q, self.r.randint(2, 5))
            q.sql = self.grouped_select(q, [], aggs, where=cond)
        elif k == 2:
            keys = self.keys(self.pick([1, 2]), LOWCARD_KEYS + [KEY_BY_ALIAS["day"]])
            q.sql = self.grouped_select(q, keys, self.aggs(q, self.r.randint(1, 3)), where=cond)
        elif k == 3:
            q.tag("having")
            key = self.pick(LOWCARD_KEYS)
            q.sql = (f"SELECT {key.at()}, count(*) AS n\nFROM notifications\nGROUP BY {key.at()}\n"
                     f"HAVING count(*) > 100000000")
        else:
            q.tag("join", "join_left")
            q.sql = (f"SELECT a.platform, count(b.id) AS n\nFROM (SELECT DISTINCT platform FROM notifications WHERE day = DATE '{self.day()}' AND day <> DATE '{WIDE_DAY}') AS a\n"
                     f"LEFT JOIN (SELECT * FROM notifications WHERE {cond}) AS b ON a.platform = b.platform\nGROUP BY a.platform")

    def shape_constant(self, q):
        """Constant-only queries (no table, or VALUES)."""
        q.tag("constant")
        exprs = [
            ("1 + 2", "int"), ("'x' || 'y'", "string_fn"), ("CAST(7 AS DOUBLE) / 2", "arith"), ("7 % 3", "arith"),
            ("-7 % 3", "arith"), ("CASE WHEN 1 < 2 THEN 'a' ELSE 'b' END", "case"), ("coalesce(NULL, 'z')", "coalesce"),
            ("nullif(3, 3)", "nullif"), ("length('日本語')", "string_fn"), ("lower('ÀBÇ')", "string_fn"),
            ("substr('hello', 2, 3)", "string_fn"), ("DATE '2026-11-15'", "date"),
            ("TIMESTAMP '2026-11-15 12:34:56.5'", "timestamp"),
            ("date_trunc('hour', TIMESTAMP '2026-11-15 12:34:56')", "date_trunc"),
            ("'a%' LIKE 'a\\%' ESCAPE '\\'", "like_escape"), ("CAST('42' AS BIGINT)", "cast"), ("abs(-5)", "arith"),
            ("greatest(1, 5, 3)", "arith"), ("least(2, NULL, 4)", "arith"), ("round(CAST(2.5 AS DOUBLE))", "arith"),
            ("CAST(NULL AS BIGINT) + 1", "arith"), ("TRUE AND NULL", "bool"), ("'é' < 'f'", "string_fn"),
            ("replace('a-b-c', '-', '+')", "string_fn"), ("strpos('日本語', '語')", "string_fn"),
            ("starts_with('notification', 'noti')", "starts_with"), ("trim('  x  ')", "string_fn"),
            ("CAST(12 AS DECIMAL(12,2)) * CAST(1.25 AS DECIMAL(4,2))", "decimal"),
            ("CAST(date_part('dow', DATE '2026-11-15') AS BIGINT)", "date_part"),
            ("'straße' ILIKE 'STRA%'", "ilike"),
        ]
        k = self.r.randrange(3)
        if k <= 1:
            chosen = self.sample(exprs, self.r.randint(2, 6))
            for _, t in chosen:
                q.tag(t)
            if any(t == "arith" and "/" in e for e, t in chosen):
                q.floats(1e-9)
            q.sql = "SELECT " + ",\n       ".join(f"{e} AS c{i + 1}" for i, (e, _) in enumerate(chosen))
            if k == 1 and self.chance(0.5):
                q.sql += "\nWHERE 1 = " + self.pick(["1", "0"])
        else:
            q.tag("values")
            vals = ", ".join(f"({self.r.randrange(10)}, {sql_str(self.pick(['a', 'b', 'é', '']))})" for _ in range(self.r.randint(2, 6)))
            sql = f"SELECT y, sum(x) AS s, count(*) AS n, min(x) AS lo\nFROM (VALUES {vals}) AS t(x, y)\nGROUP BY y"
            q.sql = self.finish(q, sql, [Col("y", key=True), Col("s"), Col("n"), Col("lo")], True, 5, order_p=0.6)

    def shape_limit_offset(self, q):
        """LIMIT/OFFSET under an ORDER BY over every output column (total)."""
        q.tag("limit")
        q.ordered = True
        cols = ["id"] + self.sample(["platform", "type", "occurred_at", "received_at", "lang", "post_id",
                                     "batch_row", "day", "text"], self.r.randint(1, 4))
        extra = self.pick(["", ", metrics['likes'] AS likes", ", length(text) AS text_len"])
        if "metrics" in extra:
            q.tag("map")
        aliases = cols + ([extra.split(" AS ")[1]] if extra else [])
        where = self.where(q, n=1) if self.chance(0.7) else f"day = DATE '{self.day()}'"
        order = ", ".join(f"{c}{self.pick(['', ' DESC'])} {self.nulls()}" for c in
                          self.sample(aliases, len(aliases)))
        sql = f"SELECT {', '.join(cols)}{extra}\nFROM notifications\nWHERE {where}\nORDER BY {order}\nLIMIT {self.pick([1, 5, 10, 50])}"
        if self.chance(0.5):
            q.tag("offset")
            sql += f" OFFSET {self.pick([0, 1, 3, 10, 100000])}"
        q.sql = sql

    def scalar_fn_expr(self, q):
        """A row-level function expression of both engines: (sql, is_float)."""
        s = self.pick(["text", "lang", "platform", "attributes", "post_id", "type"])
        r = self.r
        table = [
            (lambda: f"lower({s})", "string_fn"),
            (lambda: f"upper({self.pick(['platform', 'type', 'lang', 'producer_id'])})", "string_fn"),
            (lambda: f"length({s})", "string_fn"),
            (lambda: f"character_length({s})", "string_fn"),
            (lambda: f"substr({s}, {r.randint(1, 4)}, {r.randint(1, 6)})", "string_fn"),
            (lambda: f"left({s}, {r.randint(1, 5)})", "string_fn"),
            (lambda: f"right({s}, {r.randint(1, 5)})", "string_fn"),
            (lambda: f"{s} || '-' || coalesce(lang, '?')", "string_fn"),
            (lambda: f"concat({s}, '/', type)", "string_fn"),
            (lambda: f"replace({s}, 'a', 'A')", "string_fn"),
            (lambda: f"strpos({s}, {sql_str(self.pick(['a', 'é', '%', 'post', '本']))})", "string_fn"),
            (lambda: f"starts_with({s}, {sql_str(self.pick(['p', 'po', 'w', '']))})", "starts_with"),
            (lambda: f"trim({s})", "string_fn"),
            (lambda: f"reverse({s})", "string_fn"),
            (lambda: "lpad(coalesce(lang, ''), 4, '*')", "string_fn"),
            (lambda: f"split_part({s}, {sql_str(self.pick(SPLIT_SEPARATORS))}, {r.randint(1, 3)})", "string_fn"),
            (lambda: f"coalesce({s}, 'none')", "coalesce"),
            (lambda: f"nullif({s}, '')", "nullif"),
            (lambda: f"CASE WHEN {self.like_pred(q)} THEN 'yes' WHEN {s} IS NULL THEN NULL ELSE 'no' END", "case"),
            (lambda: f"CAST(date_part({sql_str(self.pick(DATE_PARTS))}, occurred_at) AS BIGINT)", "date_part"),
            (lambda: "batch_row * 2 + 1", "arith"),
            (lambda: "CAST(batch_row AS BIGINT) * batch_sequence", "arith"),
            (lambda: "greatest(metrics['likes'], metrics['shares'])", "arith"),
            (lambda: "CAST(metrics['likes'] AS DOUBLE) / CAST(batch_row + 1 AS DOUBLE)", "arith"),
            (lambda: "CAST(floor(CAST(batch_row AS DOUBLE) / 7) AS BIGINT)", "cast"),
            (lambda: "CAST(occurred_at AS DATE)", "cast"),
        ]
        make, t = self.pick(table)
        sql = make()
        q.tag(t)
        is_float = "AS DOUBLE) /" in sql and "floor" not in sql
        if is_float:
            q.floats(1e-9)
        return sql, is_float

    def shape_scalar_fn(self, q):
        """CASE/COALESCE/NULLIF, string functions, arithmetic, date_part over a few rows, or as
        group keys."""
        if self.chance(0.6):
            exprs = [self.scalar_fn_expr(q) for _ in range(self.r.randint(2, 5))]
            items = ["id"] + [f"{e} AS f{i + 1}" for i, (e, _) in enumerate(exprs)]
            cols = [Col("id", key=True)] + [Col(f"f{i + 1}", is_float=f) for i, (_, f) in enumerate(exprs)]
            q.ordered = True
            q.tag("limit")
            order = ", ".join([f"{c.alias} {self.nulls()}" for c in cols if not c.is_float]
                              + [f"{c.alias} {self.nulls()}" for c in cols if c.is_float])
            q.sql = ("SELECT " + ",\n       ".join(items) + f"\nFROM notifications\n"
                     f"WHERE day = DATE '{self.day()}' AND batch_row < {self.pick([5, 20, 50])}\n"
                     f"ORDER BY {order}\nLIMIT 100")
        else:
            e, f = self.scalar_fn_expr(q)
            while f:
                e, f = self.scalar_fn_expr(q)
            key = Key(e, "v", 5000, nullable=True)
            aggs = [("count(*)", Col("n"))]
            q.sql = self.grouped_select(q, [key], aggs, where=self.day_pred(q) if self.chance(0.5) else None)

    def shape_rows(self, q):
        """Whole rows (lists, maps, JSON text, timestamps) under a total order."""
        q.tag("list", "map")
        q.ordered = True
        d = self.day()
        q.sql = (f"SELECT id, platform, type, occurred_at, received_at, post_id, text, lang, tags, metrics, attributes, day\n"
                 f"FROM notifications\nWHERE day = DATE '{d}' AND batch_row < {self.pick([2, 5])}"
                 + (f" AND {self.pred(q)}" if self.chance(0.4) else "")
                 + "\nORDER BY id, producer_id, batch_sequence, batch_row\nLIMIT 30")

    def shape_having(self, q):
        keys = self.keys(self.pick([1, 1, 2]), LOWCARD_KEYS + [KEY_BY_ALIAS[a] for a in ("day", "post_id", "author_id")])
        aggs = self.aggs(q, self.r.randint(1, 3))
        q.sql = self.grouped_select(q, keys, aggs, where=self.where(q, n=1) if self.chance(0.5) else None,
                                    having=self.having(q) + (f" AND {self.having(q)}" if self.chance(0.3) else ""))


# Shape name -> weight (how many of each in a deck of sum(weights) queries; the deck is
# shuffled and dealt again until --count is reached, so every shape appears in any run of at
# least that many queries).
SHAPES = {
    "agg": 8, "log_count": 4, "null_count": 4, "pivot": 5, "lowcard_group": 4, "map_lookup": 3,
    "like": 4, "date_trunc": 3, "approx_percentile": 2, "unnest": 3, "grouping_sets": 3,
    "having": 2, "window": 3, "join": 4, "semi_anti": 3, "scalar_subquery": 2, "cte": 2,
    "setop": 3, "dup_names": 2, "empty": 2, "constant": 2, "limit_offset": 2, "distinct": 2,
    "scalar_fn": 3, "rows": 1,
}


def generate(seed, count):
    g = Gen(seed)
    deck = []
    out = []
    for i in range(count):
        if not deck:
            deck = [s for s, w in SHAPES.items() for _ in range(w)]
            g.r.shuffle(deck)
        shape = deck.pop()
        q = Query(shape)
        getattr(g, f"shape_{shape}")(q)
        out.append((f"q{i + 1:05d}_{shape}", q))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--out", required=True)
    p.add_argument("--stats", action="store_true", help="print the number of queries per shape tag")
    args = p.parse_args(argv)
    queries = generate(args.seed, args.count)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(f"-- Generated by tests/sqlgen.py --seed {args.seed} --count {args.count}; see tests/differential.py.\n\n")
        for name, q in queries:
            f.write(q.render(name) + "\n")
    if args.stats:
        counts = {}
        for _, q in queries:
            for t in q.tags:
                counts[t] = counts.get(t, 0) + 1
        for t in sorted(counts):
            print(f"{t:<24} {counts[t]:>5}", file=sys.stderr)
    print(f"sqlgen: {len(queries)} queries (seed {args.seed}) -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
