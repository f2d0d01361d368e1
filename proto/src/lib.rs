//! Sluice's gRPC contracts, compiled from `proto/` at build time, and the conversions between
//! their messages and the domain model.

#![allow(unreachable_pub, clippy::all)]

pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

mod convert;

/// The largest message either side of a Sluice gRPC call sends or accepts. Ingest batches stay
/// well below it (see the batcher's byte bound); the headroom covers protobuf framing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
