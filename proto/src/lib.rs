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

/// A lazily connecting channel to a Sluice service at `addr` (`host:port` or a URL). It
/// connects on first use and reconnects by itself, so services can start in any order.
pub fn lazy_channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}
