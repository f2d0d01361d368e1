//! The command line. Every flag has an environment variable, `SLUICE_<FLAG>`.

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Ingest social-network notifications into object storage"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; `all` carries every service's settings"
)]
pub enum Command {
    /// Every service in one process, talking gRPC over loopback as they would across hosts.
    All {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        publisher: PublisherAddr,
        #[command(flatten)]
        consumer_addr: ConsumerAddr,
        #[command(flatten)]
        query_handler_addr: QueryHandlerAddr,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        consumer: sluice_consumer::Config,
        #[command(flatten)]
        query_handler: sluice_query_handler::Config,
        #[command(flatten)]
        query_api: QueryApiArgs,
        #[command(flatten)]
        auth: sluice_auth::AuthArgs,
    },
    /// The REST ingest API with its shared memory and batcher.
    #[command(name = "ingest-api")]
    IngestApi {
        #[command(flatten)]
        publisher: PublisherAddr,
        #[command(flatten)]
        consumer_addr: ConsumerAddr,
        #[command(flatten)]
        query_handler_addr: QueryHandlerAddr,
        #[command(flatten)]
        ingest: IngestArgs,
        #[command(flatten)]
        auth: sluice_auth::AuthArgs,
    },
    /// The gRPC query handler: read-only SQL over the replica with DataFusion, and the result
    /// cache.
    #[command(name = "query-handler")]
    QueryHandler {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        query_handler_addr: QueryHandlerAddr,
        /// Where the replica table lives inside the storage.
        #[arg(long, env = "SLUICE_REPLICA_PATH", default_value = sluice_consumer::replica::DEFAULT_REPLICA_PATH)]
        replica_path: String,
        #[command(flatten)]
        query_handler: sluice_query_handler::Config,
        #[command(flatten)]
        metrics: MetricsAddr,
        /// The analysts' API keys open Flight SQL on this port (read scope); without keys it
        /// is not served.
        #[command(flatten)]
        auth: sluice_auth::AuthArgs,
    },
    /// The REST query API: SQL, query states, posts' state and audit trail.
    #[command(name = "query-api")]
    QueryApi {
        #[command(flatten)]
        query_handler_addr: QueryHandlerAddr,
        #[command(flatten)]
        query_api: QueryApiArgs,
        #[command(flatten)]
        auth: sluice_auth::AuthArgs,
    },
    /// The gRPC publisher that writes batches to the master store.
    Publisher {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        publisher: PublisherAddr,
        #[command(flatten)]
        consumer_addr: ConsumerAddr,
        #[command(flatten)]
        metrics: MetricsAddr,
        #[command(flatten)]
        cluster: sluice_auth::ClusterArgs,
    },
    /// The gRPC consumer that replicates master segments into the Parquet replica.
    Consumer {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        consumer_addr: ConsumerAddr,
        #[command(flatten)]
        consumer: sluice_consumer::Config,
        #[command(flatten)]
        metrics: MetricsAddr,
        #[command(flatten)]
        cluster: sluice_auth::ClusterArgs,
    },
    /// Compacts the replica's closed days (rewriting them at the archival zstd level) and
    /// vacuums it once, on every core, then exits. The consumer does the same every
    /// --maintenance-interval-secs, one day at a time.
    Maintain {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        consumer: sluice_consumer::Config,
    },
    /// Rebuilds a replica from the master store alone, into a new table, then exits.
    Replay {
        #[command(flatten)]
        storage: StorageArgs,
        /// The new table's path inside the storage, e.g. replica-rebuilt.
        #[arg(long, env = "SLUICE_REPLAY_TO")]
        to: String,
        #[command(flatten)]
        consumer: sluice_consumer::Config,
    },
    /// Makes a new API key: prints the key (give it to the client; it is not kept anywhere)
    /// and the line for the keys file, which holds only the key's hash.
    Key {
        /// The key's name, as logs and refusals show it.
        #[arg(long)]
        name: String,
        /// What it may do: write:<platform>, write:*, read, admin (comma-separated or repeated).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
}

#[derive(Debug, Clone, Args)]
pub struct StorageArgs {
    /// Where data lives: file://<dir> (a local directory) or s3://<bucket>[/<prefix>]. S3 is
    /// configured by AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION.
    #[arg(long, env = "SLUICE_STORAGE", default_value = "file://./data")]
    pub storage: String,
}

#[derive(Debug, Clone, Args)]
pub struct MetricsAddr {
    /// Where this gRPC service serves `GET /metrics` (Prometheus text) over HTTP, e.g.
    /// 0.0.0.0:9090; none when unset. The REST services serve /metrics on their own port.
    #[arg(long, env = "SLUICE_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct PublisherAddr {
    /// The publisher's gRPC address: where `publisher` listens and where `ingest-api` sends
    /// its batches.
    #[arg(long, env = "SLUICE_PUBLISHER_ADDR", default_value = "127.0.0.1:50051")]
    pub publisher_addr: String,
}

#[derive(Debug, Clone, Args)]
pub struct ConsumerAddr {
    /// The consumer's gRPC address: where `consumer` listens, where publishers announce new
    /// segments and where ingest APIs ask which batches are in the replica.
    #[arg(long, env = "SLUICE_CONSUMER_ADDR", default_value = "127.0.0.1:50052")]
    pub consumer_addr: String,
}

#[derive(Debug, Clone, Args)]
pub struct QueryHandlerAddr {
    /// The query handler's gRPC address: where `query-handler` listens, where query APIs send
    /// SQL and where ingest APIs look up notifications no longer in memory.
    #[arg(
        long,
        env = "SLUICE_QUERY_HANDLER_ADDR",
        default_value = "127.0.0.1:50053"
    )]
    pub query_handler_addr: String,
}

#[derive(Debug, Clone, Args)]
pub struct QueryApiArgs {
    /// Where the REST query API listens.
    #[arg(long, env = "SLUICE_QUERY_ADDR", default_value = "127.0.0.1:8081")]
    pub query_addr: String,
    #[command(flatten)]
    pub config: sluice_query_api::Config,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Where the REST ingest API listens.
    #[arg(long, env = "SLUICE_INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub ingest_addr: String,
    #[command(flatten)]
    pub config: sluice_ingest_api::Config,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
