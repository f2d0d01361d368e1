//! Sluice's gRPC contracts, compiled from `proto/` at build time, and the conversions between
//! their messages and the domain model.

#![allow(unreachable_pub, clippy::all)]

pub mod v1 {
    tonic::include_proto!("sluice.v1");
}

pub mod cluster;
mod convert;
pub mod tls;

/// The channel every Sluice client uses: it carries the cluster secret ([`cluster`]), over
/// TLS when it is set ([`tls`]).
pub type Channel =
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, cluster::SendSecret>;

/// The largest message either side of a Sluice gRPC call sends or accepts. Ingest batches stay
/// well below it (see the batcher's byte bound); the headroom covers protobuf framing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A lazily connecting channel to a Sluice service at `addr`, carrying the cluster secret: `host:port` or a URL, several
/// copies of it (a comma-separated list), or `dns://name:port`, every address `name` resolves
/// to, looked up again every few seconds (a headless Kubernetes Service resolves to its ready
/// pods). It connects on first use and reconnects by itself, so services can start in any
/// order. Over several copies, each call goes to one (the less loaded of two picked at random);
/// a copy that is down fails the calls sent to it and stays in the list until it no longer
/// resolves, so a caller that retries reaches another copy, and the first again once it is back.
pub fn lazy_channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(tonic::service::interceptor::InterceptedService::new(
        plain_channel(addr)?,
        cluster::SendSecret,
    ))
}

fn plain_channel(addr: &str) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let addrs: Vec<&str> = addr
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if let [one] = addrs[..]
        && let Some(name) = one.strip_prefix("dns://")
    {
        return Ok(resolved_channel(name.trim_end_matches('/').to_string()));
    }
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

/// How often a `dns://` target is looked up again.
const RESOLVE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A channel balanced over the addresses `name` (`host:port`) resolves to, kept up to date by a
/// task that ends when the channel is dropped.
fn resolved_channel(name: String) -> tonic::transport::Channel {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use tonic::transport::channel::Change;

    let (channel, changes) = tonic::transport::Channel::balance_channel::<SocketAddr>(64);
    tokio::spawn(async move {
        let mut known: HashSet<SocketAddr> = HashSet::new();
        loop {
            match tokio::net::lookup_host(&name).await {
                Ok(found) => {
                    let found: HashSet<SocketAddr> = found.collect();
                    for addr in found.difference(&known) {
                        let Ok(endpoint) = endpoint(&addr.to_string()) else {
                            continue;
                        };
                        if changes.send(Change::Insert(*addr, endpoint)).await.is_err() {
                            return;
                        }
                    }
                    for addr in known.difference(&found) {
                        if changes.send(Change::Remove(*addr)).await.is_err() {
                            return;
                        }
                    }
                    known = found;
                }
                // Keep the addresses known; a name that does not resolve for a while (a DNS
                // hiccup) should not empty the list.
                Err(error) => tracing::warn!(%error, name, "cannot resolve"),
            }
            if changes.is_closed() {
                return;
            }
            tokio::time::sleep(RESOLVE_EVERY).await;
        }
    });
    channel
}

/// The endpoint every Sluice client dials `addr` (`host:port` or a URL) with: TLS when it is
/// set, a 2 s connect timeout and HTTP/2 keep-alive (a peer gone without a reset is noticed
/// within 15 s). It does not carry the cluster secret: [`cluster::secret`] is for that.
pub fn endpoint(addr: &str) -> Result<tonic::transport::Endpoint, tonic::transport::Error> {
    let scheme = tls::scheme();
    let url = match addr.split_once("://") {
        // With TLS on, an `http://` address is dialled as `https://`: never in clear.
        Some(("http" | "https", rest)) => format!("{scheme}://{rest}"),
        Some(_) => addr.to_string(),
        None => format!("{scheme}://{addr}"),
    };
    tls::client(
        tonic::transport::Endpoint::from_shared(url)?
            .connect_timeout(std::time::Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(std::time::Duration::from_secs(10))
            .keep_alive_timeout(std::time::Duration::from_secs(5)),
    )
}
