//! One committer at a time: a lease on the replica table, kept in the object store.
//!
//! Several consumers may run; one holds the lease and commits, the others wait as standbys. The
//! lease lives beside the data, under `_sluice/lease/<table>/`:
//!
//! - `epochs/<epoch>`: created once, with put-if-absent, by the consumer that takes epoch
//!   `epoch`. Two consumers that try the same epoch cannot both succeed: one creation fails.
//! - `beats/<epoch>`: rewritten by the holder of `epoch` every third of the lease's time to live
//!   (`ttl`), with a counter that changes each time; `released` when it lets go.
//!
//! A standby watches the newest epoch and its beat. When neither has changed for `ttl` on the
//! standby's own clock, counted from when it first saw them, the holder is taken for dead and
//! the standby creates the next epoch. The holder, for its part, decides no new commit `ttl`
//! minus a margin after the start of its last successful beat (a beat that lands after that is
//! too late to count), and none once it sees a newer epoch. A standby first sees a beat after it
//! was written, so the holder stops deciding before any standby can take over. No clock is
//! compared across machines; only the rates of two monotonic clocks, which the margin covers.
//!
//! Timing alone cannot stop a commit already under way: writing a round's Parquet files or a
//! compaction can outlast the margin, and a pause (a stopped process, a frozen VM, a slow store)
//! can come between the check and the commit. Delta fences such a commit: every commit of the
//! committer carries the Delta transaction `(sluice:committer, epoch)` (maintenance's carry
//! `(sluice:maintenance, epoch)`), and a new holder's first commit records both with its epoch.
//! Delta's conflict check refuses a commit whose transaction ids a concurrent winning commit
//! also set, and a commit prepared on a snapshot that already records a newer epoch is refused
//! before it is tried ([`crate::replica::check_epoch`]).
//!
//! All of this needs a store that refuses the second creation of a key (put-if-absent). AWS S3,
//! MinIO and directories do; a store that does not cannot fence, and there a consumer refuses to
//! run while another holds the lease (`docs/replica.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The Delta transaction id that a committer's appends carry, with its epoch as version.
/// Producer ids cannot hold `:`, so it never meets a producer's transaction.
pub const COMMITTER_APP_ID: &str = "sluice:committer";
/// The Delta transaction id of maintenance's commits (compaction), with the epoch as version.
pub const MAINTENANCE_APP_ID: &str = "sluice:maintenance";

const RELEASED: &[u8] = b"released";

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease object {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error(
        "the replica's lease is held by {holder} (epoch {epoch}), which renewed it within the \
         last {ttl:?}"
    )]
    Held {
        holder: String,
        epoch: u64,
        ttl: Duration,
    },
    #[error(
        "the store does not enforce put-if-absent, so two committers cannot be fenced, and \
         {holder} (epoch {epoch}) holds the replica's lease: refusing to run a second committer"
    )]
    Unfenceable { holder: String, epoch: u64 },
}

type Result<T, E = LeaseError> = std::result::Result<T, E>;

/// The lease objects of one table, and who this process is.
#[derive(Clone)]
pub struct LeaseStore {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    holder: String,
    ttl: Duration,
    /// Whether the store refuses a second put-if-absent of one key (the publisher's probe).
    fenced: bool,
}

/// What a standby sees of the newest epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    epoch: u64,
    holder: String,
    beat: Option<Bytes>,
}

impl Observed {
    fn released(&self) -> bool {
        self.beat.as_deref() == Some(RELEASED)
    }
}

impl LeaseStore {
    /// The lease of the table at `table` (its path in the store). `holder` names this process in
    /// the lease and in logs; `fenced` is what `Storage::probe_put_if_absent` found.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        table: &str,
        holder: String,
        ttl: Duration,
        fenced: bool,
    ) -> Self {
        LeaseStore {
            store,
            prefix: format!("_sluice/lease/{}", table.trim_matches('/')),
            holder,
            ttl,
            fenced,
        }
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn epoch_path(&self, epoch: u64) -> Path {
        Path::from(format!("{}/epochs/{epoch:020}", self.prefix))
    }

    fn beat_path(&self, epoch: u64) -> Path {
        Path::from(format!("{}/beats/{epoch:020}", self.prefix))
    }

    fn store_error(path: &Path) -> impl FnOnce(object_store::Error) -> LeaseError + '_ {
        move |source| LeaseError::Store {
            path: path.to_string(),
            source,
        }
    }

    async fn read(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(object) => Ok(Some(object.bytes().await.map_err(Self::store_error(path))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(source) => Err(Self::store_error(path)(source)),
        }
    }

    /// The newest epoch, its holder and its beat; `None` when no consumer ever held the lease.
    async fn observe(&self) -> Result<Option<Observed>> {
        let prefix = Path::from(format!("{}/epochs", self.prefix));
        let listed: Vec<_> = futures::TryStreamExt::try_collect(self.store.list(Some(&prefix)))
            .await
            .map_err(Self::store_error(&prefix))?;
        let Some(epoch) = listed
            .iter()
            .filter_map(|meta| meta.location.filename()?.parse::<u64>().ok())
            .max()
        else {
            return Ok(None);
        };
        let holder = self
            .read(&self.epoch_path(epoch))
            .await?
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        let beat = self.read(&self.beat_path(epoch)).await?;
        Ok(Some(Observed {
            epoch,
            holder,
            beat,
        }))
    }

    /// Creates `epoch`; false when another consumer created it first.
    async fn create(&self, epoch: u64) -> Result<bool> {
        let path = self.epoch_path(epoch);
        let created = self
            .store
            .put_opts(
                &path,
                PutPayload::from(self.holder.clone()),
                PutOptions::from(PutMode::Create),
            )
            .await;
        match created {
            Ok(_) => Ok(true),
            // A retried request whose first attempt created it: the epoch is ours.
            Err(object_store::Error::AlreadyExists { .. }) => Ok(self
                .read(&path)
                .await?
                .is_some_and(|holder| holder == self.holder.as_bytes())),
            Err(source) => Err(Self::store_error(&path)(source)),
        }
    }

    /// Whether `holder` is an earlier incarnation of this process: the same host and listening
    /// address (the part before ` pid `), another process (the rest: pid and a random nonce, so
    /// that a container's pid 1 restarted in place differs too). This process has bound that
    /// address, so the earlier one no longer listens, and a restarted consumer need not wait
    /// out its own lease. (One still shutting down may still commit, and two machines sharing a
    /// host name would hand over early: the Delta fence keeps such commits out.)
    fn succeeds(&self, holder: &str) -> bool {
        fn place(holder: &str) -> Option<&str> {
            holder.split_once(" pid ").map(|(place, _)| place)
        }
        place(&self.holder).is_some_and(|mine| place(holder) == Some(mine)) && holder != self.holder
    }

    /// Waits until this process holds the lease, or `shutdown` fires (`None`). With `patience`,
    /// gives up when the holder is still alive after that long ([`LeaseError::Held`]).
    pub async fn acquire(
        &self,
        shutdown: &CancellationToken,
        patience: Option<Duration>,
    ) -> Result<Option<Lease>> {
        let started = Instant::now();
        let mut unchanged_since: Option<(Observed, Instant)> = None;
        let mut waiting_logged = false;
        loop {
            let observed = self.observe().await?;
            let next = match &observed {
                None => Some(1),
                Some(seen) if seen.released() || self.succeeds(&seen.holder) => {
                    Some(seen.epoch + 1)
                }
                Some(seen) => match &unchanged_since {
                    Some((before, since)) if before == seen && since.elapsed() >= self.ttl => {
                        Some(seen.epoch + 1)
                    }
                    Some((before, _)) if before == seen => None,
                    _ => {
                        // A new epoch or a new beat: the holder is alive, count again.
                        if unchanged_since.is_some() && !self.fenced {
                            return Err(LeaseError::Unfenceable {
                                holder: seen.holder.clone(),
                                epoch: seen.epoch,
                            });
                        }
                        unchanged_since = Some((seen.clone(), Instant::now()));
                        None
                    }
                },
            };
            if let Some(epoch) = next {
                let taken_at = Instant::now();
                if self.create(epoch).await? {
                    let lease = Lease::new(self.clone(), epoch, taken_at);
                    lease.beat(0).await?;
                    tracing::info!(
                        epoch,
                        holder = self.holder,
                        previous = observed.as_ref().map(|o| o.holder.as_str()),
                        "took the replica's lease: committing"
                    );
                    return Ok(Some(lease));
                }
                unchanged_since = None;
                continue;
            }
            if let Some(seen) = &observed {
                if let Some(patience) = patience
                    && started.elapsed() >= patience
                {
                    return Err(LeaseError::Held {
                        holder: seen.holder.clone(),
                        epoch: seen.epoch,
                        ttl: self.ttl,
                    });
                }
                if !waiting_logged {
                    tracing::info!(
                        epoch = seen.epoch,
                        holder = seen.holder,
                        "standing by: another consumer holds the replica's lease"
                    );
                    waiting_logged = true;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(None),
                () = tokio::time::sleep(self.ttl / 4) => {}
            }
        }
    }
}

/// The lease this process holds: its epoch, and until when it may commit.
pub struct Lease {
    store: LeaseStore,
    fence: Arc<Fence>,
    beats: u64,
}

/// What a commit checks: the holder's epoch, and whether the lease is still its own. Shared by
/// the replicator and maintenance; [`Lease::keep`] renews it in the background.
#[derive(Debug)]
pub struct Fence {
    epoch: u64,
    origin: Instant,
    /// Nanoseconds after `origin` until which the lease is surely this process's.
    valid_until: AtomicU64,
    lost: CancellationToken,
}

impl Fence {
    fn new(epoch: u64, origin: Instant) -> Self {
        Fence {
            epoch,
            origin,
            valid_until: AtomicU64::new(0),
            lost: CancellationToken::new(),
        }
    }

    /// A fence for a process that is the only committer by construction (`sluice replay` into
    /// a new table, tests): epoch 0, never lost.
    pub fn sole() -> Arc<Self> {
        Self::fixed(0)
    }

    /// A fence of `epoch` that never expires by itself: what a holder paused past its lease
    /// would still believe it holds. For tests of the fencing in the table.
    pub fn fixed(epoch: u64) -> Arc<Self> {
        let fence = Fence::new(epoch, Instant::now());
        fence.valid_until.store(u64::MAX, Ordering::Release);
        Arc::new(fence)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Ok while the lease is surely this process's; the error says why it is not.
    pub fn check(&self) -> Result<(), LeaseLost> {
        if self.lost.is_cancelled() {
            return Err(LeaseLost { epoch: self.epoch });
        }
        let now = Instant::now().duration_since(self.origin).as_nanos() as u64;
        if now < self.valid_until.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(LeaseLost { epoch: self.epoch })
        }
    }

    /// Fires when the lease is lost for good: a newer epoch exists, or renewal failed past the
    /// lease's time.
    pub fn lost(&self) -> &CancellationToken {
        &self.lost
    }

    fn extend(&self, from: Instant, by: Duration) {
        let until = from.duration_since(self.origin) + by;
        self.valid_until
            .fetch_max(until.as_nanos() as u64, Ordering::AcqRel);
    }
}

#[derive(Debug, thiserror::Error)]
#[error("this consumer no longer holds the replica's lease (epoch {epoch}): not committing")]
pub struct LeaseLost {
    pub epoch: u64,
}

impl Lease {
    fn new(store: LeaseStore, epoch: u64, taken_at: Instant) -> Self {
        let fence = Fence::new(epoch, taken_at);
        fence.extend(taken_at, Self::safe_time(store.ttl));
        Lease {
            store,
            fence: Arc::new(fence),
            beats: 0,
        }
    }

    /// How long after the start of a successful beat the holder may still commit: the lease's
    /// time less a fifth, for the two clocks' rates and the time between a check and a commit.
    fn safe_time(ttl: Duration) -> Duration {
        ttl - ttl / 5
    }

    pub fn epoch(&self) -> u64 {
        self.fence.epoch
    }

    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    async fn beat(&self, count: u64) -> Result<()> {
        let path = self.store.beat_path(self.epoch());
        self.store
            .store
            .put(&path, PutPayload::from(count.to_string()))
            .await
            .map_err(LeaseStore::store_error(&path))?;
        Ok(())
    }

    /// One renewal: stops at a newer epoch, else rewrites the beat. Ok(false) when the lease is
    /// lost.
    pub async fn renew(&mut self) -> Result<bool> {
        let started = Instant::now();
        let newer = self.store.epoch_path(self.epoch() + 1);
        if self.store.read(&newer).await?.is_some() {
            self.fence.lost.cancel();
            return Ok(false);
        }
        self.beats += 1;
        self.beat(self.beats).await?;
        self.fence.extend(started, Self::safe_time(self.store.ttl));
        Ok(true)
    }

    /// Renews the lease every third of its time until `shutdown` fires (then releases it) or
    /// the lease is lost (then fires [`Fence::lost`]). A renewal that fails is retried; the
    /// lease is lost when none succeeds within its time.
    pub async fn keep(mut self, shutdown: CancellationToken) {
        let every = self.store.ttl / 3;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.fence.lost.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match self.renew().await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        epoch = self.epoch(),
                        "another consumer took the replica's lease: this one stops committing"
                    );
                    return;
                }
                Err(error) => {
                    tracing::warn!(%error, epoch = self.epoch(), "cannot renew the replica's lease");
                    if self.fence.check().is_err() {
                        tracing::error!(
                            epoch = self.epoch(),
                            "the replica's lease expired unrenewed: this consumer stops committing"
                        );
                        self.fence.lost.cancel();
                        return;
                    }
                }
            }
        }
        self.release().await;
    }

    /// Lets a standby take over at once: the beat says `released`. Called after the last
    /// commit, on a clean shutdown.
    pub async fn release(self) {
        self.fence.lost.cancel();
        let path = self.store.beat_path(self.epoch());
        match self
            .store
            .store
            .put(&path, PutPayload::from(Bytes::from_static(RELEASED)))
            .await
        {
            Ok(_) => tracing::info!(epoch = self.epoch(), "released the replica's lease"),
            Err(error) => {
                tracing::warn!(%error, "cannot release the replica's lease; a standby takes it when it expires")
            }
        }
    }
}
