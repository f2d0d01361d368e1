//! The newsfeed: the current position in the replicated order and the history up to it, then
//! every notification replicated after a position, as its commit lands, without a gap or a
//! repeat.
//!
//! The replicated order is the Delta log's: version after version, and inside a version the
//! data files its commit added (`add` actions with `dataChange`, in the commit's order), row by
//! row. Every notification is in exactly one such commit (the consumer drops what the table
//! already holds, and compaction's commits change no data), the log is one line whichever
//! consumer wrote it, and files never change, so a position `V.F.R` (row R of the F-th added
//! file of version V) names one notification forever, whichever handler is asked, across a
//! consumer failover or an ingest node's restart. `V` alone is "after all of version V": what
//! the history answers and what a checkpoint says.
//!
//! One task per handler watches the log's head (a GET of the next commit every
//! `--feed-poll-ms`, while anyone follows), so a commit reaches followers within that interval
//! rather than at the replica's snapshot refresh. The added files of recent versions and their
//! decoded rows are kept in a small cache, so followers at the head read each file once.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use prost::Message;
use sluice_proto::v1::{self, FeedBatch, FeedFilter, FeedItem};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::error::QueryError;
use crate::replica::ReplicaView;

/// Items per message of the stream.
const ITEMS_PER_BATCH: usize = 512;
/// Bytes of decoded rows the cache keeps.
const CACHED_ROW_BYTES: usize = 64 << 20;
/// Versions whose file lists the cache keeps.
const CACHED_VERSIONS: usize = 1024;

/// A place in the replicated order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub version: u64,
    /// The file and row inside `version` last delivered; None when all of it was.
    pub within: Option<(u32, u32)>,
}

impl FromStr for Position {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a feed position: `V` (a Delta version) or `V.F.R` (a file and row \
                 in it), as a feed's `version` or an event's id gives"
            )
        };
        if text.is_empty() || text.len() > 64 {
            return Err(bad());
        }
        let parts: Vec<&str> = text.split('.').collect();
        let number = |part: &str| -> Result<u64, String> {
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            part.parse().map_err(|_| bad())
        };
        match parts.as_slice() {
            [version] => Ok(Position {
                version: number(version)?,
                within: None,
            }),
            [version, file, row] => {
                let small = |n: u64| u32::try_from(n).map_err(|_| bad());
                Ok(Position {
                    version: number(version)?,
                    within: Some((small(number(file)?)?, small(number(row)?)?)),
                })
            }
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.within {
            None => write!(f, "{}", self.version),
            Some((file, row)) => write!(f, "{}.{file}.{row}", self.version),
        }
    }
}

/// Which notifications a feed carries.
#[derive(Debug, Clone)]
pub struct Filter {
    pub platform: String,
    pub post_id: Option<String>,
    pub kind: Option<String>,
}

impl Filter {
    pub fn of(filter: Option<FeedFilter>) -> Result<Self, Status> {
        let filter = filter.unwrap_or_default();
        sluice_core::notification::check_platform(&filter.platform)
            .map_err(|e| Status::invalid_argument(format!("platform: {e}")))?;
        Ok(Filter {
            platform: filter.platform,
            post_id: filter.post_id,
            kind: filter.r#type,
        })
    }

    fn matches(&self, n: &v1::Notification) -> bool {
        n.platform == self.platform
            && self
                .post_id
                .as_ref()
                .is_none_or(|post| n.post_id.as_ref() == Some(post))
            && self.kind.as_ref().is_none_or(|kind| &n.r#type == kind)
    }
}

/// The feed of one handler: the log's head, and what recent versions added.
pub struct Feed {
    replica: Arc<ReplicaView>,
    /// The newest version known to be in the log.
    head: watch::Sender<u64>,
    poll: Duration,
    poller: Mutex<Option<tokio::task::JoinHandle<()>>>,
    files: Mutex<VecDeque<(u64, Arc<Vec<Path>>)>>,
    rows: Mutex<VecDeque<CachedRows>>,
}

/// The decoded rows of one added file (version, file), once read, and their size in bytes (0
/// while being read).
struct CachedRows {
    key: (u64, u32),
    rows: Arc<tokio::sync::OnceCell<Arc<Vec<v1::Notification>>>>,
    size: usize,
}

impl Feed {
    pub fn new(replica: Arc<ReplicaView>, poll: Duration) -> Arc<Self> {
        Arc::new(Feed {
            replica,
            head: watch::Sender::new(0),
            poll,
            poller: Mutex::new(None),
            files: Mutex::new(VecDeque::new()),
            rows: Mutex::new(VecDeque::new()),
        })
    }

    /// Called when the replica's snapshot moves on: the log holds at least `version`.
    pub fn saw(&self, version: u64) {
        self.head.send_if_modified(|head| {
            let newer = version > *head;
            if newer {
                *head = version;
            }
            newer
        });
    }

    /// Checks `after` and starts following it: every matching notification after it goes to
    /// the returned receiver, in order, until the receiver is dropped. Errors that the client
    /// must hear before the stream (a position past the log's end or out of it) come here.
    pub async fn follow(
        self: &Arc<Self>,
        filter: Filter,
        after: Position,
    ) -> Result<mpsc::Receiver<Result<FeedBatch, Status>>, Status> {
        let head = self.subscribe();
        if let Some(snapshot) = self.replica.current() {
            self.saw(snapshot.version);
        }
        if after.version > *head.borrow() {
            // Another handler may have seen a newer version than this one has yet.
            if self.files_of(after.version).await?.is_none() {
                return Err(Status::invalid_argument(format!(
                    "version {} is not in the replica yet (the latest is {}): start from a feed's `version`",
                    after.version,
                    *head.borrow()
                )));
            }
            self.saw(after.version);
        }
        // The next version to send must still be in the log.
        let next = if after.within.is_some() {
            after.version
        } else {
            after.version + 1
        };
        if next <= *head.borrow() && self.files_of(next).await?.is_none() {
            return Err(gone(next));
        }
        let (sender, receiver) = mpsc::channel(4);
        let feed = Arc::clone(self);
        tokio::spawn(async move {
            if let Err(status) = feed.send_from(&filter, after, head, &sender).await {
                let _ = sender.send(Err(status)).await;
            }
        });
        Ok(receiver)
    }

    /// Sends everything after `at` that `filter` lets through, then each new version, until
    /// the client is gone (Ok) or a version cannot be read (the error, for the client).
    async fn send_from(
        &self,
        filter: &Filter,
        mut at: Position,
        mut head: watch::Receiver<u64>,
        sender: &mpsc::Sender<Result<FeedBatch, Status>>,
    ) -> Result<(), Status> {
        loop {
            let latest = *head.borrow_and_update();
            while at.within.is_some() || at.version < latest {
                let version = if at.within.is_some() {
                    at.version
                } else {
                    at.version + 1
                };
                let files = self.files_of(version).await?.ok_or_else(|| gone(version))?;
                let (first_file, first_row) = match at.within {
                    Some((file, row)) => (file, row as usize + 1),
                    None => (0, 0),
                };
                for (file, path) in files.iter().enumerate().skip(first_file as usize) {
                    let file = file as u32;
                    let rows = self.rows_of(version, file, path).await?;
                    let start = if file == first_file { first_row } else { 0 };
                    let items: Vec<FeedItem> = rows
                        .iter()
                        .enumerate()
                        .skip(start)
                        .filter(|(_, n)| filter.matches(n))
                        .map(|(row, n)| FeedItem {
                            position: format!("{version}.{file}.{row}"),
                            notification: Some(n.clone()),
                        })
                        .collect();
                    for chunk in items.chunks(ITEMS_PER_BATCH) {
                        let batch = FeedBatch {
                            items: chunk.to_vec(),
                            checkpoint: None,
                        };
                        if sender.send(Ok(batch)).await.is_err() {
                            return Ok(());
                        }
                    }
                }
                let done = FeedBatch {
                    items: Vec::new(),
                    checkpoint: Some(version),
                };
                if sender.send(Ok(done)).await.is_err() {
                    return Ok(());
                }
                at = Position {
                    version,
                    within: None,
                };
            }
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return Ok(()) },
                _ = sender.closed() => return Ok(()),
            }
        }
    }

    /// A receiver of the head, with the task that moves it running.
    fn subscribe(self: &Arc<Self>) -> watch::Receiver<u64> {
        let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = self.head.subscribe();
        if poller.is_none() {
            *poller = Some(tokio::spawn(Arc::clone(self).watch_head()));
        }
        receiver
    }

    /// Moves the head as commits land, while anyone follows.
    async fn watch_head(self: Arc<Self>) {
        loop {
            {
                // Under the lock that `subscribe` takes: a follower that comes now either is
                // counted here, or finds no poller and starts one.
                let mut poller = self.poller.lock().unwrap_or_else(|e| e.into_inner());
                if self.head.receiver_count() == 0 {
                    *poller = None;
                    return;
                }
            }
            let next = *self.head.borrow() + 1;
            match self.files_of(next).await {
                Ok(Some(_)) => {
                    self.saw(next);
                    continue;
                }
                Ok(None) => {}
                Err(error) => {
                    tracing::warn!(%error, version = next, "cannot read the replica's log")
                }
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// The data files version `version` added, in its commit's order; None when the log does
    /// not hold that version (not yet, or no longer).
    async fn files_of(&self, version: u64) -> Result<Option<Arc<Vec<Path>>>, Status> {
        if let Some(files) = self
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|(v, _)| *v == version)
        {
            return Ok(Some(Arc::clone(&files.1)));
        }
        let log_store = self.replica.log_store().ok_or_else(|| {
            Status::unavailable("the replica table does not exist yet or was not loaded")
        })?;
        let commit = log_store.read_commit_entry(version).await.map_err(|e| {
            Status::from(QueryError::Unavailable(format!("the replica's log: {e}")))
        })?;
        let Some(commit) = commit else {
            return Ok(None);
        };
        let files = Arc::new(added_files(&commit)?);
        let mut cache = self.files.lock().unwrap_or_else(|e| e.into_inner());
        if !cache.iter().any(|(v, _)| *v == version) {
            cache.push_back((version, Arc::clone(&files)));
            while cache.len() > CACHED_VERSIONS {
                cache.pop_front();
            }
        }
        Ok(Some(files))
    }

    /// The notifications of one added file, in its row order. Followers at the head ask for
    /// the same file at once: one of them reads it, the others wait for its rows.
    async fn rows_of(
        &self,
        version: u64,
        file: u32,
        path: &Path,
    ) -> Result<Arc<Vec<v1::Notification>>, Status> {
        let key = (version, file);
        let cell = {
            let mut cache = self.rows.lock().unwrap_or_else(|e| e.into_inner());
            match cache.iter().find(|entry| entry.key == key) {
                Some(entry) => Arc::clone(&entry.rows),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    cache.push_back(CachedRows {
                        key,
                        rows: Arc::clone(&cell),
                        size: 0,
                    });
                    cell
                }
            }
        };
        let rows = cell
            .get_or_try_init(|| self.read_rows(path))
            .await
            .inspect_err(|_| {
                // Not kept: the next follower tries again.
                self.rows
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .retain(|entry| !Arc::ptr_eq(&entry.rows, &cell));
            })?
            .clone();
        // Sized once, by the follower that finds it unsized; later ones only take the rows.
        let to_size = self
            .rows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|entry| Arc::ptr_eq(&entry.rows, &cell) && entry.size == 0);
        if !to_size {
            return Ok(rows);
        }
        let size: usize = rows.iter().map(Message::encoded_len).sum();
        let mut cache = self.rows.lock().unwrap_or_else(|e| e.into_inner());
        let mut oversized = false;
        if let Some(entry) = cache.iter_mut().find(|e| Arc::ptr_eq(&e.rows, &cell)) {
            entry.size = size;
            oversized = size > CACHED_ROW_BYTES;
        }
        if oversized {
            cache.retain(|entry| !Arc::ptr_eq(&entry.rows, &cell));
        }
        let mut total: usize = cache.iter().map(|entry| entry.size).sum();
        while total > CACHED_ROW_BYTES
            && let Some(oldest) = cache.pop_front()
        {
            total -= oldest.size;
        }
        Ok(rows)
    }

    /// Reads and decodes one added file whole: a file one commit added is one batch of the
    /// consumer's.
    async fn read_rows(&self, path: &Path) -> Result<Arc<Vec<v1::Notification>>, Status> {
        let log_store = self.replica.log_store().ok_or_else(|| {
            Status::unavailable("the replica table does not exist yet or was not loaded")
        })?;
        let store =
            sluice_core::instrumented::Instrumented::new(log_store.object_store(None), "replica");
        let unreadable = |e: &dyn std::fmt::Display| {
            Status::from(QueryError::Unavailable(format!("{path}: {e}")))
        };
        let bytes = store
            .get(path)
            .await
            .map_err(|e| unreadable(&e))?
            .bytes()
            .await
            .map_err(|e| unreadable(&e))?;
        let batches = tokio::task::spawn_blocking(move || {
            ParquetRecordBatchReaderBuilder::try_new(bytes)?
                .build()?
                .collect::<Result<Vec<_>, _>>()
                .map_err(Into::into)
        })
        .await
        .map_err(|e| unreadable(&e))?
        .map_err(|e: datafusion::parquet::errors::ParquetError| unreadable(&e))?;
        Ok(Arc::new(crate::lookup::to_notifications(&batches)?))
    }
}

/// What a client hears when the log no longer holds the version it needs.
fn gone(version: u64) -> Status {
    Status::out_of_range(format!(
        "version {version} is no longer in the replica's log (old commits are cleaned up after \
         checkpoints): read the feed's history again and follow from its `version`"
    ))
}

/// The data files a commit added, in its order: `add` actions that change data (compaction's
/// do not), their paths relative to the table, percent-decoded.
fn added_files(commit: &[u8]) -> Result<Vec<Path>, Status> {
    let mut files = Vec::new();
    for line in commit.split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let action: serde_json::Value = serde_json::from_slice(line).map_err(|e| {
            Status::from(QueryError::Internal(format!(
                "a replica commit does not parse: {e}"
            )))
        })?;
        let Some(add) = action.get("add") else {
            continue;
        };
        if add.get("dataChange").and_then(serde_json::Value::as_bool) == Some(false) {
            continue;
        }
        let path = add
            .get("path")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| {
                Status::from(QueryError::Internal(
                    "a replica commit adds a file without a path".to_string(),
                ))
            })?;
        let path = Path::from_url_path(path).map_err(|e| {
            Status::from(QueryError::Internal(format!(
                "a replica commit adds {path:?}: {e}"
            )))
        })?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_print_back() {
        for text in ["0", "17", "17.0.0", "17.3.4095"] {
            assert_eq!(text.parse::<Position>().unwrap().to_string(), text);
        }
        for bad in [
            "",
            "-1",
            "1.2",
            "1.2.3.4",
            "a",
            "1..2",
            "1.2.x",
            " 1",
            "99999999999999999999",
            "1.4294967296.0",
        ] {
            let error = bad.parse::<Position>().unwrap_err();
            assert!(error.contains("is not a feed position"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_commit_adds_the_files_that_change_data_in_its_order() {
        let commit = br#"{"commitInfo":{"operation":"WRITE"}}
{"txn":{"appId":"node-1","version":4}}
{"add":{"path":"day=2026-01-01/part-1.parquet","dataChange":true,"size":1}}
{"add":{"path":"day=2026-01-02/part%20two.parquet","dataChange":true,"size":1}}
{"add":{"path":"day=2026-01-01/compacted.parquet","dataChange":false,"size":1}}
{"remove":{"path":"day=2026-01-01/old.parquet","dataChange":false}}
"#;
        let files = added_files(commit).unwrap();
        let names: Vec<String> = files.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "day=2026-01-01/part-1.parquet",
                "day=2026-01-02/part two.parquet"
            ]
        );
        assert!(added_files(b"{not json").is_err());
    }
}
