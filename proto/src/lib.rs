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

/// A lazily connecting channel to a Sluice service at `addr` (`host:port` or a URL), or
/// balanced over several copies of it (`addr` a comma-separated list). It connects on first use
/// and reconnects by itself, so services can start in any order. Over a list, each call goes to
/// one copy (the less loaded of two picked at random); a copy that is down fails the calls sent
/// to it and stays in the list, so a caller that retries reaches another copy, and the first
/// copy again once it is back.
pub fn lazy_channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let addrs: Vec<&str> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if addrs.len() > 1 {
        let endpoints = addrs
            .into_iter()
            .map(endpoint)
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(tonic::transport::Channel::balance_list(
            endpoints.into_iter(),
        ));
    }
    Ok(endpoint(addrs.first().copied().unwrap_or(addr))?.connect_lazy())
}

fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(std::time::Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(std::time::Duration::from_secs(10))
        .keep_alive_timeout(std::time::Duration::from_secs(5)))
}
