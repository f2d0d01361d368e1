//! Dead letters: batches the master store refused for good, and master segments that cannot be
//! decoded, each kept with its reason under `dead-letters/` so that nothing waits on them.
//!
//! | kind | written by | when | key |
//! |---|---|---|---|
//! | `refused` | the publisher, asked by the ingest node | an Append was refused for a reason no retry cures (the batch is invalid, or its key holds another batch) | `dead-letters/refused/<producer>/<sequence>.json` |
//! | `quarantined` | the consumer | a segment fails to decode or to verify, twice | `dead-letters/quarantined/<producer>/<sequence>.json` |
//!
//! A refused batch's rows are in its letter, in the form a platform POSTs, so an operator can
//! replay them through the normal write path once the cause is mended; a replayed letter moves
//! to `dead-letters/replayed/`. A quarantined segment stays where it is in `master/` (the master
//! is the raw log and is never rewritten); its letter says why it was skipped.
//!
//! Either way the producer's sequence goes on: the replica records the skipped sequence in its
//! `txn` version like any other, so every later batch of that producer, and every other
//! producer, keeps replicating.

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::master::check_producer_id;

pub const DEAD_LETTER_PREFIX: &str = "dead-letters";

/// Why a letter was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LetterKind {
    /// A batch the publisher refused; its rows are in the letter.
    Refused,
    /// A master segment that could not be read back; it stays in `master/`.
    Quarantined,
    /// A refused batch whose rows were replayed.
    Replayed,
}

impl LetterKind {
    fn folder(self) -> &'static str {
        match self {
            LetterKind::Refused => "refused",
            LetterKind::Quarantined => "quarantined",
            LetterKind::Replayed => "replayed",
        }
    }

    fn from_folder(folder: &str) -> Option<Self> {
        [
            LetterKind::Refused,
            LetterKind::Quarantined,
            LetterKind::Replayed,
        ]
        .into_iter()
        .find(|kind| kind.folder() == folder)
    }
}

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub kind: LetterKind,
    pub producer: String,
    pub sequence: u64,
    /// Why: the store's or the decoder's own words.
    pub reason: String,
    /// When it was written, in microseconds since the epoch.
    pub at_micros: i64,
    /// How many notifications the batch held (for a quarantined segment: what its header or
    /// its listing could tell, possibly 0).
    pub rows: u64,
    /// The master segment the letter is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The refused batch's notifications, as a platform would POST them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<serde_json::Value>,
}

impl DeadLetter {
    /// The letter's id: `<kind>/<producer>/<sequence>`, what the admin endpoints take.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.kind.folder(), self.producer, self.sequence)
    }
}

/// The letters of one store.
#[derive(Debug, Clone)]
pub struct DeadLetters {
    store: Arc<dyn ObjectStore>,
}

impl DeadLetters {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        DeadLetters { store }
    }

    fn path(kind: LetterKind, producer: &str, sequence: u64) -> Result<Path> {
        check_producer_id(producer)?;
        Ok(Path::from(format!(
            "{DEAD_LETTER_PREFIX}/{}/{producer}/{sequence:020}.json",
            kind.folder()
        )))
    }

    /// `<kind>/<producer>/<sequence>` → where that letter is, or `None` for a malformed id.
    pub fn parse_id(id: &str) -> Option<(LetterKind, String, u64)> {
        let mut parts = id.split('/');
        let kind = LetterKind::from_folder(parts.next()?)?;
        let producer = parts.next()?;
        let sequence = parts.next()?.parse().ok()?;
        if parts.next().is_some() || check_producer_id(producer).is_err() {
            return None;
        }
        Some((kind, producer.to_string(), sequence))
    }

    /// Writes (or rewrites: a retry writes the same letter) one letter.
    pub async fn write(&self, letter: &DeadLetter) -> Result<String> {
        let path = Self::path(letter.kind, &letter.producer, letter.sequence)?;
        let body = serde_json::to_vec(letter)
            .map_err(|e| Error::Avro(format!("dead letter does not serialize: {e}")))?;
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))?;
        Ok(path.to_string())
    }

    /// Reads the letter with this id.
    pub async fn read(&self, id: &str) -> Result<DeadLetter> {
        let (kind, producer, sequence) = Self::parse_id(id).ok_or_else(|| Error::NotFound {
            path: format!("{DEAD_LETTER_PREFIX}/{id}"),
        })?;
        let path = Self::path(kind, &producer, sequence)?;
        let bytes = self
            .store
            .get(&path)
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))?
            .bytes()
            .await
            .map_err(|e| Error::object_store(path.as_ref(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidSegment {
            path: path.to_string(),
            reason: format!("not a dead letter: {e}"),
        })
    }

    /// Every letter of `kinds`, oldest first, without their notifications; at most `limit`,
    /// and how many there are in all.
    pub async fn list(
        &self,
        kinds: &[LetterKind],
        limit: usize,
    ) -> Result<(Vec<DeadLetter>, usize)> {
        let mut paths = Vec::new();
        for kind in kinds {
            let prefix = Path::from(format!("{DEAD_LETTER_PREFIX}/{}", kind.folder()));
            let objects: Vec<_> = self
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| Error::object_store(prefix.as_ref(), e))?;
            paths.extend(objects.into_iter().filter_map(|meta| {
                let id = meta
                    .location
                    .as_ref()
                    .strip_prefix(DEAD_LETTER_PREFIX)?
                    .strip_prefix('/')?
                    .strip_suffix(".json")?
                    .to_string();
                Some((meta.last_modified, id))
            }));
        }
        paths.sort();
        let total = paths.len();
        let letters: Vec<DeadLetter> = futures::stream::iter(paths.into_iter().take(limit))
            .map(|(_, id)| async move {
                // A listed id that does not parse (a stray upload) is skipped, not an error.
                let (kind, producer, sequence) = Self::parse_id(&id)?;
                let id = format!("{}/{producer}/{sequence}", kind.folder());
                Some(self.read(&id).await)
            })
            .buffered(8)
            .filter_map(|letter| async move { letter })
            .map(|letter| {
                letter.map(|mut letter| {
                    letter.notifications = Vec::new();
                    letter
                })
            })
            .try_collect()
            .await?;
        Ok((letters, total))
    }

    /// Moves a refused letter to `replayed/`, once its rows are stored again.
    pub async fn mark_replayed(&self, letter: &DeadLetter) -> Result<()> {
        let replayed = DeadLetter {
            kind: LetterKind::Replayed,
            ..letter.clone()
        };
        self.write(&replayed).await?;
        let path = Self::path(letter.kind, &letter.producer, letter.sequence)?;
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::object_store(path.as_ref(), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use object_store::local::LocalFileSystem;

    use super::*;

    fn letter(kind: LetterKind, sequence: u64) -> DeadLetter {
        DeadLetter {
            kind,
            producer: "node-0-0123".to_string(),
            sequence,
            reason: "segment already holds a different batch".to_string(),
            at_micros: 1,
            rows: 1,
            segment: None,
            notifications: vec![serde_json::json!({"platform": "x", "id": "1"})],
        }
    }

    #[test]
    fn ids_parse_back_and_malformed_ones_do_not() {
        let id = letter(LetterKind::Refused, 7).id();
        assert_eq!(id, "refused/node-0-0123/7");
        assert_eq!(
            DeadLetters::parse_id(&id),
            Some((LetterKind::Refused, "node-0-0123".to_string(), 7))
        );
        // Listed keys carry the zero-padded sequence; they parse to the same letter.
        assert_eq!(
            DeadLetters::parse_id("refused/node-0-0123/00000000000000000007"),
            DeadLetters::parse_id(&id)
        );
        for bad in [
            "",
            "refused",
            "other/p/1",
            "refused/../1",
            "refused/p/x",
            "refused/p/1/2",
        ] {
            assert_eq!(DeadLetters::parse_id(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn letters_are_written_listed_read_and_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let letters = DeadLetters::new(store);
        let refused = letter(LetterKind::Refused, 2);
        let quarantined = DeadLetter {
            notifications: Vec::new(),
            ..letter(LetterKind::Quarantined, 5)
        };
        letters.write(&refused).await.unwrap();
        letters.write(&refused).await.unwrap();
        letters.write(&quarantined).await.unwrap();

        let (listed, total) = letters
            .list(&[LetterKind::Refused, LetterKind::Quarantined], 10)
            .await
            .unwrap();
        assert_eq!(total, 2);
        let kinds: Vec<LetterKind> = listed.iter().map(|l| l.kind).collect();
        assert!(kinds.contains(&LetterKind::Refused) && kinds.contains(&LetterKind::Quarantined));
        assert!(listed.iter().all(|l| l.notifications.is_empty()));
        assert_eq!(letters.read(&refused.id()).await.unwrap(), refused);

        letters.mark_replayed(&refused).await.unwrap();
        assert!(matches!(
            letters.read(&refused.id()).await,
            Err(Error::NotFound { .. })
        ));
        let (listed, total) = letters.list(&[LetterKind::Refused], 10).await.unwrap();
        assert_eq!((listed.len(), total), (0, 0));
        let replayed = letters.read("replayed/node-0-0123/2").await.unwrap();
        assert_eq!(replayed.notifications, refused.notifications);
    }
}
