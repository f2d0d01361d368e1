//! Every series Sluice records, named and described once. Labels are bounded sets (a route
//! template, a status, an outcome, a color), never a value a caller chooses.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

// REST services (service, route, method, status).
pub const HTTP_REQUESTS: &str = "sluice_http_requests_total";
pub const HTTP_REQUEST_SECONDS: &str = "sluice_http_request_seconds";
pub const HTTP_REJECTED: &str = "sluice_http_rejected_total";

// Ingest API.
pub const INGEST_NOTIFICATIONS: &str = "sluice_ingest_notifications_total";
pub const INGEST_REQUEST_NOTIFICATIONS: &str = "sluice_ingest_request_notifications";
pub const INGEST_REQUEST_BYTES: &str = "sluice_ingest_request_bytes";
pub const INGEST_ACK_SECONDS: &str = "sluice_ingest_ack_seconds";
pub const MEMORY_ENTRIES: &str = "sluice_memory_entries";
pub const MEMORY_USED_BYTES: &str = "sluice_memory_used_bytes";
pub const MEMORY_BUDGET_BYTES: &str = "sluice_memory_budget_bytes";
pub const MEMORY_EVICTED: &str = "sluice_memory_evicted_total";
pub const BATCHES: &str = "sluice_batches_total";
pub const BATCH_ROWS: &str = "sluice_batch_rows";
pub const BATCH_BYTES: &str = "sluice_batch_bytes";
pub const APPEND_SECONDS: &str = "sluice_append_seconds";
pub const APPEND_RETRIES: &str = "sluice_append_retries_total";
pub const BATCH_IN_FLIGHT_SECONDS: &str = "sluice_batch_in_flight_seconds";
pub const DEAD_LETTERED_ROWS: &str = "sluice_dead_lettered_rows_total";
pub const DURABLE_TO_GREEN_SECONDS: &str = "sluice_durable_to_green_seconds";

// Publisher and the master store.
pub const SEGMENTS_WRITTEN: &str = "sluice_segments_written_total";
pub const SEGMENT_BYTES: &str = "sluice_segment_bytes";
pub const SEGMENT_WRITE_SECONDS: &str = "sluice_segment_write_seconds";
pub const DEAD_LETTERS: &str = "sluice_dead_letters_total";
pub const STORE_REQUESTS: &str = "sluice_object_store_requests_total";
pub const STORE_REQUEST_SECONDS: &str = "sluice_object_store_request_seconds";

// Consumer.
pub const REPLICATION_PENDING_SEGMENTS: &str = "sluice_replication_pending_segments";
pub const REPLICATION_LAG_SECONDS: &str = "sluice_replication_lag_seconds";
pub const REPLICA_COMMIT_SECONDS: &str = "sluice_replica_commit_seconds";
pub const REPLICATED_ROWS: &str = "sluice_replicated_rows_total";
pub const REPLICATED_SEGMENTS: &str = "sluice_replicated_segments_total";
pub const REPLICA_DUPLICATES_DROPPED: &str = "sluice_replica_duplicates_dropped_total";
pub const REPLICATION_ROUND_FAILURES: &str = "sluice_replication_round_failures_total";
pub const REPLICA_VERSION: &str = "sluice_replica_version";
pub const LEASE_HELD: &str = "sluice_consumer_lease_held";
pub const LEASE_EPOCH: &str = "sluice_consumer_lease_epoch";

// Query handler.
pub const QUERY_CACHE: &str = "sluice_query_cache_total";
pub const QUERY_CACHE_BYTES: &str = "sluice_query_cache_bytes";
pub const QUERIES_WAITING: &str = "sluice_queries_waiting";
pub const QUERIES_RUNNING: &str = "sluice_queries_running";
pub const QUERY_SECONDS: &str = "sluice_query_seconds";
pub const QUERY_TIMEOUTS: &str = "sluice_query_timeouts_total";
pub const QUERY_WORKERS: &str = "sluice_query_workers";
pub const QUERIES_DISTRIBUTED: &str = "sluice_queries_distributed_total";
pub const QUERY_WORKER_STREAMS: &str = "sluice_query_worker_streams";

/// A series: its name, unit and HELP text.
type Series = (&'static str, Unit, &'static str);

use Unit::{Bytes, Count, Seconds};

const COUNTERS: &[Series] = &[
    (
        HTTP_REQUESTS,
        Count,
        "REST requests answered, by service, route template, method and status",
    ),
    (
        HTTP_REJECTED,
        Count,
        "REST requests refused (4xx/5xx), by service and reason",
    ),
    (
        INGEST_NOTIFICATIONS,
        Count,
        "Notifications posted, by outcome: accepted, duplicate, rejected",
    ),
    (
        MEMORY_EVICTED,
        Count,
        "Shared-memory entries evicted (turned red)",
    ),
    (
        BATCHES,
        Count,
        "Batches stored in the master store (turned blue)",
    ),
    (
        APPEND_RETRIES,
        Count,
        "Append attempts that failed and were retried, by gRPC code",
    ),
    (
        DEAD_LETTERED_ROWS,
        Count,
        "Notifications of batches the publisher refused for good, kept as dead letters",
    ),
    (
        SEGMENTS_WRITTEN,
        Count,
        "Master segment writes, by result: created, already_present, conflict, failed",
    ),
    (
        DEAD_LETTERS,
        Count,
        "Dead letters written, by kind: refused (publisher), quarantined (consumer)",
    ),
    (
        STORE_REQUESTS,
        Count,
        "Object store requests, by data (master: segments, dead letters, lease; replica: the query handler's Parquet reads), operation and outcome",
    ),
    (REPLICATED_ROWS, Count, "Rows committed to the replica"),
    (
        REPLICATED_SEGMENTS,
        Count,
        "Master segments committed to the replica",
    ),
    (
        REPLICA_DUPLICATES_DROPPED,
        Count,
        "Rows dropped because the replica already held their (platform, id)",
    ),
    (
        REPLICATION_ROUND_FAILURES,
        Count,
        "Replication rounds that failed and were retried",
    ),
    (
        QUERY_CACHE,
        Count,
        "Queries answered from the result cache (hit) or run (miss)",
    ),
    (QUERY_TIMEOUTS, Count, "Queries stopped by their time limit"),
    (
        QUERIES_DISTRIBUTED,
        Count,
        "Queries this handler ran across several query handlers, by outcome",
    ),
];

const GAUGES: &[Series] = &[
    (
        MEMORY_ENTRIES,
        Count,
        "Shared-memory entries, by color: gray, blue, green",
    ),
    (MEMORY_USED_BYTES, Bytes, "Bytes of shared memory in use"),
    (MEMORY_BUDGET_BYTES, Bytes, "Bytes shared memory may hold"),
    (
        BATCH_IN_FLIGHT_SECONDS,
        Seconds,
        "How long the batch now being appended has been trying (0 when none)",
    ),
    (
        REPLICATION_PENDING_SEGMENTS,
        Count,
        "Master segments the consumer knows of and has not replicated",
    ),
    (
        REPLICATION_LAG_SECONDS,
        Seconds,
        "How long the oldest pending segment has waited",
    ),
    (
        REPLICA_VERSION,
        Count,
        "The replica table's version, as the consumer last committed or loaded it",
    ),
    (
        LEASE_HELD,
        Count,
        "1 while this consumer holds the committer lease",
    ),
    (
        LEASE_EPOCH,
        Count,
        "The epoch of the lease this consumer holds or last held",
    ),
    (QUERY_CACHE_BYTES, Bytes, "Bytes of cached query results"),
    (
        QUERIES_WAITING,
        Count,
        "Queries waiting for a slot (yellow)",
    ),
    (QUERIES_RUNNING, Count, "Queries running (yellow)"),
    (
        QUERY_WORKERS,
        Count,
        "Query handlers live for distributed queries, this one included",
    ),
    (
        QUERY_WORKER_STREAMS,
        Count,
        "Answer streams of tasks this handler runs for other handlers' queries, now",
    ),
];

const HISTOGRAMS: &[Series] = &[
    (
        HTTP_REQUEST_SECONDS,
        Seconds,
        "REST request durations, by service, route template and method",
    ),
    (
        INGEST_REQUEST_NOTIFICATIONS,
        Count,
        "Notifications per POST",
    ),
    (INGEST_REQUEST_BYTES, Bytes, "Body bytes per POST"),
    (
        INGEST_ACK_SECONDS,
        Seconds,
        "Time from a POST's arrival to its answer, by ack level",
    ),
    (BATCH_ROWS, Count, "Rows per stored batch"),
    (BATCH_BYTES, Bytes, "Approximate bytes per stored batch"),
    (
        APPEND_SECONDS,
        Seconds,
        "Time to store a batch, retries included",
    ),
    (
        DURABLE_TO_GREEN_SECONDS,
        Seconds,
        "Time from a batch's durable ack to its replication (green)",
    ),
    (SEGMENT_BYTES, Bytes, "Bytes per master segment written"),
    (
        SEGMENT_WRITE_SECONDS,
        Seconds,
        "Time to encode and write one master segment",
    ),
    (
        STORE_REQUEST_SECONDS,
        Seconds,
        "Object store request durations, by data (master, replica) and operation",
    ),
    (
        REPLICA_COMMIT_SECONDS,
        Seconds,
        "Time of one replication round: read segments, write Parquet, commit",
    ),
    (QUERY_SECONDS, Seconds, "Query durations, by outcome"),
];

/// Every series name, for checks of what refers to them (the Grafana dashboard).
pub fn all() -> impl Iterator<Item = &'static str> {
    COUNTERS
        .iter()
        .chain(GAUGES)
        .chain(HISTOGRAMS)
        .map(|(name, _, _)| *name)
}

/// Gives every series its HELP line and unit.
pub(crate) fn describe() {
    for (name, unit, help) in COUNTERS {
        describe_counter!(*name, *unit, *help);
    }
    for (name, unit, help) in GAUGES {
        describe_gauge!(*name, *unit, *help);
    }
    for (name, unit, help) in HISTOGRAMS {
        describe_histogram!(*name, *unit, *help);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn the_grafana_dashboard_plots_only_series_that_exist_and_every_one_of_them() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../infra/grafana/sluice.json")).unwrap();
        let known: BTreeSet<&str> = super::all().collect();
        let mut plotted = BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("sluice_") {
                        continue;
                    }
                    let series = ["_bucket", "_count", "_sum"]
                        .iter()
                        .find_map(|suffix| word.strip_suffix(suffix))
                        .filter(|base| known.contains(base))
                        .unwrap_or(word);
                    assert!(known.contains(series), "{expr}: no series {word}");
                    plotted.insert(series);
                }
            }
        }
        let unplotted: Vec<&&str> = known.difference(&plotted).collect();
        assert!(unplotted.is_empty(), "not on the dashboard: {unplotted:?}");
    }
}
