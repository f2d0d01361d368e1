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
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
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
            QueryError::Unavailable(_) => tonic::Code::Unavailable,
            QueryError::Internal(_) => tonic::Code::Internal,
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
