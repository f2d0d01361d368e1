//! The consumer: replicates master segments into the columnar Parquet replica (Delta Lake)
//! exactly once, and turns notifications green.
//!
//! Not built yet: it is the next step of the roadmap (issue 3). Until then `sluice all` runs the
//! ingest-api and the publisher, and notifications stop at blue.
