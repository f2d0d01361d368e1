//! The query handler's errors, and their one mapping onto gRPC codes.

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;
use tonic::Status;

use crate::rules::number_groups::NumberingGaveUp;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// The SQL does not parse or plan: a syntax error, an unknown column, function or table, a
    /// type mismatch. The message is DataFusion's.
    #[error("{0}")]
    InvalidSql(String),
    /// A write, DDL, `SET`, `COPY`, or more than one statement.
    #[error("{0}")]
    NotReadOnly(String),
    /// The query failed on the data itself, e.g. a division by zero or a failed cast.
    #[error("the query failed: {0}")]
    Execution(String),
    #[error("{0}")]
    ResultTooLarge(String),
    #[error("the query needs more memory than its limit: {0}")]
    MemoryLimit(String),
    /// A rule's fast path gave up on this query's data; the engine runs it again without.
    #[error("{0}")]
    GaveUp(String),
    #[error(
        "the query did not finish within {0} ms; narrow it (a time range, fewer groups) or ask for a higher limit"
    )]
    Timeout(u64),
    #[error("the replica cannot be read yet: {0}")]
    Unavailable(String),
    /// A query handler that ran part of a distributed query went away (or could not be
    /// reached) while it ran. Retrying is safe: the next run leaves it out.
    #[error(
        "a query handler that ran part of this query failed ({0}); try again: the next run leaves it out"
    )]
    WorkerLost(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A distributed run's plan stays on this handler: the engine runs the query again as a
    /// local one. Never leaves the engine.
    #[error("the query's plan stays on one query handler")]
    StaysLocal,
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        if let Some(lost) = worker_lost(&error) {
            return QueryError::WorkerLost(lost);
        }
        if NumberingGaveUp::caused(&error) {
            return QueryError::GaveUp(error.find_root().to_string());
        }
        let root = error.find_root();
        // The spill space's bound is an I/O error with only its words to tell it by
        // (DataFusion's `DiskManager`, which its own tests also match by them).
        if let DataFusionError::ArrowError(arrow, _) = root
            && let ArrowError::IoError(_, io) = arrow.as_ref()
            && io.to_string().contains("exceeded the allowable limit")
        {
            return QueryError::MemoryLimit(
                "what it spilled to disk reached the handler's spill limit (--spill-max-bytes)"
                    .to_string(),
            );
        }
        match root {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Configuration(_) => QueryError::InvalidSql(root.to_string()),
            DataFusionError::ResourcesExhausted(_) => QueryError::MemoryLimit(root.to_string()),
            DataFusionError::Execution(_) => QueryError::Execution(root.to_string()),
            DataFusionError::ArrowError(arrow, _) => match **arrow {
                ArrowError::DivideByZero
                | ArrowError::CastError(_)
                | ArrowError::ComputeError(_)
                | ArrowError::ParseError(_)
                | ArrowError::ArithmeticOverflow(_)
                | ArrowError::InvalidArgumentError(_) => QueryError::Execution(root.to_string()),
                _ => QueryError::Internal(root.to_string()),
            },
            _ => QueryError::Internal(root.to_string()),
        }
    }
}

/// What went wrong when `error` is a failure to reach a worker of a distributed query, or its
/// stream breaking: the engine gives those as the gRPC status of the call (a task that fails on
/// its data comes back as DataFusion's own error instead), or as a failure to connect.
fn worker_lost(error: &DataFusionError) -> Option<String> {
    match error {
        DataFusionError::Context(context, _)
            if context.contains("Distributed DataFusion worker") =>
        {
            Some(context.clone())
        }
        DataFusionError::Context(_, inner) => worker_lost(inner),
        DataFusionError::Shared(inner) => worker_lost(inner),
        DataFusionError::External(inner) => external_lost(inner.as_ref()),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::ExternalError(inner) => external_lost(inner.as_ref()),
            _ => None,
        },
        DataFusionError::Diagnostic(_, inner) => worker_lost(inner),
        DataFusionError::Collection(errors) => errors.iter().find_map(worker_lost),
        DataFusionError::Execution(message)
            if message.contains("Distributed DataFusion worker") =>
        {
            Some(message.clone())
        }
        _ => None,
    }
}

/// [`worker_lost`] of an error a task's stream carried: a transport failure (the call's
/// status made on this side: unavailable, unknown, cancelled, or with the error as its source).
/// A status a live worker sent, such as a refused cluster secret, is not a lost worker: retrying
/// would fail the same way.
fn external_lost(inner: &(dyn std::error::Error + Send + Sync + 'static)) -> Option<String> {
    if let Some(status) = inner.downcast_ref::<Status>() {
        let transport = matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
        ) || std::error::Error::source(status).is_some();
        return transport.then(|| format!("{:?}: {}", status.code(), status.message()));
    }
    inner
        .downcast_ref::<DataFusionError>()
        .and_then(worker_lost)
}

impl From<ArrowError> for QueryError {
    fn from(error: ArrowError) -> Self {
        QueryError::Internal(error.to_string())
    }
}

impl QueryError {
    /// The gRPC code name, as a query's record reports it.
    pub fn code(&self) -> tonic::Code {
        match self {
            QueryError::InvalidSql(_) | QueryError::NotReadOnly(_) | QueryError::Execution(_) => {
                tonic::Code::InvalidArgument
            }
            QueryError::ResultTooLarge(_) | QueryError::MemoryLimit(_) | QueryError::GaveUp(_) => {
                tonic::Code::ResourceExhausted
            }
            QueryError::Timeout(_) => tonic::Code::DeadlineExceeded,
            QueryError::Unavailable(_) | QueryError::WorkerLost(_) => tonic::Code::Unavailable,
            QueryError::Internal(_) | QueryError::StaysLocal => tonic::Code::Internal,
        }
    }
}

impl QueryError {
    /// What a client may be told. Internal details are logged here instead of sent.
    pub fn public_message(&self) -> String {
        match self {
            QueryError::Internal(detail) => {
                tracing::error!(%detail, "query failed");
                "the query failed inside the query handler; see its log".to_string()
            }
            other => other.to_string(),
        }
    }
}

impl From<QueryError> for Status {
    fn from(error: QueryError) -> Self {
        Status::new(error.code(), error.public_message())
    }
}
