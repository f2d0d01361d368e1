//! The replicator against a real directory: exactly once across restarts, replays, stale
//! committers, gaps and crashes between writing Parquet and committing; compaction.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::datafusion::prelude::SessionContext;
use sluice_consumer::lease::{Fence, LeaseStore};
use sluice_consumer::maintenance::{MaintenanceConfig, maintain};
use sluice_consumer::replica::Replica;
use sluice_consumer::replicator::{Replicator, ReplicatorConfig, SegmentNotice};
use sluice_consumer::{open_replica, schema};
use sluice_core::Notification;
use sluice_core::master::MasterStore;
use sluice_core::storage::{Storage, StorageUrl};
use tokio_util::sync::CancellationToken;

const DAY: i64 = 86_400_000_000;
/// 2025-11-01T00:00:00Z
const NOV_1: i64 = 1_761_955_200_000_000;

fn records(producer: &str, sequence: u64, rows: usize, day_offset: i64) -> Arc<[Notification]> {
    (0..rows)
        .map(|row| Notification {
            platform: "bsky".into(),
            id: format!("{producer}-{sequence}-{row}"),
            kind: "post.liked".into(),
            occurred_at: NOV_1 + day_offset * DAY + row as i64,
            received_at: NOV_1 + 5 * DAY,
            post_id: Some(format!("p{}", row % 3)),
            author_id: None,
            actor_id: Some("actor".into()),
            text: None,
            lang: Some("en".into()),
            tags: vec!["a".into(), format!("t{row}")],
            metrics: [("likes".to_string(), row as i64)].into(),
            attributes: Some(r#"{"k":1}"#.into()),
        })
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    storage: Storage,
    master: MasterStore,
}

async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageUrl::Local(dir.path().to_path_buf()))
        .await
        .unwrap();
    let master = MasterStore::new(storage.store.clone());
    Setup {
        _dir: dir,
        storage,
        master,
    }
}

async fn write(master: &MasterStore, producer: &str, sequence: u64, rows: usize) {
    master
        .write_segment(producer, sequence, records(producer, sequence, rows, 0))
        .await
        .unwrap();
}

async fn replicator(setup: &Setup) -> Replicator {
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let mut replicator = Replicator::new(
        setup.master.clone(),
        replica,
        ReplicatorConfig::for_tests(),
        Fence::sole(),
    );
    replicator.list_master().await.unwrap();
    replicator
}

async fn query(replica: &Replica, sql: &str) -> Vec<i64> {
    let ctx = SessionContext::new();
    let mut table = replica.table().clone();
    table.update_state().await.unwrap();
    ctx.register_table("notifications", table.table_provider().await.unwrap())
        .unwrap();
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    batches
        .iter()
        .flat_map(|b| {
            let column = b.column(0);
            let column = deltalake::arrow::compute::cast(
                column,
                &deltalake::arrow::datatypes::DataType::Int64,
            )
            .unwrap();
            let ints = column
                .as_any()
                .downcast_ref::<deltalake::arrow::array::Int64Array>()
                .unwrap()
                .clone();
            ints.values().to_vec()
        })
        .collect()
}

async fn count(setup: &Setup) -> (i64, i64) {
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let total = query(&replica, "SELECT count(*) FROM notifications").await[0];
    let distinct = query(
        &replica,
        "SELECT count(*) FROM (SELECT DISTINCT platform, id FROM notifications)",
    )
    .await[0];
    (total, distinct)
}

#[tokio::test]
async fn replication_is_exactly_once_across_restarts_replays_and_stale_committers() {
    let setup = setup().await;
    for sequence in 1..=3 {
        write(&setup.master, "prod-a", sequence, 100).await;
    }
    for sequence in 1..=2 {
        write(&setup.master, "prod-b", sequence, 50).await;
    }
    let mut first = replicator(&setup).await;
    let report = first.replicate_ready().await.unwrap();
    assert_eq!((report.segments, report.rows), (5, 400));
    assert_eq!(count(&setup).await, (400, 400));

    // A restarted consumer finds everything recorded in the Delta log: nothing to do.
    let mut second = replicator(&setup).await;
    assert_eq!(second.replicate_ready().await.unwrap().rows, 0);
    assert_eq!(second.progress().replicated("prod-a"), 3);
    assert_eq!(second.progress().replicated("prod-b"), 2);

    // A replayed announcement of a replicated segment is ignored.
    second
        .learn(SegmentNotice {
            producer: "prod-a".into(),
            sequence: 2,
            path: MasterStore::segment_path("prod-a", 2).unwrap().to_string(),
            rows: Some(100),
            bytes: 1,
        })
        .await;
    assert_eq!(second.replicate_ready().await.unwrap().rows, 0);

    // A gap holds a producer back until it is filled; segments then go in order.
    write(&setup.master, "prod-a", 5, 10).await;
    second.list_master().await.unwrap();
    assert_eq!(second.replicate_ready().await.unwrap().rows, 0);
    write(&setup.master, "prod-a", 4, 20).await;
    second.list_master().await.unwrap();
    assert_eq!(second.replicate_ready().await.unwrap().rows, 30);
    assert_eq!(second.progress().replicated("prod-a"), 5);

    // The first consumer, still running on what it knew, is stale: it must not write
    // segments 4 and 5 again. It re-reads the recorded versions before it commits.
    first.list_master().await.unwrap();
    assert_eq!(first.replicate_ready().await.unwrap().rows, 0);
    assert_eq!(count(&setup).await, (430, 430));

    // Order inside the table follows the producer's sequence.
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let sequences = query(
        &replica,
        "SELECT DISTINCT batch_sequence FROM notifications WHERE producer_id = 'prod-a' ORDER BY 1",
    )
    .await;
    assert_eq!(sequences, vec![1, 2, 3, 4, 5]);
}

#[tokio::test]
async fn parquet_written_but_not_committed_is_never_read() {
    let setup = setup().await;
    write(&setup.master, "prod-a", 1, 100).await;
    let replica = open_replica(&setup.storage, "replica").await.unwrap();

    // A consumer that crashed after writing Parquet but before committing leaves files that
    // no Delta version names.
    let segment = setup
        .master
        .read_segment(MasterStore::segment_path("prod-a", 1).unwrap().as_ref())
        .await
        .unwrap();
    let batch = schema::to_record_batch(&[segment]).unwrap();
    let mut writer = deltalake::writer::RecordBatchWriter::for_table(replica.table()).unwrap();
    deltalake::writer::DeltaWriter::write(&mut writer, batch)
        .await
        .unwrap();
    let orphans = deltalake::writer::DeltaWriter::flush(&mut writer)
        .await
        .unwrap();
    assert!(!orphans.is_empty(), "Parquet files were written");

    let mut restarted = replicator(&setup).await;
    assert_eq!(restarted.replicate_ready().await.unwrap().rows, 100);
    assert_eq!(count(&setup).await, (100, 100));
}

#[tokio::test]
async fn compaction_merges_closed_partitions_and_keeps_every_row() {
    let setup = setup().await;
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let mut replicator = Replicator::new(
        setup.master.clone(),
        replica,
        ReplicatorConfig::for_tests(),
        Fence::sole(),
    );
    // Six small commits, each touching two closed days.
    for sequence in 1..=6u64 {
        let mut rows: Vec<Notification> = records("prod-a", sequence, 20, 0).to_vec();
        rows.extend(records("prod-a", sequence + 100, 20, 1).iter().cloned());
        setup
            .master
            .write_segment("prod-a", sequence, Arc::from(rows))
            .await
            .unwrap();
        replicator.list_master().await.unwrap();
        replicator.replicate_ready().await.unwrap();
    }
    assert_eq!(count(&setup).await, (240, 240));

    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let config = MaintenanceConfig {
        interval: None,
        retention: std::time::Duration::ZERO,
        target_file_bytes: 128 << 20,
        zstd_level: 16,
        concurrency: 1,
        open_target_file_bytes: Some(32 << 20),
    };
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let (_, report) = maintain(replica.table().clone(), &config, today, &Fence::sole())
        .await
        .unwrap();
    assert_eq!(
        (report.files_removed, report.files_added),
        (12, 2),
        "{report:?}"
    );
    assert_eq!(
        (report.open_files_removed, report.open_files_added),
        (0, 0),
        "no open day: {report:?}"
    );
    assert!(
        report.files_deleted >= 12,
        "vacuum removed the compacted files: {report:?}"
    );
    assert_eq!(count(&setup).await, (240, 240));
}

/// The sizes of the files of `table`'s snapshot, in the directory the test wrote it to.
fn file_sizes(table: &deltalake::DeltaTable) -> Vec<u64> {
    table
        .get_file_uris()
        .unwrap()
        .map(|uri| {
            let path = uri.strip_prefix("file://").unwrap_or(&uri).to_string();
            std::fs::metadata(path).unwrap().len()
        })
        .collect()
}

#[tokio::test]
async fn compaction_merges_the_open_days_at_the_append_level_and_leaves_closing_them_to_the_closed_pass()
 {
    let setup = setup().await;
    let mut replicator = replicator(&setup).await;
    // Six small commits, each touching today (2025-11-01 here) and tomorrow.
    for sequence in 1..=6u64 {
        let mut rows: Vec<Notification> = records("prod-a", sequence, 20, 0).to_vec();
        rows.extend(records("prod-a", sequence + 100, 20, 1).iter().cloned());
        write_copies(&setup.master, "prod-a", sequence, rows).await;
        replicator.list_master().await.unwrap();
        replicator.replicate_ready().await.unwrap();
    }
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let appended = file_sizes(replica.table());
    assert_eq!(appended.len(), 12);
    let nov = |day| chrono::NaiveDate::from_ymd_opt(2025, 11, day).unwrap();

    // Off: the open days stay as replication wrote them.
    let off = MaintenanceConfig {
        open_target_file_bytes: None,
        ..sluice_consumer::Config::for_tests().maintenance()
    };
    let (table, report) = maintain(replica.table().clone(), &off, nov(1), &Fence::sole())
        .await
        .unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(
        table.version(),
        replica.table().version(),
        "nothing committed"
    );

    // On, with files of about two appends: each day's six files become two or three, at the
    // append level, every row kept once.
    let target = 2 * appended.iter().max().unwrap() + 1;
    let on = MaintenanceConfig {
        open_target_file_bytes: Some(target),
        ..off
    };
    let (table, report) = maintain(table, &on, nov(1), &Fence::sole()).await.unwrap();
    assert_eq!(report.open_files_removed, 12, "{report:?}");
    let merged = report.open_files_added;
    assert!((4..=6).contains(&merged), "{report:?}");
    assert_eq!((report.files_removed, report.files_added), (0, 0));
    assert_eq!(file_sizes(&table).len() as u64, merged);
    assert_eq!(count(&setup).await, (240, 240));

    // Once both days are closed, the closed pass merges each day's files into one at the
    // archival level.
    let (table, report) = maintain(table, &on, nov(23), &Fence::sole()).await.unwrap();
    assert_eq!(
        (report.files_removed, report.files_added),
        (merged, 2),
        "{report:?}"
    );
    assert_eq!(report.open_files_removed, 0, "{report:?}");
    assert_eq!(file_sizes(&table).len(), 2);
    assert_eq!(count(&setup).await, (240, 240));
}

/// Rows with text of random words and random ids, as in real traffic: what the zstd level acts on.
fn wordy_records(sequence: u64, rows: usize) -> Vec<Notification> {
    let mut state = sequence.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let words: Vec<String> = (0..2_000).map(|i| format!("w{:x}", i * 7_919)).collect();
    records("prod-a", sequence, rows, 0)
        .iter()
        .map(|record| {
            let mut record = record.clone();
            record.id = format!("{:016x}", next());
            let text: Vec<&str> = (0..4 + next() % 26)
                .map(|_| words[(next() % 2_000) as usize].as_str())
                .collect();
            record.text = Some(text.join(" "));
            record
        })
        .collect()
}

/// Compacts a closed day made of four appended files at `zstd_level` and returns the compacted
/// table's bytes and row count.
async fn compacted_bytes(zstd_level: i32) -> (u64, i64) {
    let setup = setup().await;
    let mut replicator = replicator(&setup).await;
    for sequence in 1..=4u64 {
        let rows: Arc<[Notification]> = wordy_records(sequence, 2_000).into();
        setup
            .master
            .write_segment("prod-a", sequence, rows)
            .await
            .unwrap();
        replicator.list_master().await.unwrap();
        replicator.replicate_ready().await.unwrap();
    }
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let config = MaintenanceConfig {
        zstd_level,
        ..sluice_consumer::Config::for_tests().maintenance()
    };
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let (table, report) = maintain(replica.table().clone(), &config, today, &Fence::sole())
        .await
        .unwrap();
    assert_eq!((report.files_removed, report.files_added), (4, 1));
    let bytes = file_sizes(&table).iter().sum();
    (bytes, count(&setup).await.0)
}

#[tokio::test]
async fn compaction_rewrites_closed_days_at_the_archival_zstd_level() {
    let (as_appended, rows) = compacted_bytes(sluice_consumer::replica::REPLICA_ZSTD_LEVEL).await;
    assert_eq!(rows, 8_000);
    let archival = sluice_consumer::Config::for_tests().compact_zstd_level;
    let (archived, rows) = compacted_bytes(archival).await;
    assert_eq!(rows, 8_000);
    assert!(
        (archived as f64) < 0.95 * as_appended as f64,
        "zstd {archival}: {archived} B, zstd {}: {as_appended} B",
        sluice_consumer::replica::REPLICA_ZSTD_LEVEL
    );
}

#[tokio::test]
async fn a_table_of_an_older_schema_gains_the_new_columns() {
    let setup = setup().await;
    // A replica made by a Sluice whose contract had no `lang` yet.
    let (url, options) = setup.storage.url.table_location("replica").unwrap();
    let older: Vec<_> = schema::delta_columns()
        .into_iter()
        .filter(|field| field.name() != "lang")
        .collect();
    deltalake::DeltaTable::try_from_url_with_storage_options(url, options)
        .await
        .unwrap()
        .create()
        .with_columns(older)
        .with_partition_columns([schema::PARTITION_COLUMN])
        .await
        .unwrap();

    write(&setup.master, "prod-a", 1, 10).await;
    let mut replicator = replicator(&setup).await;
    assert_eq!(replicator.replicate_ready().await.unwrap().rows, 10);
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let english = query(
        &replica,
        "SELECT count(*) FROM notifications WHERE lang = 'en'",
    )
    .await;
    assert_eq!(english, vec![10]);
}

/// Notifications `n{i}` for `i` in `ids`, each at the same instant of `day_offset` whatever
/// segment carries it: the copies a client's retry through another node makes.
fn copies(ids: impl IntoIterator<Item = usize>, day_offset: i64) -> Vec<Notification> {
    ids.into_iter()
        .map(|i| Notification {
            id: format!("n{i}"),
            occurred_at: NOV_1 + day_offset * DAY + i as i64,
            ..records("any", 0, 1, 0)[0].clone()
        })
        .collect()
}

async fn write_copies(
    master: &MasterStore,
    producer: &str,
    sequence: u64,
    rows: Vec<Notification>,
) {
    master
        .write_segment(producer, sequence, Arc::from(rows))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_notification_stored_by_several_producers_is_replicated_once() {
    let setup = setup().await;
    // Node a stores n0..100; node b stores n50..150, n149 twice in one batch (a client that
    // re-sent it inside another request). Both in one round.
    write_copies(&setup.master, "prod-a", 1, copies(0..100, 0)).await;
    write_copies(
        &setup.master,
        "prod-b",
        1,
        copies((50..150).chain([149]), 0),
    )
    .await;
    let mut first = replicator(&setup).await;
    let report = first.replicate_ready().await.unwrap();
    assert_eq!((report.rows, report.duplicates), (150, 51), "{report:?}");
    assert_eq!(count(&setup).await, (150, 150));

    // A restarted consumer rebuilds its index from the table: b's later batch and node c's
    // copies are dropped, a new day is kept.
    write_copies(&setup.master, "prod-b", 2, copies(100..200, 0)).await;
    let mut late = copies(0..10, 0);
    late.extend(copies(1_000..1_010, 3));
    write_copies(&setup.master, "prod-c", 1, late).await;
    let mut second = replicator(&setup).await;
    let report = second.replicate_ready().await.unwrap();
    assert_eq!((report.rows, report.duplicates), (60, 60), "{report:?}");
    assert_eq!(count(&setup).await, (210, 210));

    // A compaction commits meanwhile (of the open days: Nov 1 is today here): it moves rows between
    // files, so the index still holds the table's keys and is not loaded again. A batch that
    // holds only copies still records its producer's progress.
    let loads = second.key_loads();
    let replica = open_replica(&setup.storage, "replica").await.unwrap();
    let config = MaintenanceConfig {
        concurrency: 1,
        ..sluice_consumer::Config::for_tests().maintenance()
    };
    let today = chrono::NaiveDate::from_ymd_opt(2025, 11, 1).unwrap();
    let (compacted, report) = maintain(replica.table().clone(), &config, today, &Fence::sole())
        .await
        .unwrap();
    assert!(
        compacted.version() > replica.table().version() && report.open_files_removed >= 2,
        "compaction committed: {report:?}"
    );
    write_copies(&setup.master, "prod-d", 1, copies(0..10, 0)).await;
    second.list_master().await.unwrap();
    let report = second.replicate_ready().await.unwrap();
    assert_eq!((report.rows, report.duplicates), (0, 10), "{report:?}");
    assert_eq!(second.progress().replicated("prod-d"), 1);
    assert_eq!(
        second.key_loads(),
        loads,
        "the index outlived the compactions"
    );
    assert_eq!(count(&setup).await, (210, 210));
    drop(replica);

    // Another committer's rows change the table's keys: the index is loaded again, and copies
    // of what that committer stored are dropped.
    write_copies(&setup.master, "prod-e", 1, copies(300..310, 0)).await;
    let report = replicator(&setup).await.replicate_ready().await.unwrap();
    assert_eq!((report.rows, report.duplicates), (10, 0), "{report:?}");
    write_copies(&setup.master, "prod-f", 1, copies(300..310, 0)).await;
    second.list_master().await.unwrap();
    let report = second.replicate_ready().await.unwrap();
    assert_eq!((report.rows, report.duplicates), (0, 10), "{report:?}");
    assert_eq!(
        second.key_loads(),
        loads + 1,
        "another committer's rows reload the index"
    );
    assert_eq!(count(&setup).await, (220, 220));

    // A replay of the master into a new table keeps the same notifications, once each.
    let replayed = sluice_consumer::replay(
        &setup.storage,
        "replayed",
        &sluice_consumer::Config::for_tests(),
    )
    .await
    .unwrap();
    assert_eq!(
        (replayed.rows, replayed.duplicates),
        (220, 131),
        "{replayed:?}"
    );
    let replica = open_replica(&setup.storage, "replayed").await.unwrap();
    let keys =
        "SELECT count(*) FROM (SELECT DISTINCT platform, id, occurred_at FROM notifications)";
    assert_eq!(query(&replica, keys).await, vec![220]);
}

fn lease_store(setup: &Setup, holder: &str, ttl_ms: u64) -> LeaseStore {
    LeaseStore::new(
        setup.storage.store.clone(),
        "replica",
        holder.to_string(),
        Duration::from_millis(ttl_ms),
        true,
    )
}

#[tokio::test]
async fn a_standby_takes_the_lease_only_after_the_holder_stops_renewing() {
    let setup = setup().await;
    let never = CancellationToken::new();
    let (a, b) = (lease_store(&setup, "a", 600), lease_store(&setup, "b", 600));
    let lease_a = a.acquire(&never, None).await.unwrap().unwrap();
    assert_eq!(lease_a.epoch(), 1);
    let fence_a = lease_a.fence();
    let stop_a = CancellationToken::new();
    let keeping = tokio::spawn(lease_a.keep(stop_a.clone()));

    // While a renews, b waits and gives up after its patience, naming the holder.
    let refused = b
        .acquire(&never, Some(Duration::from_millis(1_500)))
        .await
        .err()
        .expect("a live holder keeps the lease");
    assert!(
        refused.to_string().contains("held by a (epoch 1)"),
        "{refused}"
    );
    assert!(fence_a.check().is_ok());

    // a dies without a word (its renewals stop): b takes over within about the lease's time,
    // and a, had it only been paused, finds its fence expired and the newer epoch.
    keeping.abort();
    let stopped = Instant::now();
    let lease_b = b.acquire(&never, None).await.unwrap().unwrap();
    let waited = stopped.elapsed();
    assert_eq!(lease_b.epoch(), 2);
    assert!(
        (Duration::from_millis(400)..Duration::from_millis(1_600)).contains(&waited),
        "took over after {waited:?}"
    );
    assert!(fence_a.check().is_err(), "a stale holder must not commit");

    // A clean release hands the lease over at once.
    lease_b.release().await;
    let released = Instant::now();
    let lease_a = a.acquire(&never, None).await.unwrap().unwrap();
    assert_eq!(lease_a.epoch(), 3);
    assert!(released.elapsed() < Duration::from_millis(400));
}

#[tokio::test]
async fn a_consumer_restarted_on_its_host_and_address_takes_over_from_itself_at_once() {
    let setup = setup().await;
    let never = CancellationToken::new();
    let before = lease_store(&setup, "host-1 127.0.0.1:7000 pid 10", 5_000);
    let lease = before.acquire(&never, None).await.unwrap().unwrap();
    assert_eq!(lease.epoch(), 1);
    // Another address on that host is another consumer: it waits.
    let neighbour = lease_store(&setup, "host-1 127.0.0.1:7001 pid 11", 5_000);
    assert!(
        neighbour
            .acquire(&never, Some(Duration::from_millis(300)))
            .await
            .is_err()
    );
    // The same host and address under a new pid is the same consumer after a crash.
    let started = Instant::now();
    let after = lease_store(&setup, "host-1 127.0.0.1:7000 pid 12", 5_000);
    let lease = after.acquire(&never, None).await.unwrap().unwrap();
    assert_eq!(lease.epoch(), 2);
    assert!(started.elapsed() < Duration::from_secs(1));
}

/// Commits an empty batch as producer a's batch `sequence`, under `fence`.
async fn append_as(
    replica: &mut Replica,
    fence: &Fence,
    sequence: u64,
) -> Result<u64, deltalake::DeltaTableError> {
    replica
        .append(
            vec![schema::to_record_batch(&[]).unwrap()],
            &BTreeMap::from([("prod-a".to_string(), sequence)]),
            fence,
        )
        .await
}

#[tokio::test]
async fn a_holder_that_lost_the_lease_cannot_commit_rows_or_compactions() {
    let setup = setup().await;
    let mut stale = open_replica(&setup.storage, "replica").await.unwrap();
    let (old, new) = (Fence::fixed(1), Fence::fixed(2));
    stale.claim(&old).await.unwrap();
    append_as(&mut stale, &old, 1).await.unwrap();

    // The new holder records epoch 2 while the old one still works on its older snapshot.
    let mut current = open_replica(&setup.storage, "replica").await.unwrap();
    current.claim(&new).await.unwrap();
    let conflict = append_as(&mut stale, &old, 2).await.unwrap_err();
    assert!(
        conflict
            .to_string()
            .to_lowercase()
            .contains("concurrent transaction"),
        "{conflict}"
    );
    let config = sluice_consumer::Config::for_tests().maintenance();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    // A compaction prepared on the old snapshot conflicts too, and once the old holder reloads
    // the table it refuses before trying.
    stale.refresh().await.unwrap();
    let refused = append_as(&mut stale, &old, 2).await.unwrap_err();
    assert!(refused.to_string().contains("lease epoch 2"), "{refused}");
    let refused = maintain(stale.table().clone(), &config, today, &old)
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("lease epoch 2"), "{refused}");

    // The holder of epoch 2 commits; the table records producer a's sequence from epoch 1 only.
    append_as(&mut current, &new, 2).await.unwrap();
    maintain(current.table().clone(), &config, today, &new)
        .await
        .unwrap();
    assert_eq!(current.committed_sequence("prod-a").await.unwrap(), 2);
}

#[tokio::test]
async fn a_compaction_planned_before_another_compaction_or_a_newer_claim_does_not_commit() {
    let setup = setup().await;
    let mut replicator = replicator(&setup).await;
    let round = |sequence: u64| {
        let mut rows: Vec<Notification> = records("prod-a", sequence, 20, 0).to_vec();
        rows.extend(records("prod-a", sequence + 100, 20, 1).iter().cloned());
        let master = setup.master.clone();
        async move { write_copies(&master, "prod-a", sequence, rows).await }
    };
    for sequence in 1..=3 {
        round(sequence).await;
        replicator.list_master().await.unwrap();
        replicator.replicate_ready().await.unwrap();
    }
    let config = sluice_consumer::Config::for_tests().maintenance();
    let today = chrono::NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
    let rewritten = |error: deltalake::DeltaTableError| {
        let text = error.to_string().to_lowercase();
        assert!(text.contains("concurrent transaction"), "{error}");
    };

    // Two compactions of the same six files, the second planned on the version before the
    // first committed (a holder paused mid-pass while another pass ran): the second gives way,
    // where delta-rs alone would have committed it and doubled every row.
    let paused = open_replica(&setup.storage, "replica").await.unwrap();
    let first = open_replica(&setup.storage, "replica").await.unwrap();
    let (_, report) = maintain(first.table().clone(), &config, today, &Fence::sole())
        .await
        .unwrap();
    assert_eq!((report.files_removed, report.files_added), (6, 2));
    rewritten(
        maintain(paused.table().clone(), &config, today, &Fence::sole())
            .await
            .unwrap_err(),
    );
    assert_eq!(count(&setup).await, (120, 120));

    // A compaction planned by the holder of epoch 0 before the holder of epoch 1 claimed the
    // table gives way too.
    for sequence in 4..=6 {
        round(sequence).await;
        replicator.list_master().await.unwrap();
        replicator.replicate_ready().await.unwrap();
    }
    let paused = open_replica(&setup.storage, "replica").await.unwrap();
    let mut next = open_replica(&setup.storage, "replica").await.unwrap();
    next.claim(&Fence::fixed(1)).await.unwrap();
    rewritten(
        maintain(paused.table().clone(), &config, today, &Fence::sole())
            .await
            .unwrap_err(),
    );
    assert_eq!(count(&setup).await, (240, 240));

    // The new holder compacts; its commit records its epoch.
    next.refresh().await.unwrap();
    let (table, report) = maintain(next.table().clone(), &config, today, &Fence::fixed(1))
        .await
        .unwrap();
    assert_eq!((report.files_removed, report.files_added), (8, 2));
    assert_eq!(count(&setup).await, (240, 240));
    let log = table.log_store();
    let version = table.version().unwrap();
    let commit = log.read_commit_entry(version).await.unwrap().unwrap();
    let actions: Vec<serde_json::Value> = commit
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).unwrap())
        .collect();
    assert!(
        actions
            .iter()
            .any(|a| a["commitInfo"]["operation"] == "OPTIMIZE"),
        "{actions:?}"
    );
    let txns: Vec<&serde_json::Value> = actions.iter().filter_map(|a| a.get("txn")).collect();
    assert_eq!(txns.len(), 1, "{actions:?}");
    assert_eq!(txns[0]["appId"], "sluice:maintenance");
    assert_eq!(txns[0]["version"], 1);
}

#[tokio::test]
async fn on_a_store_without_put_if_absent_a_second_consumer_refuses_to_run() {
    let setup = setup().await;
    let never = CancellationToken::new();
    let unfenced = |holder: &str| {
        LeaseStore::new(
            setup.storage.store.clone(),
            "replica",
            holder.to_string(),
            Duration::from_millis(600),
            false,
        )
    };
    let lease = unfenced("a").acquire(&never, None).await.unwrap().unwrap();
    let stop = CancellationToken::new();
    let keeping = tokio::spawn(lease.keep(stop.clone()));
    let refused = unfenced("b")
        .acquire(&never, None)
        .await
        .err()
        .expect("a second committer must not run beside a live one");
    assert!(
        refused
            .to_string()
            .contains("refusing to run a second committer"),
        "{refused}"
    );
    stop.cancel();
    keeping.await.unwrap();
}

#[tokio::test]
async fn a_handle_reads_the_transactions_another_committed_once_it_refreshes() {
    let setup = setup().await;
    let mut first = open_replica(&setup.storage, "replica").await.unwrap();
    let fence = Fence::sole();
    append_as(&mut first, &fence, 1).await.unwrap();
    // Known from its own commit, then from the log at each version.
    assert_eq!(first.committed_sequence("prod-a").await.unwrap(), 1);
    assert_eq!(first.committed_sequence("prod-b").await.unwrap(), 0);

    let mut second = open_replica(&setup.storage, "replica").await.unwrap();
    assert_eq!(second.committed_sequence("prod-a").await.unwrap(), 1);
    append_as(&mut second, &fence, 7).await.unwrap();
    append_as(&mut second, &fence, 9).await.unwrap();

    // The first handle's snapshot still says 1 until it reloads the table.
    assert_eq!(first.committed_sequence("prod-a").await.unwrap(), 1);
    first.refresh().await.unwrap();
    assert_eq!(first.version(), second.version());
    assert_eq!(first.committed_sequence("prod-a").await.unwrap(), 9);
    // Its own next commit, on that snapshot, moves what it knows on.
    append_as(&mut first, &fence, 10).await.unwrap();
    assert_eq!(first.committed_sequence("prod-a").await.unwrap(), 10);
    second.refresh().await.unwrap();
    assert_eq!(second.committed_sequence("prod-a").await.unwrap(), 10);
}
