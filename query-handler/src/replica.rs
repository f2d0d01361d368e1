//! A read-only view of the replica table that follows its latest version.
//!
//! One task refreshes the Delta log every `refresh` interval; each refresh that finds a new
//! version builds a table provider for it. Queries take the current [`Snapshot`] and keep it
//! for their whole run, so every query reads one consistent version (Delta's snapshot
//! isolation) while newer versions appear. The handler never writes the table: the consumer is
//! its only committer, and the handler does not even create it.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use datafusion::catalog::TableProvider;
use deltalake::{DeltaTable, DeltaTableError};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use url::Url;

use crate::scan::{Footers, ReplicaTable};
use crate::snapshot::{PartitionCounts, Snapshot, columns_without_nulls};

pub struct ReplicaView {
    url: Url,
    options: HashMap<String, String>,
    table: Mutex<Option<DeltaTable>>,
    /// The table's log store, kept apart from `table` so that the feed reads the log while a
    /// refresh holds the table to load a snapshot.
    log_store: OnceLock<deltalake::logstore::LogStoreRef>,
    current: RwLock<Option<Arc<Snapshot>>>,
    /// Columns read as Parquet dictionary keys (see [`crate::scan`]).
    dictionary_columns: Vec<String>,
    footers: Footers,
}

impl ReplicaView {
    /// The view of the table at `url`, reading `dictionary_columns` as dictionaries.
    pub fn new(url: Url, options: HashMap<String, String>, dictionary_columns: &[String]) -> Self {
        deltalake::aws::register_handlers(None);
        ReplicaView {
            url,
            options,
            table: Mutex::new(None),
            log_store: OnceLock::new(),
            current: RwLock::new(None),
            dictionary_columns: dictionary_columns.to_vec(),
            footers: Footers::default(),
        }
    }

    /// The table's log store, once the table has been found.
    pub fn log_store(&self) -> Option<deltalake::logstore::LogStoreRef> {
        self.log_store.get().cloned()
    }

    /// The latest loaded version, if the table has been found.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.current.read().expect("snapshot lock poisoned").clone()
    }

    /// Loads the latest version of the table. Returns the version, or None while the table does
    /// not exist yet (the consumer creates it when it starts).
    pub async fn refresh(&self) -> Result<Option<u64>, DeltaTableError> {
        let mut table = self.table.lock().await;
        match table.as_mut() {
            Some(table) => table.update_state().await?,
            None => {
                match deltalake::open_table_with_storage_options(
                    self.url.clone(),
                    self.options.clone(),
                )
                .await
                {
                    Ok(opened) => {
                        let _ = self.log_store.set(opened.log_store());
                        *table = Some(opened);
                    }
                    Err(DeltaTableError::NotATable(_)) => return Ok(None),
                    Err(error) => return Err(error),
                }
            }
        }
        let table = table.as_ref().expect("opened above");
        let version = table.version().unwrap_or(0);
        if self.current().is_some_and(|s| s.version == version) {
            return Ok(Some(version));
        }
        let delta = table.table_provider().await?;
        let provider = match ReplicaTable::of(
            table,
            &delta.schema(),
            &self.dictionary_columns,
            &self.footers,
        )
        .await
        {
            Ok(Some(own)) => Arc::new(own) as Arc<dyn TableProvider>,
            Ok(None) => Arc::clone(&delta),
            Err(error) => {
                tracing::warn!(%error, version, "reading this version with delta-rs's scan");
                Arc::clone(&delta)
            }
        };
        let counts = PartitionCounts::of(table).map(Arc::new);
        let without_nulls = columns_without_nulls(table);
        *self.current.write().expect("snapshot lock poisoned") = Some(Arc::new(Snapshot {
            version,
            provider,
            delta,
            counts,
            without_nulls,
        }));
        tracing::debug!(version, "replica snapshot loaded");
        Ok(Some(version))
    }

    /// Refreshes every `interval` until `shutdown`, calling `on_new_version` when the version
    /// moves on.
    pub async fn follow(
        self: Arc<Self>,
        interval: Duration,
        shutdown: CancellationToken,
        on_new_version: impl Fn(u64) + Send,
    ) {
        let mut last = None;
        loop {
            match self.refresh().await {
                Ok(Some(version)) if last != Some(version) => {
                    last = Some(version);
                    on_new_version(version);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, url = %self.url, "cannot refresh the replica"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
