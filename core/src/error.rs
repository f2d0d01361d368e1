//! The one error type of the shared storage layer.

/// What went wrong in storage. Backends map their own errors into these variants, so callers
/// can tell a missing object or a key collision from a broken store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid storage url {url:?}: {reason}")]
    InvalidStorageUrl { url: String, reason: String },

    #[error("object {path} not found")]
    NotFound { path: String },

    #[error("object store error at {path}: {source}")]
    ObjectStore {
        path: String,
        #[source]
        source: object_store::Error,
    },

    #[error("bucket {bucket}: {message}")]
    Bucket { bucket: String, message: String },

    /// The store did not answer (down, unreachable, timed out): trying again later may work.
    #[error("bucket {bucket}: cannot reach: {message}")]
    Unreachable { bucket: String, message: String },

    #[error("segment {path} is invalid: {reason}")]
    InvalidSegment { path: String, reason: String },

    /// A segment written in a newer format than this build reads: upgrade this service.
    #[error("segment {path} is in format {format}, newer than this build reads (1): upgrade it")]
    UnsupportedSegment { path: String, format: String },

    /// A different batch already sits at the key a batch was to be written to. Keys derive
    /// from (producer, sequence), so this means two producers share an id: never overwrite.
    #[error(
        "segment {path} already holds a different batch (checksum {existing:08x}, new {new:08x})"
    )]
    SegmentConflict {
        path: String,
        existing: u32,
        new: u32,
    },

    #[error("invalid producer id {0:?}: use 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' or '-'")]
    InvalidProducerId(String),

    #[error("avro encoding failed: {0}")]
    Avro(String),

    #[error("local storage at {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether the store failed for a reason that passes by itself: it was unreachable, or a
    /// request failed in transport or with a server error. Not: a refusal (permissions,
    /// credentials), a missing object, a bad URL or bad data.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            Error::ObjectStore { source, .. } => {
                matches!(source, object_store::Error::Generic { .. })
            }
            _ => false,
        }
    }

    /// Whether an object was read but its bytes are not a valid segment: reading it again
    /// gives the same answer, so waiting for it would wait forever.
    pub fn is_undecodable(&self) -> bool {
        matches!(self, Error::InvalidSegment { .. } | Error::Avro(_))
    }

    pub(crate) fn object_store(path: impl Into<String>, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => Error::NotFound { path: path.into() },
            source => Error::ObjectStore {
                path: path.into(),
                source,
            },
        }
    }
}
