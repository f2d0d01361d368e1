//! TLS between services, with client certificates (mTLS): a `sluice all` whose gRPC ports
//! serve only TLS stores and answers as usual, while a client in clear, a client that does
//! not trust the cluster's CA, and one without a client certificate are all turned away
//! before any call.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::analyst::query;
use crate::support::{
    All, CLUSTER_SECRET, client, free_addr, get_json, local_env, notification, start_all,
};

/// PEM of a certificate and its key.
struct Pem {
    cert: String,
    key: String,
}

/// A CA, and a certificate it signs for `127.0.0.1` and `localhost`, good for serving and for
/// calling.
fn cluster_certificates() -> (Pem, Pem) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let ca_pem = Pem {
        cert: ca_cert.pem(),
        key: ca_key.serialize_pem(),
    };
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut service =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    service.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = service.signed_by(&key, &issuer).unwrap();
    (
        ca_pem,
        Pem {
            cert: cert.pem(),
            key: key.serialize_pem(),
        },
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Asks the health service at `addr` through `endpoint`, with the cluster secret; Ok(()) when
/// it answers.
async fn health(endpoint: Endpoint) -> Result<(), String> {
    let channel = tokio::time::timeout(Duration::from_secs(5), endpoint.connect())
        .await
        .map_err(|_| "connecting timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: String::new(),
    });
    request.metadata_mut().insert(
        sluice_proto::cluster::HEADER,
        CLUSTER_SECRET.parse().unwrap(),
    );
    HealthClient::new(channel)
        .check(request)
        .await
        .map(|_| ())
        .map_err(|status| format!("{status:?}"))
}

fn tls_endpoint(addr: SocketAddr, config: ClientTlsConfig) -> Endpoint {
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn services_speak_mutual_tls_and_turn_away_every_other_caller() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, service) = cluster_certificates();
    let (ca_path, cert_path, key_path) = (
        write(dir.path(), "ca.pem", &ca.cert),
        write(dir.path(), "service.pem", &service.cert),
        write(dir.path(), "service.key", &service.key),
    );
    let publisher = free_addr();
    let env = local_env();
    let All {
        sluice,
        ingest,
        api,
    } = start_all(
        env,
        &[
            ("SLUICE_PUBLISHER_ADDR", publisher.to_string()),
            ("SLUICE_TLS_CERT", cert_path),
            ("SLUICE_TLS_KEY", key_path),
            ("SLUICE_TLS_CA", ca_path),
            ("SLUICE_TLS_CLIENT_AUTH", "true".to_string()),
        ],
        dir.path(),
        "all",
    )
    .await;
    assert!(
        sluice.log_text().contains("gRPC between services is TLS"),
        "{}",
        sluice.log_text()
    );

    // The pipeline works over TLS: durable, replicated, and answered by SQL.
    let answer = client()
        .post(format!("http://{ingest}/v1/notifications?ack=replicated"))
        .json(&(0..50).map(notification).collect::<Vec<_>>())
        .send()
        .await
        .unwrap();
    let status = answer.status();
    assert_eq!(
        status,
        200,
        "{}\n{}",
        answer.text().await.unwrap(),
        sluice.log_text()
    );
    // The query handler sees the new version within its refresh.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let sql = serde_json::json!({"sql": "SELECT count(*) AS n FROM notifications"});
        let (_, counted) = query(&client(), api, sql).await;
        if counted["rows"][0][0] == 50 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{counted}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stats = get_json(&format!("http://{ingest}/v1/stats")).await;
    assert_eq!(stats["memory"]["gray"], 0, "{stats}");

    let trusted = Certificate::from_pem(&ca.cert);
    let identity = Identity::from_pem(&service.cert, &service.key);
    // With the CA and a certificate it signed: answered.
    health(tls_endpoint(
        publisher,
        ClientTlsConfig::new()
            .ca_certificate(trusted.clone())
            .identity(identity)
            .domain_name("localhost"),
    ))
    .await
    .unwrap();
    // In clear: no answer.
    let clear = health(Endpoint::from_shared(format!("http://{publisher}")).unwrap()).await;
    assert!(clear.is_err(), "a client in clear was answered");
    // Trusting the CA, but without a client certificate: turned away.
    let anonymous = health(tls_endpoint(
        publisher,
        ClientTlsConfig::new()
            .ca_certificate(trusted)
            .domain_name("localhost"),
    ))
    .await;
    assert!(
        anonymous.is_err(),
        "a client without a certificate was answered"
    );
    // With a certificate of another CA, and trusting only that CA: the server's is refused.
    let (other_ca, other) = cluster_certificates();
    let stranger = health(tls_endpoint(
        publisher,
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&other_ca.cert))
            .identity(Identity::from_pem(&other.cert, &other.key))
            .domain_name("localhost"),
    ))
    .await;
    assert!(stranger.is_err(), "a client of another CA was answered");
    assert!(!sluice.log_text().contains("panicked"));
}
