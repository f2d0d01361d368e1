//! `infra/k8s/` cannot be applied here (no cluster), so this checks what can be checked without
//! one: every manifest validates against Kubernetes' own schemas (`kubernetes-validate` from
//! PyPI, strict: no unknown field), every Sluice setting it names is a real flag of the command
//! the container runs, every service has its workload and Service, the scalable ones an HPA,
//! the consumer two replicas whose readiness is the lease (the gRPC health service
//! `sluice.v1.Consumer`), and every probe points at a port the container opens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use serde::Deserialize;
use serde_yaml_ng::Value;

use crate::support::{has_setting, help, python};

fn manifests() -> Vec<(PathBuf, Value)> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/k8s"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            documents.push((file.clone(), Value::deserialize(document).unwrap()));
        }
    }
    documents
}

#[test]
fn kubernetes_manifests_validate_and_name_real_settings() {
    let files: Vec<String> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/infra/k8s"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .filter(|p| p.ends_with(".yaml"))
        .collect();
    let validator = python().with_file_name("kubernetes-validate");
    let validated = Command::new(&validator)
        .args(["--strict", "--quiet"])
        .args(&files)
        .output()
        .unwrap();
    assert!(
        validated.status.success(),
        "kubernetes-validate: {}{}",
        String::from_utf8_lossy(&validated.stdout),
        String::from_utf8_lossy(&validated.stderr)
    );

    let documents = manifests();
    let of_kind = |kind: &str| -> BTreeMap<String, Value> {
        documents
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| {
                (
                    d["metadata"]["name"].as_str().unwrap().to_string(),
                    d.clone(),
                )
            })
            .collect()
    };
    let config = &of_kind("ConfigMap")["sluice"];
    let config_keys: BTreeSet<String> = config["data"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    let services = of_kind("Service");
    let autoscalers = of_kind("HorizontalPodAutoscaler");
    let mut workloads = of_kind("Deployment");
    workloads.extend(of_kind("StatefulSet"));

    let secrets = of_kind("Secret");
    let mut commands = BTreeMap::new();
    let mut config_keys_used = BTreeSet::new();
    for (name, workload) in &workloads {
        let pod = &workload["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        let subcommand = container["args"][0].as_str().unwrap().to_string();
        let help = help(&subcommand);
        let env = container["env"].as_sequence().unwrap();
        for variable in env {
            let key = variable["name"].as_str().unwrap();
            // A pod's own field (its IP) is no setting: it is there for a setting's value.
            if !has_setting(&help, key) && !variable["valueFrom"]["fieldRef"].is_null() {
                let reference = format!("$({key})");
                assert!(
                    env.iter().any(|v| v["value"]
                        .as_str()
                        .is_some_and(|value| value.contains(&reference))),
                    "{name}: {key} is a field of the pod that no setting uses"
                );
                continue;
            }
            assert!(
                has_setting(&help, key),
                "{name}: sluice {subcommand} has no setting {key}"
            );
        }
        // Every service requires and sends the cluster secret on gRPC.
        assert!(
            container["envFrom"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|s| s["secretRef"]["name"] == "sluice-cluster"),
            "{name} has no cluster secret"
        );
        // A Secret's settings, handed over whole, must be settings of the command too.
        for source in container["envFrom"].as_sequence().unwrap() {
            let Some(secret) = source.get("secretRef") else {
                continue;
            };
            let secret = &secrets[secret["name"].as_str().unwrap()];
            for key in secret["stringData"].as_mapping().unwrap().keys() {
                let key = key.as_str().unwrap();
                assert!(
                    key.starts_with("AWS_") || has_setting(&help, key),
                    "{name}: sluice {subcommand} has no setting {key}"
                );
            }
        }
        for key in &config_keys {
            if has_setting(&help, key) {
                config_keys_used.insert(key.clone());
            }
        }
        // Probes point at a port the container opens.
        let ports: BTreeMap<String, u64> = container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["name"].as_str().unwrap().to_string(),
                    p["containerPort"].as_u64().unwrap(),
                )
            })
            .collect();
        for probe in ["readinessProbe", "livenessProbe"] {
            let probe = &container[probe];
            let port = if let Some(grpc) = probe.get("grpc") {
                grpc["port"].as_u64().unwrap()
            } else {
                let http = &probe["httpGet"];
                let path = http["path"].as_str().unwrap();
                assert!(["/healthz", "/readyz"].contains(&path), "{name}: {path}");
                ports[http["port"].as_str().unwrap()]
            };
            assert!(
                ports.values().any(|p| *p == port),
                "{name}: probe on {port}"
            );
        }
        // A Service selects the workload's pods; the scalable ones have an HPA on them.
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        assert!(
            services.values().any(|s| s["spec"]["selector"]
                .as_mapping()
                .unwrap()
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))),
            "{name}: no Service selects it"
        );
        commands.insert(subcommand.clone(), (name.clone(), workload.clone()));
    }
    // Every shared setting is some command's flag (AWS_* and RUST_LOG are the environment's).
    for key in &config_keys {
        assert!(
            config_keys_used.contains(key) || key.starts_with("AWS_") || key == "RUST_LOG",
            "the ConfigMap's {key} is no command's setting"
        );
    }
    assert_eq!(
        commands.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "consumer",
            "ingest-api",
            "publisher",
            "query-api",
            "query-handler"
        ]
    );
    for scalable in ["ingest-api", "publisher", "query-handler", "query-api"] {
        let (name, _) = &commands[scalable];
        assert!(
            autoscalers
                .values()
                .any(|h| h["spec"]["scaleTargetRef"]["name"] == name.as_str()),
            "{scalable} has no HorizontalPodAutoscaler"
        );
    }
    let (_, consumer) = &commands["consumer"];
    assert_eq!(consumer["spec"]["replicas"], 2);
    assert!(
        !autoscalers
            .values()
            .any(|h| h["spec"]["scaleTargetRef"]["name"] == "sluice-consumer"),
        "consumers scale by failover, not load"
    );
    let readiness = &consumer["spec"]["template"]["spec"]["containers"][0]["readinessProbe"];
    assert_eq!(readiness["grpc"]["service"], "sluice.v1.Consumer");
    // The REST services get their API keys from the Secret (auth is on by default on S3).
    for rest in ["ingest-api", "query-api"] {
        let (name, workload) = &commands[rest];
        let sources = &workload["spec"]["template"]["spec"]["containers"][0]["envFrom"];
        assert!(
            sources
                .as_sequence()
                .unwrap()
                .iter()
                .any(|s| s["secretRef"]["name"] == "sluice-keys"),
            "{name} has no API keys"
        );
    }
    // The gRPC peers are found by name over headless Services.
    for (key, service) in [
        ("SLUICE_PUBLISHER_ADDR", "sluice-publisher"),
        ("SLUICE_CONSUMER_ADDR", "sluice-consumer"),
        ("SLUICE_QUERY_HANDLER_ADDR", "sluice-query-handler"),
    ] {
        let addr = config["data"][key].as_str().unwrap();
        assert!(
            addr.starts_with(&format!("dns://{service}:")),
            "{key}={addr}"
        );
        assert_eq!(services[service]["spec"]["clusterIP"], "None", "{service}");
    }
}
