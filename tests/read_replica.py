"""Reads Sluice's replica with the Python `deltalake` package (delta-rs, not Sluice) and prints
its counts as JSON: total, distinct (platform, id), by platform and by day."""

import json
import sys

import pyarrow.compute as pc
from deltalake import DeltaTable

uri, options = sys.argv[1], json.loads(sys.argv[2])
table = DeltaTable(uri, storage_options=options).to_pyarrow_table(columns=["platform", "id", "day"])
keys = pc.binary_join_element_wise(table["platform"], table["id"], "\x1f")
by_platform = table.group_by("platform").aggregate([("id", "count")])
by_day = table.group_by("day").aggregate([("id", "count")])
print(json.dumps({
    "total": table.num_rows,
    "distinct": len(pc.unique(keys)),
    "platforms": {p: n for p, n in zip(by_platform["platform"].to_pylist(), by_platform["id_count"].to_pylist())},
    "days": {str(d): n for d, n in zip(by_day["day"].to_pylist(), by_day["id_count"].to_pylist())},
}, sort_keys=True))
