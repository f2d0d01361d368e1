//! The log store compactions commit through: it gives their commits the fence that delta-rs's
//! `optimize` leaves out.
//!
//! delta-rs 1.1's `optimize` keeps only the application metadata of the commit properties it is
//! given, not their transactions, so its commits carry no `(sluice:maintenance, epoch)`. And its
//! conflict check lets two commits remove the same files when neither changes data. Two
//! compactions of the same files would then both commit, each adding a copy of their rows: a
//! holder paused in the middle of a pass while the next holder (or `sluice maintain`) compacts
//! the same day. This store closes that at the one place every attempt passes, the
//! put-if-absent of the next log entry: an attempt at version `v` of a commit planned on
//! version `r` is refused when a commit in `r+1..v` records the maintenance transaction (another
//! compaction, or a newer holder's claim) or removes a file this one removes, and an attempt
//! that goes ahead carries `(sluice:maintenance, epoch)` itself. Since `v` is the next free
//! version, `r+1..v` is every commit since the plan, and the check holds across delta-rs's retries
//! at later versions.

use std::sync::Arc;

use bytes::Bytes;
use deltalake::kernel::transaction::{CommitConflictError, TransactionError};
use deltalake::kernel::{Action, Transaction};
use deltalake::logstore::{CommitOrBytes, LogStore, LogStoreConfig, LogStoreRef};
use deltalake::{DeltaResult, DeltaTable};
use object_store::ObjectStore;
use uuid::Uuid;

use crate::lease::MAINTENANCE_APP_ID;

/// `table` with its commits going through a [`FencedLog`] of `epoch`; [`with_log_store`] with
/// the table's own store undoes it.
pub fn fenced(table: DeltaTable, epoch: u64) -> DeltaTable {
    let log: LogStoreRef = Arc::new(FencedLog {
        inner: table.log_store(),
        epoch,
    });
    with_log_store(table, log)
}

/// `table`'s loaded state over `log`.
pub fn with_log_store(table: DeltaTable, log: LogStoreRef) -> DeltaTable {
    let mut moved = DeltaTable::new(log);
    moved.state = table.state;
    moved
}

/// A table's own log store, and the maintenance epoch its compactions commit under.
#[derive(Debug)]
struct FencedLog {
    inner: LogStoreRef,
    epoch: u64,
}

/// What a commit entry says, as far as the fence needs it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Entry {
    /// `commitInfo.readVersion`: the version the commit was planned on.
    read_version: Option<u64>,
    /// Whether it records the maintenance transaction.
    maintenance: bool,
    /// The paths it removes.
    removed: Vec<String>,
}

fn entry(version: u64, bytes: &Bytes) -> DeltaResult<Entry> {
    let mut entry = Entry::default();
    for action in deltalake::logstore::get_actions(version, bytes)? {
        match action {
            Action::CommitInfo(info) => entry.read_version = info.read_version,
            Action::Txn(txn) => entry.maintenance |= txn.app_id == MAINTENANCE_APP_ID,
            Action::Remove(remove) => entry.removed.push(remove.path),
            _ => {}
        }
    }
    Ok(entry)
}

fn refused(why: String) -> TransactionError {
    TransactionError::LogStoreError {
        msg: why.clone(),
        source: why.into(),
    }
}

impl FencedLog {
    /// Refuses (with a conflict) a commit `planned` to go in at `version` when a commit since
    /// its plan fences it out.
    async fn check(&self, planned: &Entry, version: u64) -> Result<(), TransactionError> {
        let Some(read_version) = planned.read_version else {
            return Err(refused(
                "a compaction's commit does not say which version it was planned on".into(),
            ));
        };
        for since in read_version + 1..version {
            let bytes = self
                .inner
                .read_commit_entry(since)
                .await
                .map_err(|error| refused(format!("commit {since} cannot be read: {error}")))?
                .ok_or_else(|| refused(format!("commit {since} is not in the log")))?;
            let between = entry(since, &bytes)
                .map_err(|error| refused(format!("commit {since} does not parse: {error}")))?;
            if between.maintenance {
                tracing::warn!(
                    version = since,
                    "a compaction gave way to a newer holder's commit"
                );
                return Err(CommitConflictError::ConcurrentTransaction.into());
            }
            if planned
                .removed
                .iter()
                .any(|path| between.removed.contains(path))
            {
                tracing::warn!(
                    version = since,
                    "a compaction gave way to another that rewrote its files"
                );
                return Err(CommitConflictError::ConcurrentDeleteDelete.into());
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl LogStore for FencedLog {
    fn name(&self) -> String {
        // delta-rs hands its commits over as bytes (not temporary files) by the inner name.
        self.inner.name()
    }

    async fn refresh(&self) -> DeltaResult<()> {
        self.inner.refresh().await
    }

    async fn read_commit_entry(&self, version: u64) -> DeltaResult<Option<Bytes>> {
        self.inner.read_commit_entry(version).await
    }

    async fn write_commit_entry(
        &self,
        version: u64,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        let CommitOrBytes::LogBytes(bytes) = commit_or_bytes else {
            return Err(refused(
                "compactions commit only on stores with put-if-absent".into(),
            ));
        };
        let planned = entry(version, &bytes)
            .map_err(|error| refused(format!("a compaction's commit does not parse: {error}")))?;
        self.check(&planned, version).await?;
        let txn = Action::Txn(Transaction::new_with_last_update(
            MAINTENANCE_APP_ID,
            self.epoch as i64,
            Some(chrono::Utc::now().timestamp_millis()),
        ));
        let mut fenced = bytes.to_vec();
        if !fenced.ends_with(b"\n") {
            fenced.push(b'\n');
        }
        serde_json::to_writer(&mut fenced, &txn)
            .map_err(|json_err| TransactionError::SerializeLogJson { json_err })?;
        fenced.push(b'\n');
        self.inner
            .write_commit_entry(
                version,
                CommitOrBytes::LogBytes(fenced.into()),
                operation_id,
            )
            .await
    }

    async fn abort_commit_entry(
        &self,
        version: u64,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner
            .abort_commit_entry(version, commit_or_bytes, operation_id)
            .await
    }

    async fn get_latest_version(&self, start_version: u64) -> DeltaResult<u64> {
        self.inner.get_latest_version(start_version).await
    }

    fn object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.object_store(operation_id)
    }

    fn root_object_store(&self, operation_id: Option<Uuid>) -> Arc<dyn ObjectStore> {
        self.inner.root_object_store(operation_id)
    }

    fn config(&self) -> &LogStoreConfig {
        self.inner.config()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_names_its_plan_its_maintenance_transaction_and_its_removals() {
        let bytes = br#"{"commitInfo":{"operation":"OPTIMIZE","readVersion":7}}
{"remove":{"path":"day=2026-01-01/a.parquet","dataChange":false}}
{"add":{"path":"day=2026-01-01/b.parquet","partitionValues":{"day":"2026-01-01"},"size":1,"modificationTime":0,"dataChange":false}}
{"txn":{"appId":"sluice:maintenance","version":3}}
"#;
        assert_eq!(
            entry(1, &Bytes::from_static(bytes)).unwrap(),
            Entry {
                read_version: Some(7),
                maintenance: true,
                removed: vec!["day=2026-01-01/a.parquet".to_string()],
            }
        );
        let append = br#"{"txn":{"appId":"sluice:committer","version":3}}
{"add":{"path":"day=2026-01-01/c.parquet","partitionValues":{"day":"2026-01-01"},"size":1,"modificationTime":0,"dataChange":true}}"#;
        assert_eq!(
            entry(2, &Bytes::from_static(append)).unwrap(),
            Entry::default()
        );
    }
}
