//! The query handler: runs analysts' SQL over the replica with DataFusion on every core and
//! keeps answered queries (orange) in a cache.
//!
//! Not built yet: it needs the replica first (issue 4 of the roadmap).
