//! TLS on every gRPC connection between Sluice services (rustls, through tonic).
//!
//! With TLS set ([`set`]), each service serves only TLS and presents its certificate, and each
//! client speaks only TLS and accepts a server only if its certificate is signed by the
//! cluster's CA (`--tls-ca`). With client authentication on (mTLS), a service also requires
//! the caller's certificate, signed by the same CA, before any call: the cluster secret then
//! rides inside an authenticated, encrypted connection. Like the secret, the settings are the
//! process's, set once at start before any service or client runs.

use std::sync::OnceLock;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity, Server, ServerTlsConfig};

struct Settings {
    identity: Identity,
    ca: Certificate,
    client_auth: bool,
    server_name: Option<String>,
}

static TLS: OnceLock<Settings> = OnceLock::new();

/// What [`set`] needs: PEM text of this service's certificate (chain) and key, and of the CA
/// that signs every service's certificate.
pub struct TlsFiles {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
    /// Require a client certificate signed by the CA on every connection (mTLS).
    pub client_auth: bool,
    /// The name a client checks in servers' certificates instead of the host it dials (for
    /// addresses that are IPs, e.g. a headless Service's pods, under one certificate name).
    pub server_name: Option<String>,
}

/// Sets this process's TLS. Call it once, before any service or client runs.
pub fn set(files: TlsFiles) -> Result<(), String> {
    let looks_pem = |pem: &[u8], what: &str| {
        if String::from_utf8_lossy(pem).contains("-----BEGIN") {
            Ok(())
        } else {
            Err(format!("the TLS {what} is not PEM text"))
        }
    };
    looks_pem(&files.cert_pem, "certificate")?;
    looks_pem(&files.key_pem, "key")?;
    looks_pem(&files.ca_pem, "CA certificate")?;
    // Several crates of the build enable rustls's ring and aws-lc-rs both, so rustls cannot
    // choose a provider by itself: name one, before any TLS config is built (a second call,
    // in tests, finds it installed).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    TLS.set(Settings {
        identity: Identity::from_pem(files.cert_pem, files.key_pem),
        ca: Certificate::from_pem(files.ca_pem),
        client_auth: files.client_auth,
        server_name: files.server_name,
    })
    .map_err(|_| "TLS is set already".to_string())
}

/// Whether this process's gRPC connections use TLS.
pub fn is_set() -> bool {
    TLS.get().is_some()
}

/// A gRPC server builder that serves TLS when it is set.
pub fn server() -> Result<Server, tonic::transport::Error> {
    let builder = Server::builder();
    let Some(tls) = TLS.get() else {
        return Ok(builder);
    };
    let mut config = ServerTlsConfig::new().identity(tls.identity.clone());
    if tls.client_auth {
        config = config.client_ca_root(tls.ca.clone());
    }
    builder.tls_config(config)
}

/// `endpoint` speaking TLS when it is set: `https`, the cluster's CA, this service's
/// certificate as its client certificate.
pub(crate) fn client(endpoint: Endpoint) -> Result<Endpoint, tonic::transport::Error> {
    let Some(tls) = TLS.get() else {
        return Ok(endpoint);
    };
    let mut config = ClientTlsConfig::new()
        .ca_certificate(tls.ca.clone())
        .identity(tls.identity.clone());
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    endpoint.tls_config(config)
}

/// The scheme this process's clients dial.
pub fn scheme() -> &'static str {
    if is_set() { "https" } else { "http" }
}
