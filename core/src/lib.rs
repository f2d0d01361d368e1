//! The pieces of Sluice that every service shares.
//!
//! - [`notification`]: the notification contract — what a platform may POST, how it is
//!   validated and bounded, and the [`Notification`] record that moves through the pipeline.
//! - [`color`]: the colors a notification passes through (gray → blue → green → red).
//! - [`local_sync`]: `file://` writes synced to the disk before they are acknowledged.
//! - [`instrumented`]: that data plane's requests counted and timed for `/metrics`.
//! - [`storage`]: opens the one object-store data plane (`file://` or `s3://`), checks or creates
//!   the bucket with `aws-sdk-s3`, and probes whether the store enforces put-if-absent.
//! - [`segment`]: the master store's row format, an Avro object container file (zstd) per
//!   publisher batch with a checksum over its rows.
//! - [`master`]: the master store itself, segments keyed by (producer, sequence) and written
//!   put-if-absent, so that a retried batch can never be stored twice.
//! - [`producer`]: a producer's id and the secret that proves a caller owns it.
//! - [`dead_letter`]: batches refused for good and segments that cannot be decoded, kept with
//!   their reasons so that nothing waits on them.
//!
//! Data moves: ingest-api parses and validates a [`Notification`], keeps it gray in shared memory,
//! and sends it in a batch to the publisher, which writes it with [`master::MasterStore`].

pub mod color;
pub mod dead_letter;
pub mod error;
pub mod instrumented;
pub mod local_sync;
pub mod master;
pub mod notification;
pub mod producer;
pub mod segment;
pub mod storage;

pub use color::Color;
pub use error::{Error, Result};
pub use notification::Notification;
