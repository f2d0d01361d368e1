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
}

impl Instrumented {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Instrumented { inner }
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

fn record(op: &'static str, started: Instant, outcome: &'static str) {
    metrics::counter!(names::STORE_REQUESTS, "op" => op, "outcome" => outcome).increment(1);
    metrics::histogram!(names::STORE_REQUEST_SECONDS, "op" => op)
        .record(started.elapsed().as_secs_f64());
}

async fn timed<T>(op: &'static str, call: impl Future<Output = Result<T>>) -> Result<T> {
    let started = Instant::now();
    let result = call.await;
    record(op, started, outcome(&result));
    result
}

/// Records a streamed request once its stream ends or is dropped: an error if any item was one.
struct StreamRecord {
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
            self.op,
            self.started,
            if self.failed { "error" } else { "ok" },
        );
    }
}

fn timed_stream<T: Send + 'static>(
    op: &'static str,
    stream: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    let mut record = StreamRecord {
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
        timed("put", self.inner.put_opts(location, payload, opts)).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        timed(
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        timed("get", self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        timed("get_ranges", self.inner.get_ranges(location, ranges)).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        timed_stream("delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        timed_stream("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        timed("list", self.inner.list_with_delimiter(prefix)).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        timed("copy", self.inner.copy_opts(from, to, options)).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        timed("rename", self.inner.rename_opts(from, to, options)).await
    }
}
