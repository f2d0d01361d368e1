//! The consumer's deduplication index: bytes per key at 10 million keys, the cost of a key, and
//! how long a day of keys takes to load from the replica.
//!
//! ```sh
//! cargo bench --bench dedup                       # 10,000,000 keys; a 1,000,000-row day
//! cargo bench --bench dedup -- 1000000 200000     # keys, rows of the replica's day
//! ```
//!
//! Memory is measured twice: as the index counts its own heap (`SeenKeys::heap_bytes`, from the
//! hash table's layout) and as the process's resident set grows while the keys go in. The load
//! is a consumer's first round on a day of the replica (a directory): a fresh replicator
//! commits one new notification of that day, which makes it read the day's `platform` and `id`
//! and index them; the same-run peer is one more round on a day the replica does not hold (no
//! load). The scan alone, `SELECT platform, id` of that day in DataFusion, is the reading part.
//! Results: `bench/README.md`, "Deduplication index".

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use deltalake::datafusion::prelude::SessionContext;
use sluice_consumer::dedup::SeenKeys;
use sluice_consumer::lease::Fence;
use sluice_consumer::replica::Replica;
use sluice_consumer::replicator::{Replicator, ReplicatorConfig};
use sluice_consumer::schema::to_record_batch;
use sluice_core::Notification;
use sluice_core::master::MasterStore;
use sluice_core::segment::{Segment, SegmentHeader};
use sluice_core::storage::{Storage, StorageUrl};

const DAY_MICROS: i64 = 86_400_000_000;
/// 2025-11-20, the day the replica's rows fall in.
const DAY: i64 = 20_412;
const PLATFORMS: [&str; 8] = [
    "x",
    "instagram",
    "mastodon",
    "bluesky",
    "threads",
    "facebook",
    "tiktok",
    "reddit",
];

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn notification(i: usize, day: i64) -> Notification {
    Notification {
        platform: PLATFORMS[i % PLATFORMS.len()].to_string(),
        id: format!("{i:016x}-{}", i.wrapping_mul(2_654_435_761) % 1_000_003),
        kind: "post.liked".into(),
        occurred_at: day * DAY_MICROS + (i as i64 % DAY_MICROS),
        received_at: day * DAY_MICROS,
        post_id: Some(format!("p{}", i % 10_000)),
        author_id: None,
        actor_id: None,
        text: None,
        lang: None,
        tags: Vec::new(),
        metrics: BTreeMap::new(),
        attributes: None,
    }
}

fn index_memory(keys: usize) {
    let mut seen = SeenKeys::new();
    seen.hold_day(0);
    let ids: Vec<(String, String)> = (0..keys)
        .map(|i| {
            let n = notification(i, DAY);
            (n.platform, n.id)
        })
        .collect();
    let before = resident_bytes();
    let started = Instant::now();
    for (platform, id) in &ids {
        let key = seen.key(platform, id);
        assert!(seen.insert(0, key));
    }
    let elapsed = started.elapsed();
    let grown = resident_bytes().saturating_sub(before);
    println!(
        "| index, {keys} keys in one day | {:.1} B/key (heap, from the table's layout) | {:.1} B/key (resident set growth) | {:.0} ns/key (hash and insert) |",
        seen.heap_bytes() as f64 / keys as f64,
        grown as f64 / keys as f64,
        elapsed.as_nanos() as f64 / keys as f64,
    );
}

async fn load_time(rows: usize) {
    let dir = tempfile::tempdir().unwrap();
    let storage = Storage::open(&StorageUrl::Local(dir.path().to_path_buf()))
        .await
        .unwrap();
    let (url, options) = storage.url.table_location("replica").unwrap();
    let mut replica = Replica::open_or_create(url, options).await.unwrap();
    let fence = Fence::sole();
    let per_commit = 200_000;
    for (commit, start) in (0..rows).step_by(per_commit).enumerate() {
        let records: Vec<Notification> = (start..(start + per_commit).min(rows))
            .map(|i| notification(i, DAY))
            .collect();
        let segment = Segment {
            header: SegmentHeader {
                producer: "bench".into(),
                sequence: commit as u64 + 1,
                rows: records.len() as u64,
                crc32c: 0,
            },
            records,
        };
        let batch = to_record_batch(&[segment]).unwrap();
        let last = BTreeMap::from([("bench".to_string(), commit as u64 + 1)]);
        replica.append(vec![batch], &last, &fence).await.unwrap();
    }

    // The reading part alone.
    let ctx = SessionContext::new();
    ctx.register_table(
        "notifications",
        replica.table().table_provider().await.unwrap(),
    )
    .unwrap();
    let started = Instant::now();
    let scanned: usize = ctx
        .sql("SELECT platform, id FROM notifications WHERE day = DATE '2025-11-20'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap()
        .iter()
        .map(|b| b.num_rows())
        .sum();
    let scan = started.elapsed();
    assert_eq!(scanned, rows);

    let master = MasterStore::new(storage.store.clone());
    let round = |sequence: u64, day: i64, i: usize| {
        let master = master.clone();
        let storage = storage.clone();
        async move {
            let records: Arc<[Notification]> = Arc::from(vec![notification(i, day)]);
            master
                .write_segment("probe", sequence, records)
                .await
                .unwrap();
            let (url, options) = storage.url.table_location("replica").unwrap();
            let replica = Replica::open_or_create(url, options).await.unwrap();
            let mut replicator = Replicator::new(
                master,
                replica,
                ReplicatorConfig::for_tests(),
                Fence::sole(),
            );
            replicator.list_master().await.unwrap();
            let started = Instant::now();
            let report = replicator.replicate_ready().await.unwrap();
            assert_eq!((report.rows, report.duplicates), (1, 0));
            started.elapsed()
        }
    };
    let loading = round(1, DAY, rows + 1).await;
    let peer = round(2, DAY + 3, rows + 2).await;
    println!(
        "| first round on a day of {rows} rows (loads its keys) | {:.2} s | {:.2} s without a load (peer) | {:.2} s the scan alone | {:.0} keys/s loaded |",
        loading.as_secs_f64(),
        peer.as_secs_f64(),
        scan.as_secs_f64(),
        rows as f64 / (loading.saturating_sub(peer)).as_secs_f64().max(1e-9),
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let keys = args.first().copied().unwrap_or(10_000_000);
    let rows = args.get(1).copied().unwrap_or(1_000_000);
    index_memory(keys);
    load_time(rows).await;
}
