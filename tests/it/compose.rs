//! `infra/docker-compose.yml` cannot run here (no Docker engine), so this checks that it
//! parses and that every Sluice setting it names is a real flag of the binary.

use std::collections::BTreeSet;

use serde_yaml_ng::Value;

use crate::support::{has_setting, help};

#[test]
fn compose_file_parses_and_names_real_settings() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/docker-compose.yml");
    let mut compose: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().expect("services");
    for name in [
        "minio",
        "publisher",
        "consumer",
        "ingest-api",
        "query-handler",
        "query-api",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    let mut checked = BTreeSet::new();
    for (name, service) in services {
        // Only the services built from Sluice's image run the `sluice` binary.
        if service.get("build").is_none() {
            continue;
        }
        let command = service["command"].as_sequence().expect("command");
        let subcommand = command[0].as_str().unwrap();
        let help = help(subcommand);
        let environment = service["environment"].as_mapping().expect("environment");
        for key in environment.keys() {
            let key = key.as_str().unwrap();
            if key.starts_with("SLUICE_") {
                assert!(
                    has_setting(&help, key),
                    "{name:?}: sluice {subcommand} has no setting {key}"
                );
                checked.insert(key.to_string());
            } else {
                assert!(
                    key.starts_with("AWS_") || key == "RUST_LOG",
                    "{name:?}: unknown {key}"
                );
            }
        }
    }
    for key in [
        "SLUICE_STORAGE",
        "SLUICE_PUBLISHER_ADDR",
        "SLUICE_INGEST_ADDR",
        "SLUICE_QUERY_HANDLER_ADDR",
        "SLUICE_QUERY_ADDR",
    ] {
        assert!(checked.contains(key), "{key} is not set anywhere");
    }
}
