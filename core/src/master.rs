//! The master store: the row-oriented source of truth under `master/`.
//!
//! One immutable segment per publisher batch, at `master/<producer>/<sequence>.avro` with the
//! sequence zero-padded to 20 digits so that keys sort in sequence order. A segment is written
//! put-if-absent: the key derives from (producer, sequence) alone, so only a retry of the same
//! batch can land on an existing key, and then the checksum in the existing header decides
//! whether it is the same batch (the retry succeeds without writing) or a different one (an
//! error, never an overwrite).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::Notification;
use crate::dead_letter::DeadLetters;
use crate::error::{Error, Result};
use crate::segment::{self, Segment};

/// Where segments live inside the store.
pub const MASTER_PREFIX: &str = "master";

/// What a segment write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentWrite {
    /// The segment is new.
    Created { path: String, bytes: usize },
    /// The same batch was already stored by an earlier attempt; nothing was written.
    AlreadyPresent { path: String },
}

impl SegmentWrite {
    pub fn path(&self) -> &str {
        match self {
            SegmentWrite::Created { path, .. } | SegmentWrite::AlreadyPresent { path } => path,
        }
    }
}

/// A segment found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRef {
    pub path: String,
    pub producer: String,
    pub sequence: u64,
    pub size: u64,
    /// When the store last wrote it, in microseconds since the epoch.
    pub last_modified_micros: i64,
}

#[derive(Debug, Clone)]
pub struct MasterStore {
    store: Arc<dyn ObjectStore>,
}

impl MasterStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        MasterStore { store }
    }

    /// The key of a producer's batch.
    pub fn segment_path(producer: &str, sequence: u64) -> Result<Path> {
        check_producer_id(producer)?;
        Ok(Path::from(format!(
            "{MASTER_PREFIX}/{producer}/{sequence:020}.avro"
        )))
    }

    /// Writes one batch as a segment, put-if-absent. Answers only after the store confirmed
    /// the write (or confirmed that this very batch is already there).
    pub async fn write_segment(
        &self,
        producer: &str,
        sequence: u64,
        records: Arc<[Notification]>,
    ) -> Result<SegmentWrite> {
        let path = Self::segment_path(producer, sequence)?;
        let rows = records.len() as u64;
        // Encoding a large batch takes milliseconds of CPU: keep it off the async workers.
        let owned_producer = producer.to_string();
        let (bytes, crc) = tokio::task::spawn_blocking(move || {
            segment::encode(&owned_producer, sequence, &records)
        })
        .await
        .map_err(|e| Error::Avro(format!("segment encoder task failed: {e}")))??;
        let size = bytes.len();
        let put = self
            .store
            .put_opts(
                &path,
                PutPayload::from(bytes),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match put {
            Ok(_) => Ok(SegmentWrite::Created {
                path: path.to_string(),
                bytes: size,
            }),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.read_raw(&path).await?;
                let header = segment::read_header(path.as_ref(), &existing)?;
                if header.crc32c == crc && header.rows == rows {
                    Ok(SegmentWrite::AlreadyPresent {
                        path: path.to_string(),
                    })
                } else {
                    Err(Error::SegmentConflict {
                        path: path.to_string(),
                        existing: header.crc32c,
                        new: crc,
                    })
                }
            }
            Err(e) => Err(Error::object_store(path.as_ref(), e)),
        }
    }

    /// Fills a refused batch's place in its producer's sequence with an empty segment, so that
    /// the replica, which takes a producer's segments in order, goes on past it. A segment that
    /// already sits there (an earlier attempt of the batch landed after all, or the other batch
    /// that made the key collide) fills the place as well: then nothing is written.
    pub async fn fill_gap(&self, producer: &str, sequence: u64) -> Result<SegmentWrite> {
        match self.write_segment(producer, sequence, Arc::from([])).await {
            Err(Error::SegmentConflict { path, .. }) => Ok(SegmentWrite::AlreadyPresent { path }),
            other => other,
        }
    }

    /// The dead letters kept beside this master store.
    pub fn dead_letters(&self) -> DeadLetters {
        DeadLetters::new(self.store.clone())
    }

    /// The idempotency keys `(platform, id)` stored by the incarnations of ingest node `node_id`
    /// (producers `<node_id>-<32 hex digits>`), in the segments written at most `window_micros`
    /// before the newest of them. An ingest node that restarts after a crash asks for its
    /// previous incarnations' last batches: their clients may retry requests that were stored
    /// but never answered.
    pub async fn recent_keys(
        &self,
        node_id: &str,
        window_micros: i64,
    ) -> Result<Vec<(String, String)>> {
        let is_incarnation = |producer: &str| {
            producer
                .strip_prefix(node_id)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|uuid| uuid.len() == 32 && uuid.bytes().all(|b| b.is_ascii_hexdigit()))
        };
        let mine: Vec<SegmentRef> = self
            .list_segments()
            .await?
            .into_iter()
            .filter(|s| is_incarnation(&s.producer))
            .collect();
        let Some(newest) = mine.iter().map(|s| s.last_modified_micros).max() else {
            return Ok(Vec::new());
        };
        let recent = mine
            .into_iter()
            .filter(|s| s.last_modified_micros >= newest.saturating_sub(window_micros));
        // A segment that cannot be decoded holds no key anyone can be answered from: the
        // consumer quarantines it, and it must not keep this node from starting.
        let segments: Vec<Segment> = futures::stream::iter(recent)
            .map(|s| async move {
                match self.read_segment(&s.path).await {
                    Err(e) if e.is_undecodable() => {
                        tracing::warn!(error = %e, "skipping a segment that cannot be decoded");
                        Ok(None)
                    }
                    read => read.map(Some),
                }
            })
            .buffer_unordered(8)
            .try_filter_map(|segment| async move { Ok(segment) })
            .try_collect()
            .await?;
        Ok(segments
            .into_iter()
            .flat_map(|s| s.records.into_iter().map(|r| (r.platform, r.id)))
            .collect())
    }

    /// Reads and verifies one segment.
    pub async fn read_segment(&self, path: &str) -> Result<Segment> {
        let bytes = self.read_raw(&Path::from(path)).await?;
        // Decoding and verifying a large segment takes milliseconds of CPU, like encoding.
        let path = path.to_string();
        tokio::task::spawn_blocking(move || segment::decode(&path, &bytes))
            .await
            .map_err(|e| Error::Avro(format!("segment decoder task failed: {e}")))?
    }

    /// Every segment in the store, ordered by producer and then sequence. Objects under
    /// `master/` that are not segments (a stray upload, a temporary file) are skipped.
    pub async fn list_segments(&self) -> Result<Vec<SegmentRef>> {
        let prefix = Path::from(MASTER_PREFIX);
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::object_store(MASTER_PREFIX, e))?;
        let mut segments: Vec<SegmentRef> = objects
            .into_iter()
            .filter_map(|meta| {
                let path = meta.location.to_string();
                let (producer, sequence) = parse_segment_path(&path)?;
                Some(SegmentRef {
                    producer: producer.to_string(),
                    sequence,
                    size: meta.size,
                    last_modified_micros: meta.last_modified.timestamp_micros(),
                    path,
                })
            })
            .collect();
        segments.sort_by(|a, b| (&a.producer, a.sequence).cmp(&(&b.producer, b.sequence)));
        Ok(segments)
    }

    async fn read_raw(&self, path: &Path) -> Result<bytes::Bytes> {
        let get = self
            .store
            .get(path)
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))?;
        get.bytes()
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))
    }
}

/// `master/<producer>/<sequence>.avro` → (producer, sequence).
fn parse_segment_path(path: &str) -> Option<(&str, u64)> {
    let rest = path.strip_prefix(MASTER_PREFIX)?.strip_prefix('/')?;
    let (producer, file) = rest.split_once('/')?;
    let sequence = file.strip_suffix(".avro")?.parse().ok()?;
    check_producer_id(producer).ok()?;
    Some((producer, sequence))
}

/// Producer ids become key segments, so they are restricted to characters that are safe in
/// every object store and file system.
pub fn check_producer_id(producer: &str) -> Result<()> {
    let valid = !producer.is_empty()
        && producer.len() <= 64
        && producer
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && producer != "."
        && producer != "..";
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidProducerId(producer.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_paths_sort_by_sequence_and_parse_back() {
        let a = MasterStore::segment_path("p-1", 9).unwrap().to_string();
        let b = MasterStore::segment_path("p-1", 10).unwrap().to_string();
        assert!(a < b);
        assert_eq!(parse_segment_path(&b), Some(("p-1", 10)));
        assert_eq!(parse_segment_path("master/p-1/x.avro"), None);
        assert_eq!(parse_segment_path("master/p-1/1.avro.tmp"), None);
        for bad in ["", "a/b", "..", "x y", &"p".repeat(65)] {
            assert!(MasterStore::segment_path(bad, 1).is_err(), "{bad}");
        }
    }
}
