//! The object store as operators see it: every request of Sluice's own data plane (master
//! segments, dead letters, leases, probes) and the query handler's reads of the replica's
//! Parquet files, counted by operation and outcome, and timed.
//!
//! A thin wrapper that delegates every call. The consumer's Delta commits (log entries and
//! Parquet writes) and the Delta log reads go through deltalake's own store, whose work shows in
//! the consumer's commit durations and the query durations instead.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use sluice_telemetry::names;

#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn ObjectStore>,
    /// The `data` label: `master` for the storage Sluice itself writes (segments, dead letters,
    /// the lease, probes), `replica` for the query handler's reads of the Parquet files.
    data: &'static str,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn ObjectStore>, data: &'static str) -> Self {
        Instrumented { inner, data }
    }
}

impl fmt::Display for Instrumented {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// The outcome label of a result: what an operator tells apart on a board.
fn outcome<T>(result: &Result<T>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(object_store::Error::NotFound { .. }) => "not_found",
        Err(object_store::Error::AlreadyExists { .. }) => "already_exists",
        Err(object_store::Error::Precondition { .. }) => "precondition_failed",
        Err(_) => "error",
    }
}

fn record(data: &'static str, op: &'static str, started: Instant, outcome: &'static str) {
    metrics::counter!(names::STORE_REQUESTS, "data" => data, "op" => op, "outcome" => outcome)
        .increment(1);
    metrics::histogram!(names::STORE_REQUEST_SECONDS, "data" => data, "op" => op)
        .record(started.elapsed().as_secs_f64());
}

async fn timed<T>(
    data: &'static str,
    op: &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = call.await;
    record(data, op, started, outcome(&result));
    result
}

/// Records a streamed request once its stream ends or is dropped: an error if any item was one.
struct StreamRecord {
    data: &'static str,
    op: &'static str,
    started: Instant,
    failed: bool,
}

impl StreamRecord {
    fn note<T>(&mut self, item: &Result<T>) {
        self.failed |= item.is_err();
    }
}

impl Drop for StreamRecord {
    fn drop(&mut self) {
        record(
            self.data,
            self.op,
            self.started,
            if self.failed { "error" } else { "ok" },
        );
    }
}

fn timed_stream<T: Send + 'static>(
    data: &'static str,
    op: &'static str,
    stream: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    let mut record = StreamRecord {
        data,
        op,
        started: Instant::now(),
        failed: false,
    };
    stream
        // A method call moves the whole record into the closure (a field assignment would
        // move only the field), so it is dropped, and records, when the stream is.
        .map(move |item| {
            record.note(&item);
            item
        })
        .boxed()
}

#[async_trait::async_trait]
impl ObjectStore for Instrumented {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        timed(
            self.data,
            "put",
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        timed(
            self.data,
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        timed(self.data, "get", self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed(
            self.data,
            "get_ranges",
            self.inner.get_ranges(location, ranges),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        timed_stream(self.data, "delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream(self.data, "list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream(
            self.data,
            "list",
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed(self.data, "list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed(self.data, "copy", self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        timed(
            self.data,
            "rename",
            self.inner.rename_opts(from, to, options),
        )
        .await
    }
}
