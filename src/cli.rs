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
pub enum Command {
    /// Every service in one process, talking gRPC over loopback as they would across hosts.
    All {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        publisher: PublisherAddr,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// The REST ingest API with its shared memory and batcher.
    #[command(name = "ingest-api")]
    IngestApi {
        #[command(flatten)]
        publisher: PublisherAddr,
        #[command(flatten)]
        ingest: IngestArgs,
    },
    /// The gRPC publisher that writes batches to the master store.
    Publisher {
        #[command(flatten)]
        storage: StorageArgs,
        #[command(flatten)]
        publisher: PublisherAddr,
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
pub struct PublisherAddr {
    /// The publisher's gRPC address: where `publisher` listens and where `ingest-api` sends
    /// its batches.
    #[arg(long, env = "SLUICE_PUBLISHER_ADDR", default_value = "127.0.0.1:50051")]
    pub publisher_addr: String,
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Where the REST ingest API listens.
    #[arg(long, env = "SLUICE_INGEST_ADDR", default_value = "127.0.0.1:8080")]
    pub ingest_addr: String,
    #[command(flatten)]
    pub config: sluice_ingest_api::Config,
}
