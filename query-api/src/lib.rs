//! The query API: `POST /v1/query` and the post state and audit-trail reads, in front of the
//! query handlers.
//!
//! Not built yet: it needs the replica first (issue 4 of the roadmap).
