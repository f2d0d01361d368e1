#!/usr/bin/env python3
"""Flight SQL clients against a Sluice query handler (tests/it/flight_sql.rs runs this).

    python3 tests/flight_sql.py suite  --uri grpc://HOST:PORT --key KEY --suite tests/analyst_suite.sql --out flight.json
    python3 tests/flight_sql.py checks --uri grpc://HOST:PORT --key KEY --writer-key KEY --platform P

`suite` runs every analyst suite query through ADBC (adbc-driver-flightsql) and writes the
answers as `analyst_suite.py compare` reads them. `checks` prints one JSON object of what a
generic client sees: prepared statements with parameters, the catalog calls, errors, and the
same through plain pyarrow.flight (bearer header, Basic handshake, no key, a key without the
read scope).
"""
import argparse
import json
import os
import sys

import adbc_driver_flightsql
import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow.flight as flight

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from analyst_suite import normalize, parse_suite  # noqa: E402


def connect(uri, key):
    return flight_sql.connect(
        uri,
        db_kwargs={adbc_driver_flightsql.DatabaseOptions.AUTHORIZATION_HEADER.value: f"Bearer {key}"},
        autocommit=True,
    )


def rows_of(table):
    columns = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [[normalize(v) for v in row] for row in zip(*columns)] if columns else []


def cmd_suite(args):
    results = {}
    with connect(args.uri, args.key) as conn, conn.cursor() as cur:
        for name, sql, _ in parse_suite(args.suite):
            cur.execute(sql)
            table = cur.fetch_arrow_table()
            results[name] = {"columns": table.column_names, "rows": rows_of(table)}
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(results, f)
    print(f"{len(results)} queries through Flight SQL")


def error_of(call):
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the type and words are what the test checks
        return {"type": type(e).__name__, "message": str(e)}
    return None


def any_command(name, query):
    """A Flight SQL command as protobuf `Any`, by hand: field 1 (string) of the command, packed."""

    def field(number, payload):
        out, size = bytearray([number << 3 | 2]), len(payload)
        while size >= 0x80:
            out.append(size & 0x7F | 0x80)
            size >>= 7
        out.append(size)
        return bytes(out) + payload

    command = field(1, query.encode())
    return field(1, f"type.googleapis.com/arrow.flight.protocol.sql.{name}".encode()) + field(2, command)


def flight_query(client, sql, headers):
    options = flight.FlightCallOptions(headers=headers)
    descriptor = flight.FlightDescriptor.for_command(any_command("CommandStatementQuery", sql))
    info = client.get_flight_info(descriptor, options)
    table = client.do_get(info.endpoints[0].ticket, options).read_all()
    return {"columns": table.column_names, "rows": rows_of(table), "total_records": info.total_records}


def cmd_checks(args):
    out = {}
    count_sql = "SELECT count(*) AS n FROM notifications WHERE platform = {}"
    with connect(args.uri, args.key) as conn, conn.cursor() as cur:
        cur.execute(count_sql.format("?"), (args.platform,))
        out["prepared_count"] = cur.fetchone()[0]
        # The same prepared statement again with another value, and numbered placeholders.
        cur.execute(count_sql.format("?"), ("no-such-platform",))
        out["prepared_count_other"] = cur.fetchone()[0]
        # Preparing alone describes the parameters, as planning on the replica infers them.
        parameters = cur.adbc_prepare("SELECT count(*) AS n FROM notifications WHERE platform = ? AND received_at > $2")
        out["prepared_parameters"] = [[f.name, str(f.type)] for f in parameters] if parameters is not None else None
        cur.execute("SELECT $2 AS b, $1 AS a, count(*) AS n FROM notifications WHERE platform = $1", (args.platform, 7))
        out["numbered"] = [normalize(v) for v in cur.fetchone()]
        cur.execute(count_sql.format(f"'{args.platform}'"))
        out["literal_count"] = cur.fetchone()[0]
        out["bad_sql"] = error_of(lambda: cur.execute("SELECT no_such_column FROM notifications"))
        out["write"] = error_of(lambda: cur.execute("DELETE FROM notifications"))
        out["unbound"] = error_of(lambda: cur.execute(count_sql.format("?")))

        info = conn.adbc_get_info()
        out["vendor_name"] = info.get("vendor_name")
        objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
        out["objects"] = [
            {
                "catalog": catalog["catalog_name"],
                "schemas": [
                    {
                        "schema": schema["db_schema_name"],
                        "tables": [
                            {
                                "table": table["table_name"],
                                "type": table["table_type"],
                                "columns": [c["column_name"] for c in table["table_columns"] or []],
                            }
                            for table in schema["db_schema_tables"] or []
                        ],
                    }
                    for schema in catalog["catalog_db_schemas"] or []
                ],
            }
            for catalog in objects
        ]
        out["table_schema"] = conn.adbc_get_table_schema("notifications").names
        out["table_types"] = conn.adbc_get_table_types()

    out["no_key"] = error_of(lambda: connect(args.uri, "sk_not_a_key").cursor().execute("SELECT 1"))
    out["writer_key"] = error_of(lambda: connect(args.uri, args.writer_key).cursor().execute("SELECT 1"))

    client = flight.FlightClient(args.uri)
    sql = "SELECT platform, count(*) AS n FROM notifications GROUP BY platform ORDER BY platform"
    out["pyarrow_bearer"] = flight_query(client, sql, [(b"authorization", f"Bearer {args.key}".encode())])
    # Basic credentials with the key as the password: the handshake answers the bearer header.
    header = client.authenticate_basic_token(b"analyst", args.key.encode())
    out["pyarrow_basic"] = flight_query(client, sql, [header])
    out["pyarrow_no_key"] = error_of(lambda: flight_query(client, sql, []))
    out["pyarrow_writer_key"] = error_of(
        lambda: flight_query(client, sql, [(b"authorization", f"Bearer {args.writer_key}".encode())])
    )
    out["pyarrow_basic_wrong"] = error_of(lambda: client.authenticate_basic_token(b"analyst", b"sk_wrong"))
    out["adbc_version"] = adbc_driver_manager.__version__
    print(json.dumps(out, default=str))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite")
    s.add_argument("--uri", required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--suite", required=True)
    s.add_argument("--out", required=True)
    c = sub.add_parser("checks")
    c.add_argument("--uri", required=True)
    c.add_argument("--key", required=True)
    c.add_argument("--writer-key", required=True)
    c.add_argument("--platform", required=True)
    args = p.parse_args(argv)
    return {"suite": cmd_suite, "checks": cmd_checks}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
