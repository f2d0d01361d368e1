//! Services authenticate each other: with a cluster secret set, every call a Sluice client
//! makes carries it in the `x-sluice-cluster-secret` metadata, and every Sluice gRPC service
//! refuses a call without it (UNAUTHENTICATED) before any handler runs. Only `grpc.health.v1`
//! stays open, for probes that cannot send metadata; it tells whether a service is serving and
//! nothing else.
//!
//! The secret is the process's: the binary sets it once at start ([`set_secret`]), before any
//! service or client runs, from `SLUICE_CLUSTER_SECRET`; `sluice all` makes a random one when
//! none is given, so even its loopback ports are closed to other local users. The comparison
//! takes the same time wherever the presented value differs.

use std::sync::OnceLock;

use subtle::ConstantTimeEq;
use tonic::metadata::{AsciiMetadataValue, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Status};

/// The metadata key that carries the secret.
pub const HEADER: &str = "x-sluice-cluster-secret";

static SECRET: OnceLock<AsciiMetadataValue> = OnceLock::new();

/// Sets this process's cluster secret. Call it once, before any service or client runs; a
/// second call is refused. The secret must be at least 16 printable ASCII characters.
pub fn set_secret(secret: &str) -> Result<(), String> {
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "the cluster secret must be at least 16 printable ASCII characters, no spaces"
                .to_string(),
        );
    }
    let value = MetadataValue::try_from(secret).map_err(|e| e.to_string())?;
    SECRET
        .set(value)
        .map_err(|_| "the cluster secret is set already".to_string())
}

/// Whether calls are authenticated in this process.
pub fn is_set() -> bool {
    SECRET.get().is_some()
}

/// The secret as the header value calls carry, if one is set: for clients that are not built
/// on [`SendSecret`] (a boxed channel).
pub fn secret() -> Option<AsciiMetadataValue> {
    SECRET.get().cloned()
}

/// Adds the secret to every call a client makes (nothing when none is set).
#[derive(Debug, Clone, Copy, Default)]
pub struct SendSecret;

impl Interceptor for SendSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(secret) = SECRET.get() {
            request.metadata_mut().insert(HEADER, secret.clone());
        }
        Ok(request)
    }
}

/// `service`, refusing every call that does not carry the secret.
pub fn guarded<S>(service: S) -> InterceptedService<S, RequireSecret> {
    InterceptedService::new(service, RequireSecret)
}

/// Refuses a call that does not carry the secret (lets every call through when none is set).
#[derive(Debug, Clone, Copy, Default)]
pub struct RequireSecret;

impl Interceptor for RequireSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(secret) = SECRET.get() else {
            return Ok(request);
        };
        let presented = request.metadata().get(HEADER).map(|v| v.as_bytes());
        match presented {
            Some(presented) if bool::from(presented.ct_eq(secret.as_bytes())) => Ok(request),
            Some(_) => Err(Status::unauthenticated(
                "the cluster secret does not match: every Sluice service needs the same SLUICE_CLUSTER_SECRET",
            )),
            None => Err(Status::unauthenticated(format!(
                "this Sluice service takes calls only from its cluster: send the cluster secret in `{HEADER}`"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_passes_with_the_secret_only() {
        // The only test in this binary that sets the process's secret.
        set_secret("0123456789abcdef-test").unwrap();
        assert!(set_secret("0123456789abcdef-other").is_err(), "set once");
        let sent = SendSecret.call(Request::new(())).unwrap();
        RequireSecret.call(sent).unwrap();

        let refused = RequireSecret.call(Request::new(())).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unauthenticated);
        assert!(refused.message().contains(HEADER), "{}", refused.message());
        for wrong in ["0123456789abcdef-tesT", "0123456789abcdef-test-", "x"] {
            let mut request = Request::new(());
            request
                .metadata_mut()
                .insert(HEADER, MetadataValue::try_from(wrong).unwrap());
            let refused = RequireSecret.call(request).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::Unauthenticated);
            assert!(refused.message().contains("does not match"));
        }
    }

    #[test]
    fn short_or_spaced_secrets_are_refused() {
        assert!(set_secret("short").is_err());
        assert!(set_secret("has a space in the middle").is_err());
    }
}
