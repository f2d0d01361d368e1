//! The replication loop: the one committer of a replica table.
//!
//! It learns of master segments from publishers (a gRPC call after each Append) and from
//! listing `master/` (at start and every `list_interval`, to catch what a crash hid). It keeps
//! them pending per producer and replicates, in one Delta commit, every producer's segments
//! that follow contiguously on what the table already holds, once enough rows or bytes are
//! waiting or the oldest has waited `max_age` (the freshness knob).
//!
//! Exactly once, per round:
//! 1. reload the table and read each producer's recorded sequence from the Delta `txn`s;
//! 2. drop segments at or below it (a replay, or a commit whose answer a crash swallowed);
//!    start each producer exactly at recorded + 1, and take its segments in sequence order;
//! 3. write the Parquet files and commit them together with the new `txn` versions. The
//!    commit is atomic: either rows and versions are both in the table, or neither is.
//!
//! A crash between writing Parquet and committing leaves unreferenced files (vacuum removes
//! them) and unchanged versions, so the same segments are replicated again: never doubled,
//! never skipped.
//!
//! Across producers, a notification is one `(platform, id)`: a copy that another node stored
//! (a client's retry there, or a re-send after its entry turned red) is dropped from the round
//! when the table, or an earlier row of the round, holds it ([`crate::dedup`]). The argument in
//! full: `docs/replica.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{DataType, Date32Type};
use dashmap::DashMap;
use deltalake::datafusion::prelude::{SessionContext, col, lit};
use deltalake::datafusion::scalar::ScalarValue;
use futures::StreamExt;
use sluice_core::dead_letter::{DeadLetter, LetterKind};
use sluice_core::master::MasterStore;
use sluice_core::segment::{Segment, SegmentHeader};
use sluice_telemetry::names;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::dedup::{Day, SeenKeys};
use crate::lease::Fence;
use crate::replica::Replica;
use crate::schema::{PARTITION_COLUMN, day_of, to_record_batch};

/// When a round of replication runs.
#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    /// Replicate once this many rows are waiting…
    pub max_rows: u64,
    /// … or this many bytes of segments…
    pub max_bytes: u64,
    /// … or once the oldest waiting segment has waited this long.
    pub max_age: Duration,
    /// How often `master/` is listed to find segments no publisher announced.
    pub list_interval: Duration,
    /// Segments read from the master store at once.
    pub read_concurrency: usize,
    /// Days (before today, UTC) whose notification keys stay in memory between rounds. An older
    /// day is loaded for a round that needs it and forgotten after the first round that does
    /// not: exactly once holds at any age, this only decides what memory holds and what a late
    /// row costs.
    pub dedup_window_days: u32,
}

impl ReplicatorConfig {
    pub fn for_tests() -> Self {
        ReplicatorConfig {
            max_rows: 50_000,
            max_bytes: 64 << 20,
            max_age: Duration::from_millis(200),
            list_interval: Duration::from_secs(2),
            read_concurrency: 8,
            dedup_window_days: 7,
        }
    }
}

/// A segment the replicator was told of.
#[derive(Debug, Clone)]
pub struct SegmentNotice {
    pub producer: String,
    pub sequence: u64,
    pub path: String,
    /// Known when a publisher announces the segment; a listing only knows its size.
    pub rows: Option<u64>,
    pub bytes: u64,
}

#[derive(Debug)]
struct Pending {
    path: String,
    rows: Option<u64>,
    bytes: u64,
    since: Instant,
}

/// How far each producer's batches are in the replica. Shared with the gRPC service.
#[derive(Debug, Default)]
pub struct Progress {
    sequences: DashMap<String, u64>,
    table_version: AtomicU64,
}

impl Progress {
    /// The last replicated batch sequence of `producer`; 0 when none is known.
    pub fn replicated(&self, producer: &str) -> u64 {
        self.sequences.get(producer).map_or(0, |s| *s)
    }

    pub fn table_version(&self) -> u64 {
        self.table_version.load(Ordering::Acquire)
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RoundReport {
    pub segments: usize,
    /// Rows committed.
    pub rows: usize,
    /// Rows of the round's segments that were dropped: the table, or an earlier row of the
    /// round, held their `(platform, id)`.
    pub duplicates: usize,
    pub table_version: u64,
}

pub struct Replicator {
    master: MasterStore,
    replica: Replica,
    config: ReplicatorConfig,
    pending: BTreeMap<String, BTreeMap<u64, Pending>>,
    progress: Arc<Progress>,
    seen: SeenKeys,
    /// The table version whose rows `seen` holds for its days; `None` while a round changes
    /// it, so that a round that fails between checking and committing leaves it to be reloaded.
    seen_version: Option<u64>,
    /// Scans of day partitions that loaded keys into `seen`.
    key_loads: u64,
    /// The lease this replicator commits under; it stops when the lease is lost.
    fence: Arc<Fence>,
}

impl Replicator {
    pub fn new(
        master: MasterStore,
        replica: Replica,
        config: ReplicatorConfig,
        fence: Arc<Fence>,
    ) -> Self {
        let progress = Arc::new(Progress::default());
        progress
            .table_version
            .store(replica.version(), Ordering::Release);
        Replicator {
            master,
            replica,
            config,
            pending: BTreeMap::new(),
            progress,
            seen: SeenKeys::new(),
            seen_version: None,
            key_loads: 0,
            fence,
        }
    }

    pub fn table(&self) -> &deltalake::DeltaTable {
        self.replica.table()
    }

    /// How many times a round loaded keys from the table into its index (each a scan of
    /// `platform` and `id` in the days it lacked): at start, for a new or late day, and after
    /// another commit changed the table's rows.
    pub fn key_loads(&self) -> u64 {
        self.key_loads
    }

    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Replicates as segments arrive until `shutdown`, then replicates what is waiting once
    /// more before returning; returns at once, without that last round, when the lease is lost.
    /// Gives the notices back, for the next term of this consumer.
    pub async fn run(
        mut self,
        mut notices: mpsc::UnboundedReceiver<SegmentNotice>,
        shutdown: CancellationToken,
    ) -> mpsc::UnboundedReceiver<SegmentNotice> {
        let lost = self.fence.lost().clone();
        let mut backoff = Duration::from_millis(100);
        while let Err(error) = self.list_master().await {
            tracing::warn!(%error, "cannot list the master store; retrying");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return notices,
                () = lost.cancelled() => return notices,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let mut listing = tokio::time::interval(self.config.list_interval);
        listing.reset();
        loop {
            let deadline = self.oldest_ready().map(|since| since + self.config.max_age);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = lost.cancelled() => return notices,
                notice = notices.recv() => match notice {
                    Some(notice) => self.learn(notice).await,
                    None => break,
                },
                _ = listing.tick() => {
                    if let Err(error) = self.list_master().await {
                        tracing::warn!(%error, "cannot list the master store");
                    }
                }
                () = sleep_until(deadline) => {}
            }
            self.report_pending();
            if self.round_is_due()
                && let Err(error) = self.replicate_round().await
            {
                metrics::counter!(names::REPLICATION_ROUND_FAILURES).increment(1);
                tracing::warn!(%error, "replication round failed; retrying");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        if let Err(error) = self.replicate_ready().await {
            tracing::warn!(%error, "final replication round at shutdown failed");
        }
        notices
    }

    /// Lists the master store and replicates every segment it holds that the table does not,
    /// then returns. This is `sluice replay` and a catch-up after a long outage.
    pub async fn replicate_ready(&mut self) -> anyhow::Result<RoundReport> {
        let mut total = RoundReport {
            table_version: self.replica.version(),
            ..RoundReport::default()
        };
        loop {
            let round = self.replicate_round().await?;
            if round.segments == 0 {
                return Ok(total);
            }
            total.segments += round.segments;
            total.rows += round.rows;
            total.duplicates += round.duplicates;
            total.table_version = round.table_version;
        }
    }

    /// Lists every segment in the master store and learns of those not yet replicated.
    pub async fn list_master(&mut self) -> anyhow::Result<()> {
        for segment in self.master.list_segments().await? {
            self.learn(SegmentNotice {
                producer: segment.producer,
                sequence: segment.sequence,
                path: segment.path,
                rows: None,
                bytes: segment.size,
            })
            .await;
        }
        Ok(())
    }

    /// Takes note of a segment, unless the table already holds it.
    pub async fn learn(&mut self, notice: SegmentNotice) {
        let committed = match self.committed(&notice.producer).await {
            Ok(committed) => committed,
            Err(error) => {
                // Keep it: the round re-reads the recorded version before it commits.
                tracing::warn!(%error, producer = notice.producer, "cannot read the producer's replicated sequence");
                0
            }
        };
        if notice.sequence <= committed {
            return;
        }
        let entry = self
            .pending
            .entry(notice.producer)
            .or_default()
            .entry(notice.sequence)
            .or_insert(Pending {
                path: notice.path,
                rows: notice.rows,
                bytes: notice.bytes,
                since: Instant::now(),
            });
        entry.rows = entry.rows.or(notice.rows);
    }

    /// The producer's replicated sequence, read from the table the first time.
    async fn committed(&self, producer: &str) -> anyhow::Result<u64> {
        if let Some(sequence) = self.progress.sequences.get(producer) {
            return Ok(*sequence);
        }
        let sequence = self.replica.committed_sequence(producer).await?;
        self.progress
            .sequences
            .insert(producer.to_string(), sequence);
        Ok(sequence)
    }

    /// Each producer's pending segments that follow on its replicated sequence without a gap.
    fn ready(&self) -> impl Iterator<Item = (&String, u64, &Pending)> {
        self.pending.iter().flat_map(|(producer, segments)| {
            let mut next = self.progress.replicated(producer) + 1;
            segments
                .range(next..)
                .take_while(move |(sequence, _)| {
                    let contiguous = **sequence == next;
                    next += 1;
                    contiguous
                })
                .map(move |(sequence, pending)| (producer, *sequence, pending))
        })
    }

    /// Sets the gauges of what waits: how many segments, and how long the oldest has.
    fn report_pending(&self) {
        let segments = self.pending.values().map(BTreeMap::len).sum::<usize>();
        let oldest = self
            .pending
            .values()
            .flat_map(|segments| segments.values().map(|p| p.since))
            .min();
        metrics::gauge!(names::REPLICATION_PENDING_SEGMENTS).set(segments as f64);
        metrics::gauge!(names::REPLICATION_LAG_SECONDS)
            .set(oldest.map_or(0.0, |o| o.elapsed().as_secs_f64()));
    }

    fn oldest_ready(&self) -> Option<Instant> {
        self.ready().map(|(_, _, p)| p.since).min()
    }

    fn round_is_due(&self) -> bool {
        let (mut rows, mut bytes, mut oldest) = (0, 0, None::<Instant>);
        for (_, _, pending) in self.ready() {
            rows += pending.rows.unwrap_or(0);
            bytes += pending.bytes;
            oldest = Some(oldest.map_or(pending.since, |o| o.min(pending.since)));
        }
        rows >= self.config.max_rows
            || bytes >= self.config.max_bytes
            || oldest.is_some_and(|o| o.elapsed() >= self.config.max_age)
    }

    /// One commit: the ready segments (up to the row and byte bounds) of every producer.
    pub async fn replicate_round(&mut self) -> anyhow::Result<RoundReport> {
        // 1. What does the table hold now? Another committer (a consumer presumed dead) or an
        //    earlier life of this one may have moved a producer on.
        self.replica.refresh().await?;
        let producers: Vec<String> = self.pending.keys().cloned().collect();
        for producer in producers {
            let recorded = self.replica.committed_sequence(&producer).await?;
            self.progress.sequences.insert(producer.clone(), recorded);
            if let Some(segments) = self.pending.get_mut(&producer) {
                segments.retain(|sequence, _| *sequence > recorded);
            }
        }
        self.pending.retain(|_, segments| !segments.is_empty());

        // 2. Take ready segments in order, within the bounds of one round.
        let round_started = Instant::now();
        let (mut rows, mut bytes) = (0, 0);
        let mut chosen: Vec<(String, u64, String)> = Vec::new();
        for (producer, sequence, pending) in self.ready() {
            if !chosen.is_empty()
                && (rows >= self.config.max_rows || bytes >= self.config.max_bytes)
            {
                break;
            }
            rows += pending.rows.unwrap_or(0);
            bytes += pending.bytes;
            chosen.push((producer.clone(), sequence, pending.path.clone()));
        }
        if chosen.is_empty() {
            return Ok(RoundReport {
                table_version: self.replica.version(),
                ..RoundReport::default()
            });
        }

        let paths: Vec<String> = chosen.iter().map(|(_, _, path)| path.clone()).collect();
        let master = self.master.clone();
        let reads: Vec<sluice_core::Result<Segment>> = futures::stream::iter(paths)
            .map(|path| {
                let master = master.clone();
                async move { master.read_segment(&path).await }
            })
            .buffered(self.config.read_concurrency)
            .collect()
            .await;
        let mut segments = Vec::with_capacity(reads.len());
        let mut last_sequences = BTreeMap::new();
        for ((producer, sequence, path), read) in chosen.iter().zip(reads) {
            let segment = match self.verified(producer, *sequence, path, read).await {
                Ok(segment) => segment,
                Err(sluice_core::Error::NotFound { path }) => {
                    // An announcement of a segment that does not exist (a publisher of another
                    // store, a typo in an address) must not block the others: forget it. A real
                    // segment is found again by the next listing.
                    for segments in self.pending.values_mut() {
                        segments.retain(|_, pending| pending.path != *path);
                    }
                    return Err(sluice_core::Error::NotFound { path }.into());
                }
                Err(error) => return Err(error.into()),
            };
            segments.push(segment);
            last_sequences.insert(producer.clone(), *sequence);
        }

        // 3. Drop the copies of notifications that the table or an earlier row holds. The index
        //    must describe the rows of the table this round commits onto: a commit since it was
        //    loaded that changes rows (a second committer) makes it reload; one that only moves
        //    them between files (a compaction, every maintenance pass) does not.
        let base_version = self.replica.version();
        let still_true = match self.seen_version {
            Some(seen) => self.keys_unchanged(seen, base_version).await,
            None => false,
        };
        if !still_true {
            self.seen.clear();
        }
        self.seen_version = None;
        let days: BTreeSet<Day> = segments
            .iter()
            .flat_map(|segment| segment.records.iter().map(|n| day_of(n.occurred_at)))
            .collect();
        self.load_days(&days).await?;
        let mut seen = std::mem::take(&mut self.seen);
        let (batch, seen, duplicates) = tokio::task::spawn_blocking(move || {
            let keep: BooleanArray = segments
                .iter()
                .flat_map(|segment| segment.records.iter())
                .map(|n| Some(seen.insert(day_of(n.occurred_at), seen.key(&n.platform, &n.id))))
                .collect();
            let duplicates = keep.false_count();
            let mut batch = to_record_batch(&segments)?;
            if duplicates > 0 {
                batch = filter_record_batch(&batch, &keep)?;
            }
            anyhow::Ok((batch, seen, duplicates))
        })
        .await??;
        self.seen = seen;
        let rows = batch.num_rows();

        // 4. Rows and versions in one atomic commit.
        let version = self
            .replica
            .append(vec![batch], &last_sequences, &self.fence)
            .await?;
        if self.keys_unchanged(base_version, version - 1).await {
            self.seen_version = Some(version);
        }
        let today = day_of(chrono::Utc::now().timestamp_micros());
        self.seen.forget_days_before(
            today.saturating_sub(self.config.dedup_window_days as i32),
            &days,
        );
        if duplicates > 0 {
            tracing::info!(
                duplicates,
                version,
                "dropped notifications the replica holds"
            );
        }
        for (producer, sequence) in &last_sequences {
            self.progress.sequences.insert(producer.clone(), *sequence);
            if let Some(segments) = self.pending.get_mut(producer) {
                segments.retain(|s, _| s > sequence);
            }
        }
        self.pending.retain(|_, segments| !segments.is_empty());
        self.progress
            .table_version
            .store(version, Ordering::Release);
        metrics::histogram!(names::REPLICA_COMMIT_SECONDS)
            .record(round_started.elapsed().as_secs_f64());
        metrics::counter!(names::REPLICATED_ROWS).increment(rows as u64);
        metrics::counter!(names::REPLICATED_SEGMENTS).increment(chosen.len() as u64);
        metrics::counter!(names::REPLICA_DUPLICATES_DROPPED).increment(duplicates as u64);
        metrics::gauge!(names::REPLICA_VERSION).set(version as f64);
        self.report_pending();
        tracing::debug!(segments = chosen.len(), rows, version, "replicated");
        Ok(RoundReport {
            segments: chosen.len(),
            rows,
            duplicates,
            table_version: version,
        })
    }

    /// The segment `read` gave, if it decodes and is the one expected at (producer, sequence).
    /// One that does not, read a second time to rule out a fault in transit, is quarantined:
    /// it is replicated as an empty segment, so its producer and every other go on, and a
    /// dead letter says why. Store errors are returned, to be retried.
    async fn verified(
        &self,
        producer: &str,
        sequence: u64,
        path: &str,
        read: sluice_core::Result<Segment>,
    ) -> sluice_core::Result<Segment> {
        let is_expected =
            |s: &Segment| s.header.producer == producer && s.header.sequence == sequence;
        let first = match read {
            Ok(segment) if is_expected(&segment) => return Ok(segment),
            Err(error) if !error.is_undecodable() => return Err(error),
            first => first,
        };
        let reason = match self.master.read_segment(path).await {
            Ok(segment) if is_expected(&segment) => return Ok(segment),
            Ok(segment) => format!(
                "the segment at {path} says it is {}/{}",
                segment.header.producer, segment.header.sequence
            ),
            Err(error) if error.is_undecodable() => error.to_string(),
            Err(error) => return Err(error),
        };
        tracing::error!(
            path,
            reason,
            first = ?first.err().map(|e| e.to_string()),
            "quarantining a master segment that cannot be replicated; its producer goes on"
        );
        let letter = DeadLetter {
            kind: LetterKind::Quarantined,
            producer: producer.to_string(),
            sequence,
            reason,
            at_micros: chrono::Utc::now().timestamp_micros(),
            rows: 0,
            segment: Some(path.to_string()),
            notifications: Vec::new(),
        };
        self.master.dead_letters().write(&letter).await?;
        metrics::counter!(names::DEAD_LETTERS, "kind" => "quarantined").increment(1);
        Ok(Segment {
            header: SegmentHeader {
                producer: producer.to_string(),
                sequence,
                rows: 0,
                crc32c: 0,
            },
            records: Vec::new(),
        })
    }

    /// Whether the table's rows at version `upto` are those at `after` (see
    /// [`crate::replica::Replica::changes_no_rows`]); a commit that cannot be read counts as a
    /// change.
    async fn keys_unchanged(&self, after: u64, upto: u64) -> bool {
        if after > upto {
            return false;
        }
        match self.replica.changes_no_rows(after, upto).await {
            Ok(unchanged) => unchanged,
            Err(error) => {
                tracing::warn!(%error, after, upto, "cannot read the replica's commits; reloading its keys");
                false
            }
        }
    }

    /// Loads into the index the keys that the table holds for those of `days` it does not hold
    /// yet: one scan of those day partitions, reading `platform` and `id` only.
    async fn load_days(&mut self, days: &BTreeSet<Day>) -> anyhow::Result<()> {
        let missing: Vec<Day> = days
            .iter()
            .copied()
            .filter(|day| !self.seen.holds_day(*day))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let provider = self.replica.table().table_provider().await?;
        let in_days = missing
            .iter()
            .map(|day| lit(ScalarValue::Date32(Some(*day))))
            .collect();
        let mut batches = SessionContext::new()
            .read_table(provider)?
            .filter(col(PARTITION_COLUMN).in_list(in_days, false))?
            .select_columns(&[PARTITION_COLUMN, "platform", "id"])?
            .execute_stream()
            .await?;
        self.key_loads += 1;
        for day in &missing {
            self.seen.hold_day(*day);
        }
        let mut loaded = 0;
        while let Some(batch) = batches.next().await {
            loaded += self.insert_keys(&batch?)?;
        }
        tracing::info!(
            days = missing.len(),
            keys = loaded,
            held = self.seen.len(),
            heap_bytes = self.seen.heap_bytes(),
            ms = started.elapsed().as_millis() as u64,
            "loaded the replica's notification keys"
        );
        Ok(())
    }

    /// Adds the `(day, platform, id)` rows of `batch` to the index; returns how many.
    fn insert_keys(&mut self, batch: &RecordBatch) -> anyhow::Result<usize> {
        let as_utf8 = |i: usize| arrow::compute::cast(batch.column(i), &DataType::Utf8);
        let day = arrow::compute::cast(batch.column(0), &DataType::Date32)?;
        let (platform, id) = (as_utf8(1)?, as_utf8(2)?);
        let (day, platform, id) = (
            day.as_primitive::<Date32Type>(),
            platform.as_string::<i32>(),
            id.as_string::<i32>(),
        );
        anyhow::ensure!(
            day.null_count() + platform.null_count() + id.null_count() == 0,
            "the replica holds a row without a day, platform or id"
        );
        for row in 0..batch.num_rows() {
            let key = self.seen.key(platform.value(row), id.value(row));
            self.seen.insert(day.value(row), key);
        }
        Ok(batch.num_rows())
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
