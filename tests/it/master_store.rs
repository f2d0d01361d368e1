//! The master store's conformance suite: the same checks against a local directory and a real
//! S3 server, so every backend is held to one behaviour.

use std::sync::Arc;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use sluice_core::Notification;
use sluice_core::master::{MasterStore, SegmentWrite};
use sluice_core::storage::{Storage, StorageUrl};

use crate::support::{S3Server, notification};

fn records(range: std::ops::Range<usize>) -> Arc<[Notification]> {
    range
        .map(|i| Notification::from_json(&notification(i).to_string(), 1).unwrap())
        .collect()
}

/// The suite every backend passes.
pub(crate) async fn conformance(store: Arc<dyn ObjectStore>) {
    let master = MasterStore::new(store.clone());

    // A new batch is created and reads back identical, checksum verified.
    let first = records(0..500);
    let written = master
        .write_segment("prod-a", 1, first.clone())
        .await
        .unwrap();
    assert!(
        matches!(written, SegmentWrite::Created { .. }),
        "{written:?}"
    );
    let read = master.read_segment(written.path()).await.unwrap();
    assert_eq!(&read.records[..], &first[..]);
    assert_eq!(
        (read.header.producer.as_str(), read.header.sequence),
        ("prod-a", 1)
    );

    // A retry of the same batch writes nothing and succeeds.
    let again = master
        .write_segment("prod-a", 1, first.clone())
        .await
        .unwrap();
    assert_eq!(
        again,
        SegmentWrite::AlreadyPresent {
            path: written.path().to_string()
        }
    );

    // A different batch at the same key is refused, and the first one stays.
    let other = records(500..600);
    let conflict = master.write_segment("prod-a", 1, other).await.unwrap_err();
    assert!(
        matches!(conflict, sluice_core::Error::SegmentConflict { .. }),
        "{conflict}"
    );
    assert_eq!(
        master
            .read_segment(written.path())
            .await
            .unwrap()
            .records
            .len(),
        500
    );

    // Listing orders by producer, then by sequence (numerically), and skips strays.
    for (producer, sequence) in [("prod-b", 2), ("prod-a", 10), ("prod-a", 2), ("prod-b", 1)] {
        master
            .write_segment(
                producer,
                sequence,
                records(sequence as usize..sequence as usize + 3),
            )
            .await
            .unwrap();
    }
    store
        .put(
            &Path::from("master/prod-a/notes.txt"),
            PutPayload::from(Bytes::from_static(b"not a segment")),
        )
        .await
        .unwrap();
    let listed: Vec<(String, u64)> = master
        .list_segments()
        .await
        .unwrap()
        .into_iter()
        .map(|s| (s.producer, s.sequence))
        .collect();
    let expected = [
        ("prod-a", 1),
        ("prod-a", 2),
        ("prod-a", 10),
        ("prod-b", 1),
        ("prod-b", 2),
    ];
    assert_eq!(listed, expected.map(|(p, s)| (p.to_string(), s)).to_vec());

    // A corrupted segment is detected, never read as data.
    let corrupt = Path::from("master/prod-c/00000000000000000001.avro");
    store
        .put(
            &corrupt,
            PutPayload::from(Bytes::from_static(b"Obj\x01garbage")),
        )
        .await
        .unwrap();
    assert!(master.read_segment(corrupt.as_ref()).await.is_err());
    let missing = master
        .read_segment("master/prod-z/00000000000000000001.avro")
        .await;
    assert!(matches!(missing, Err(sluice_core::Error::NotFound { .. })));
}

#[tokio::test]
async fn local_directory_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageUrl::Local(dir.path().to_path_buf()))
        .await
        .unwrap();
    assert!(storage.probe_put_if_absent().await.unwrap());
    conformance(storage.store).await;
}

#[tokio::test]
async fn s3_conforms() {
    let s3 = S3Server::start().await;
    s3.create_bucket("conformance");
    let storage = Storage {
        url: StorageUrl::S3 {
            bucket: "conformance".into(),
            prefix: String::new(),
        },
        store: s3.store("conformance"),
    };
    // s3s-fs honours If-None-Match: * between sequential requests, which is what the probe
    // and a retried Append do.
    assert!(storage.probe_put_if_absent().await.unwrap());
    conformance(storage.store).await;
}
