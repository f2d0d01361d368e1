//! A post's audit trail and state, event-sourced from its notifications.
//!
//! The trail joins two sources: the ingest nodes' shared memory (notifications that may not be
//! in the replica yet: gray, blue, or green) and the replica (everything replicated, including
//! entries already evicted from memory: red). Memory wins when both hold a notification, since
//! it knows its color. The state is the fold of the trail, oldest first.

use std::collections::{BTreeMap, HashSet};

use chrono::DateTime;
use serde::Deserialize;
use serde_json::{Value, json};
use sluice_core::Notification;
use sluice_core::notification::format_micros;
use sluice_proto::v1;

use crate::error::ApiError;

/// One notification in a post's trail.
#[derive(Debug, Clone)]
pub struct Event {
    pub occurred_at: i64,
    pub received_at: i64,
    pub id: String,
    pub color: String,
    pub notification: Value,
}

impl Event {
    fn sort_key(&self) -> (i64, i64, &str) {
        (self.occurred_at, self.received_at, &self.id)
    }

    pub fn to_json(&self) -> Value {
        json!({"color": self.color, "notification": self.notification})
    }
}

/// What an ingest node answers for `GET /v1/memory/posts/{platform}/{post_id}`.
#[derive(Debug, Deserialize)]
pub struct MemoryPost {
    pub notifications: Vec<MemoryEntry>,
}

#[derive(Debug, Deserialize)]
pub struct MemoryEntry {
    pub color: String,
    pub notification: Value,
}

fn micros_of(value: &Value, field: &str) -> Option<i64> {
    let text = value.get(field)?.as_str()?;
    Some(DateTime::parse_from_rfc3339(text).ok()?.timestamp_micros())
}

/// Parses `as_of` as RFC 3339.
pub fn parse_as_of(text: &str) -> Result<i64, ApiError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_micros())
        .map_err(|e| {
            ApiError::BadRequest(format!(
                "as_of {text:?} is not an RFC 3339 time such as 2026-11-20T10:00:00Z: {e}"
            ))
        })
}

/// The trail: memory entries first (they carry colors), then replica rows not already seen,
/// cut at `as_of` and sorted oldest first.
pub fn merge(
    memory: Vec<MemoryEntry>,
    replica: Vec<v1::Notification>,
    as_of: Option<i64>,
) -> Vec<Event> {
    let mut seen = HashSet::new();
    let mut events = Vec::new();
    for entry in memory {
        let (Some(occurred_at), Some(received_at), Some(id)) = (
            micros_of(&entry.notification, "occurred_at"),
            micros_of(&entry.notification, "received_at"),
            entry.notification.get("id").and_then(Value::as_str),
        ) else {
            tracing::warn!(notification = %entry.notification, "an ingest node sent an unreadable notification");
            continue;
        };
        if seen.insert(id.to_string()) {
            events.push(Event {
                occurred_at,
                received_at,
                id: id.to_string(),
                color: entry.color,
                notification: entry.notification,
            });
        }
    }
    for row in replica {
        if !seen.insert(row.id.clone()) {
            continue;
        }
        let id = row.id.clone();
        match Notification::try_from(row) {
            Ok(n) => events.push(Event {
                occurred_at: n.occurred_at,
                received_at: n.received_at,
                id,
                // In the replica and in no node's memory: evicted, still in both stores.
                color: "red".into(),
                notification: n.to_json(),
            }),
            Err(error) => tracing::warn!(id, error, "the replica holds an invalid notification"),
        }
    }
    if let Some(as_of) = as_of {
        events.retain(|e| e.occurred_at <= as_of);
    }
    events.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    events
}

/// What a notification does to its post, by its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sets the text, language and tags, and the creation time.
    Create,
    /// Sets the text, language and tags, and the edit time.
    Edit,
    Delete,
    Restore,
    /// Counts, and adds its metrics, like every notification.
    Other,
}

const CREATE_TYPES: &str = "created,published";
const EDIT_TYPES: &str = "updated,edited,modified";
const DELETE_TYPES: &str = "deleted,removed";
const RESTORE_TYPES: &str = "restored,undeleted";

/// Which notification types create, edit, delete and restore a post. A type matches a word of
/// a list by its whole name or by its last dot-separated part, ignoring case: `updated` matches
/// `post.updated` and `Post.Updated`.
#[derive(Debug, Clone, clap::Args)]
#[group(id = "post_actions")]
pub struct PostActions {
    /// Notification types that create a post (comma-separated).
    #[arg(
        long,
        env = "SLUICE_POST_CREATE_TYPES",
        value_delimiter = ',',
        default_value = CREATE_TYPES
    )]
    pub post_create_types: Vec<String>,
    /// Notification types that edit a post: the last one's text, language and tags are the
    /// post's.
    #[arg(
        long,
        env = "SLUICE_POST_EDIT_TYPES",
        value_delimiter = ',',
        default_value = EDIT_TYPES
    )]
    pub post_edit_types: Vec<String>,
    /// Notification types that delete a post.
    #[arg(
        long,
        env = "SLUICE_POST_DELETE_TYPES",
        value_delimiter = ',',
        default_value = DELETE_TYPES
    )]
    pub post_delete_types: Vec<String>,
    /// Notification types that restore a deleted post.
    #[arg(
        long,
        env = "SLUICE_POST_RESTORE_TYPES",
        value_delimiter = ',',
        default_value = RESTORE_TYPES
    )]
    pub post_restore_types: Vec<String>,
}

impl Default for PostActions {
    /// The flags' defaults.
    fn default() -> Self {
        let words = |list: &str| list.split(',').map(String::from).collect();
        PostActions {
            post_create_types: words(CREATE_TYPES),
            post_edit_types: words(EDIT_TYPES),
            post_delete_types: words(DELETE_TYPES),
            post_restore_types: words(RESTORE_TYPES),
        }
    }
}

impl PostActions {
    /// What a notification of type `kind` does to its post.
    pub fn of(&self, kind: &str) -> Action {
        let last = kind.rsplit('.').next().unwrap_or(kind);
        let matches = |words: &[String]| {
            words.iter().map(|w| w.trim()).any(|word| {
                !word.is_empty()
                    && (word.eq_ignore_ascii_case(kind) || word.eq_ignore_ascii_case(last))
            })
        };
        if matches(&self.post_create_types) {
            Action::Create
        } else if matches(&self.post_edit_types) {
            Action::Edit
        } else if matches(&self.post_delete_types) {
            Action::Delete
        } else if matches(&self.post_restore_types) {
            Action::Restore
        } else {
            Action::Other
        }
    }
}

/// The post's state after its trail: the last text, whether it is deleted, metric totals
/// (each notification's metrics are increments), how many notifications of each type, and
/// when things happened. `actions` says which types create, edit, delete and restore a post.
pub fn fold(events: &[Event], actions: &PostActions) -> Value {
    let mut text = Value::Null;
    let mut lang = Value::Null;
    let mut tags = Value::Null;
    let mut author_id = Value::Null;
    let mut deleted = false;
    let (mut created_at, mut edited_at, mut deleted_at) = (None, None, None);
    let mut metric_totals: BTreeMap<String, i64> = BTreeMap::new();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for event in events {
        let n = &event.notification;
        let kind = n.get("type").and_then(Value::as_str).unwrap_or_default();
        *counts.entry(kind.to_string()).or_default() += 1;
        if let Some(metrics) = n.get("metrics").and_then(Value::as_object) {
            for (name, value) in metrics {
                let total = metric_totals.entry(name.clone()).or_default();
                *total = total.saturating_add(value.as_i64().unwrap_or(0));
            }
        }
        if author_id.is_null()
            && let Some(author) = n.get("author_id")
        {
            author_id = author.clone();
        }
        match actions.of(kind) {
            action @ (Action::Create | Action::Edit) => {
                if let Some(t) = n.get("text") {
                    text = t.clone();
                }
                if let Some(l) = n.get("lang") {
                    lang = l.clone();
                }
                if let Some(t) = n.get("tags") {
                    tags = t.clone();
                }
                if action == Action::Create {
                    created_at.get_or_insert(event.occurred_at);
                } else {
                    edited_at = Some(event.occurred_at);
                }
            }
            Action::Delete => {
                deleted = true;
                deleted_at = Some(event.occurred_at);
            }
            Action::Restore => deleted = false,
            Action::Other => {}
        }
    }
    let time = |t: Option<i64>| t.map_or(Value::Null, |t| Value::String(format_micros(t)));
    json!({
        "author_id": author_id,
        "text": text,
        "lang": lang,
        "tags": tags,
        "deleted": deleted,
        "created_at": time(created_at),
        "edited_at": time(edited_at),
        "deleted_at": time(deleted_at),
        "last_event_at": time(events.last().map(|e| e.occurred_at)),
        "notification_count": events.len(),
        "counts_by_type": counts,
        "metric_totals": metric_totals,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, kind: &str, at: &str, extra: Value) -> MemoryEntry {
        let mut n = json!({"platform": "p", "id": id, "type": kind, "occurred_at": at,
            "received_at": at, "post_id": "post"});
        n.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        MemoryEntry {
            color: "gray".into(),
            notification: n,
        }
    }

    #[test]
    fn the_state_folds_the_trail_in_event_order() {
        let memory = vec![
            entry("3", "post.deleted", "2026-11-20T12:00:00Z", json!({})),
            entry(
                "1",
                "post.created",
                "2026-11-20T10:00:00Z",
                json!({"text": "hello", "author_id": "u1", "metrics": {"likes": 0}}),
            ),
            entry(
                "2",
                "post.edited",
                "2026-11-20T11:00:00Z",
                json!({"text": "hello!"}),
            ),
            entry(
                "4",
                "post.liked",
                "2026-11-20T11:30:00Z",
                json!({"metrics": {"likes": 2}}),
            ),
        ];
        let events = merge(memory, Vec::new(), None);
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "4", "3"]);
        let state = fold(&events, &PostActions::default());
        assert_eq!(state["text"], "hello!");
        assert_eq!(state["deleted"], true);
        assert_eq!(state["metric_totals"]["likes"], 2);
        assert_eq!(state["counts_by_type"]["post.liked"], 1);
        assert_eq!(state["last_event_at"], "2026-11-20T12:00:00Z");

        let before = parse_as_of("2026-11-20T10:30:00Z").unwrap();
        let memory = vec![
            entry(
                "1",
                "post.created",
                "2026-11-20T10:00:00Z",
                json!({"text": "hello"}),
            ),
            entry(
                "2",
                "post.edited",
                "2026-11-20T11:00:00Z",
                json!({"text": "hello!"}),
            ),
        ];
        let state = fold(
            &merge(memory, Vec::new(), Some(before)),
            &PostActions::default(),
        );
        assert_eq!(state["text"], "hello");
        assert_eq!(state["notification_count"], 1);
        assert!(parse_as_of("yesterday").is_err());
    }

    #[test]
    fn memory_wins_over_the_replica_and_replica_only_rows_are_red() {
        let replica = |id: &str| v1::Notification {
            platform: "p".into(),
            id: id.into(),
            r#type: "post.liked".into(),
            occurred_at_micros: 1_000_000,
            received_at_micros: 2_000_000,
            post_id: Some("post".into()),
            ..v1::Notification::default()
        };
        let memory = vec![entry("a", "post.liked", "1970-01-01T00:00:01Z", json!({}))];
        let events = merge(memory, vec![replica("a"), replica("b")], None);
        let colors: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.id.as_str(), e.color.as_str()))
            .collect();
        assert_eq!(colors, [("a", "gray"), ("b", "red")]);
    }

    #[test]
    fn updated_modified_and_removed_posts_and_configured_words() {
        let trail = |kinds: &[(&str, &str)]| {
            let memory = kinds
                .iter()
                .enumerate()
                .map(|(i, (kind, text))| {
                    entry(
                        &i.to_string(),
                        kind,
                        &format!("2026-11-20T1{i}:00:00Z"),
                        json!({"text": text}),
                    )
                })
                .collect();
            merge(memory, Vec::new(), None)
        };
        let defaults = PostActions::default();
        for edit in [
            "post.updated",
            "post.edited",
            "post.modified",
            "Post.Updated",
            "updated",
        ] {
            let state = fold(
                &trail(&[("post.created", "first"), (edit, "second")]),
                &defaults,
            );
            assert_eq!(state["text"], "second", "{edit}");
            assert_eq!(state["edited_at"], "2026-11-20T11:00:00Z", "{edit}");
            assert_eq!(state["created_at"], "2026-11-20T10:00:00Z", "{edit}");
        }
        for delete in ["post.deleted", "post.removed"] {
            let state = fold(&trail(&[("post.created", "a"), (delete, "")]), &defaults);
            assert_eq!(state["deleted"], true, "{delete}");
            let state = fold(
                &trail(&[("post.created", "a"), (delete, ""), ("post.restored", "")]),
                &defaults,
            );
            assert_eq!(state["deleted"], false, "{delete}");
        }
        // A like neither edits nor deletes; a type that merely contains a word does not match.
        let state = fold(
            &trail(&[
                ("post.created", "a"),
                ("post.liked", "b"),
                ("post.updated_count", "c"),
            ]),
            &defaults,
        );
        assert_eq!(state["text"], "a");
        assert_eq!(state["edited_at"], Value::Null);
        // Words of the operator's own, whole types included.
        let custom = PostActions {
            post_edit_types: vec!["rewritten".into(), "status.changed".into()],
            ..PostActions::default()
        };
        let state = fold(
            &trail(&[("post.created", "a"), ("post.rewritten", "b")]),
            &custom,
        );
        assert_eq!(state["text"], "b");
        let state = fold(
            &trail(&[("post.created", "a"), ("status.changed", "c")]),
            &custom,
        );
        assert_eq!(state["text"], "c");
        let state = fold(
            &trail(&[("post.created", "a"), ("post.updated", "d")]),
            &custom,
        );
        assert_eq!(state["text"], "a", "updated is no longer an edit");
    }
}
