//! Sluice's integration tests: real processes of the `sluice` binary, a real S3 server over
//! HTTP on loopback, real gRPC between the services. One test binary, one module per concern.

mod analyst;
mod auth;
mod cloudevents;
mod committer_failover;
mod compose;
mod console;
mod dead_letters;
mod differential;
mod distributed;
mod faults;
mod feed;
mod flight_sql;
mod http_contract;
mod k8s;
mod master_store;
mod metrics;
mod read_path;
mod replica;
mod scale_out;
mod support;
mod tls;
mod write_path;
