//! The notification contract: what a platform may send, how it is bounded, and the record that
//! moves through the pipeline.
//!
//! One JSON object is one notification. `platform`, `id`, `type` and `occurred_at` (RFC 3339)
//! are required; `post_id`, `author_id`, `actor_id`, `text`, `lang`, `tags`, `metrics` and
//! `attributes` are optional. Unknown fields are ignored, so a platform that sends a field
//! Sluice does not know yet is not refused. `(platform, id)` is the idempotency key.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Size bounds of each field, in bytes of UTF-8 unless said otherwise.
pub mod limits {
    pub const PLATFORM: usize = 64;
    pub const ID: usize = 256;
    pub const TYPE: usize = 64;
    /// `post_id`, `author_id` and `actor_id`.
    pub const REF_ID: usize = 256;
    pub const TEXT: usize = 32 * 1024;
    pub const LANG: usize = 35;
    pub const TAGS: usize = 64;
    pub const TAG: usize = 128;
    pub const METRICS: usize = 64;
    pub const METRIC_NAME: usize = 64;
    /// The `attributes` object, as compact JSON text.
    pub const ATTRIBUTES: usize = 16 * 1024;
    pub const OCCURRED_AT: usize = 64;
}

/// A validated notification, as kept in shared memory and written to the master store.
///
/// Times are microseconds since the Unix epoch, UTC. `attributes` is the object as compact JSON
/// text, so that arbitrary platform data travels through every store unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub platform: String,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub occurred_at: i64,
    pub received_at: i64,
    pub post_id: Option<String>,
    pub author_id: Option<String>,
    pub actor_id: Option<String>,
    pub text: Option<String>,
    pub lang: Option<String>,
    pub tags: Vec<String>,
    pub metrics: BTreeMap<String, i64>,
    pub attributes: Option<String>,
}

/// The JSON a platform sends for one notification, before validation.
#[derive(Deserialize)]
struct Input<'a> {
    platform: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    occurred_at: &'a str,
    #[serde(default)]
    post_id: Option<String>,
    #[serde(default)]
    author_id: Option<String>,
    #[serde(default)]
    actor_id: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    lang: Option<String>,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    metrics: Option<BTreeMap<String, i64>>,
    #[serde(default, borrow)]
    attributes: Option<&'a RawValue>,
}

impl Notification {
    /// Parses and validates one notification from its JSON text. The error says what is wrong
    /// and where, in words a platform's engineer can act on.
    pub fn from_json(json: &str, received_at: i64) -> Result<Self, String> {
        let mut de = serde_json::Deserializer::from_str(json);
        let input: Input<'_> = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.inner().to_string()
            } else {
                format!("`{path}`: {}", e.inner())
            }
        })?;
        de.end().map_err(|e| e.to_string())?;

        if input.occurred_at.len() > limits::OCCURRED_AT {
            return Err(too_long(
                "occurred_at",
                input.occurred_at.len(),
                limits::OCCURRED_AT,
            ));
        }
        let occurred_at = DateTime::parse_from_rfc3339(input.occurred_at)
            .map_err(|e| {
                format!(
                    "`occurred_at` {:?} is not an RFC 3339 timestamp such as 2026-11-23T07:13:16Z: {e}",
                    input.occurred_at
                )
            })?
            .timestamp_micros();
        let attributes = match input.attributes {
            None => None,
            Some(raw) => {
                let value: serde_json::Value =
                    serde_json::from_str(raw.get()).map_err(|e| format!("`attributes`: {e}"))?;
                if !value.is_object() {
                    return Err("`attributes` must be a JSON object".to_string());
                }
                Some(value.to_string())
            }
        };
        let notification = Notification {
            platform: input.platform,
            id: input.id,
            kind: input.kind,
            occurred_at,
            received_at,
            post_id: input.post_id,
            author_id: input.author_id,
            actor_id: input.actor_id,
            text: input.text,
            lang: input.lang,
            tags: input.tags.unwrap_or_default(),
            metrics: input.metrics.unwrap_or_default(),
            attributes,
        };
        notification.validate()?;
        Ok(notification)
    }

    /// Checks every bound of the contract. Records that arrive by another road than JSON (a
    /// gRPC Append) pass through here too, so no store ever holds an out-of-bounds record.
    pub fn validate(&self) -> Result<(), String> {
        check_platform(&self.platform)?;
        check_key("id", &self.id, limits::ID)?;
        check_token("type", &self.kind, limits::TYPE, b"._:/-")?;
        for (field, value) in [
            ("post_id", &self.post_id),
            ("author_id", &self.author_id),
            ("actor_id", &self.actor_id),
        ] {
            if let Some(value) = value {
                check_key(field, value, limits::REF_ID)?;
            }
        }
        if let Some(text) = &self.text {
            check_len("text", text, limits::TEXT)?;
        }
        if let Some(lang) = &self.lang {
            check_token("lang", lang, limits::LANG, b"-_")?;
        }
        if self.tags.len() > limits::TAGS {
            return Err(format!(
                "`tags` has {} items; the limit is {}",
                self.tags.len(),
                limits::TAGS
            ));
        }
        for (i, tag) in self.tags.iter().enumerate() {
            check_key(&format!("tags[{i}]"), tag, limits::TAG)?;
        }
        if self.metrics.len() > limits::METRICS {
            return Err(format!(
                "`metrics` has {} entries; the limit is {}",
                self.metrics.len(),
                limits::METRICS
            ));
        }
        for name in self.metrics.keys() {
            check_key("metrics key", name, limits::METRIC_NAME)?;
        }
        if let Some(attributes) = &self.attributes {
            check_len("attributes", attributes, limits::ATTRIBUTES)?;
            if !attributes.starts_with('{') {
                return Err("`attributes` must be a JSON object".to_string());
            }
        }
        Ok(())
    }

    /// The bytes this record holds, as charged against shared memory's budget.
    pub fn approx_size(&self) -> usize {
        const OVERHEAD: usize = 192;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        OVERHEAD
            + self.platform.len()
            + self.id.len()
            + self.kind.len()
            + opt(&self.post_id)
            + opt(&self.author_id)
            + opt(&self.actor_id)
            + opt(&self.text)
            + opt(&self.lang)
            + opt(&self.attributes)
            + self.tags.iter().map(|t| t.len() + 24).sum::<usize>()
            + self.metrics.keys().map(|k| k.len() + 40).sum::<usize>()
    }

    /// The record as a platform would read it back: RFC 3339 times and `attributes` as an
    /// object.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::json!({
            "platform": self.platform,
            "id": self.id,
            "type": self.kind,
            "occurred_at": format_micros(self.occurred_at),
            "received_at": format_micros(self.received_at),
        });
        let object = value.as_object_mut().expect("a json! object literal");
        for (field, v) in [
            ("post_id", &self.post_id),
            ("author_id", &self.author_id),
            ("actor_id", &self.actor_id),
            ("text", &self.text),
            ("lang", &self.lang),
        ] {
            if let Some(v) = v {
                object.insert(field.into(), v.clone().into());
            }
        }
        if !self.tags.is_empty() {
            object.insert("tags".into(), self.tags.clone().into());
        }
        if !self.metrics.is_empty() {
            object.insert("metrics".into(), serde_json::json!(self.metrics));
        }
        if let Some(attributes) = &self.attributes {
            // Validated as a JSON object on the way in; a store that hands back something else
            // is shown as the text it holds rather than hidden.
            let parsed = serde_json::from_str(attributes)
                .unwrap_or_else(|_| serde_json::Value::String(attributes.clone()));
            object.insert("attributes".into(), parsed);
        }
        value
    }
}

/// Microseconds since the epoch as RFC 3339 in UTC.
pub fn format_micros(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| micros.to_string())
}

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn too_long(field: &str, len: usize, max: usize) -> String {
    format!("`{field}` is {len} bytes; the limit is {max}")
}

fn check_len(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.len() > max {
        return Err(too_long(field, value.len(), max));
    }
    Ok(())
}

/// The rule a platform's name follows wherever it is named (a notification, an API key's
/// scope): 1 to 64 of A-Z, a-z, 0-9, '.', '_' and '-', not starting with '.'. Analysts group by
/// it and keys are scoped by it, so `../../etc` or a name with spaces has no place in it.
pub fn check_platform(platform: &str) -> Result<(), String> {
    check_key("platform", platform, limits::PLATFORM)?;
    if platform.starts_with('.')
        || !platform
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(format!(
            "`platform` {platform:?} may hold only A-Z, a-z, 0-9, '.', '_' and '-', and may not start with '.'"
        ));
    }
    Ok(())
}

/// A name analysts group by (`type`, `lang`): non-empty, bounded, and only ASCII letters,
/// digits and the few punctuation marks `extra` allows, so that no value can pass for another
/// in a report or smuggle markup, spaces or path parts into one.
fn check_token(field: &str, value: &str, max: usize, extra: &[u8]) -> Result<(), String> {
    check_key(field, value, max)?;
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
    {
        let extra: Vec<String> = extra.iter().map(|b| format!("'{}'", *b as char)).collect();
        return Err(format!(
            "`{field}` {value:?} may hold only A-Z, a-z, 0-9 and {}",
            extra.join(", ")
        ));
    }
    Ok(())
}

/// A key-like field: non-empty, bounded, and free of control characters (they would corrupt
/// logs, paths and terminals downstream).
fn check_key(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` must not be empty"));
    }
    check_len(field, value, max)?;
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` must not contain control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: i64 = 1_700_000_000_000_000;

    fn parse(json: &str) -> Result<Notification, String> {
        Notification::from_json(json, RECEIVED)
    }

    #[test]
    fn full_notification_round_trips_to_json() {
        let n = parse(
            r#"{"platform":"mastodon","id":"n1","type":"post.liked","occurred_at":"2026-11-23T08:00:00+01:00",
               "post_id":"p1","author_id":"a","actor_id":"b","text":"hi","lang":"en",
               "tags":["x","y"],"metrics":{"likes":3},"attributes":{"k": [1, 2], "a": null},
               "future_field":"ignored"}"#,
        )
        .unwrap();
        assert_eq!(n.kind, "post.liked");
        assert_eq!(n.occurred_at, 1_795_417_200_000_000);
        assert_eq!(n.tags, vec!["x", "y"]);
        assert_eq!(n.metrics["likes"], 3);
        assert_eq!(n.attributes.as_deref(), Some(r#"{"a":null,"k":[1,2]}"#));
        let json = n.to_json();
        assert_eq!(json["occurred_at"], "2026-11-23T07:00:00Z");
        assert_eq!(json["attributes"]["k"][1], 2);
        assert!(json.get("future_field").is_none());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "platform",
            ),
            (
                r#"{"platform":"p","id":5,"type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "`id`",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"yesterday"}"#,
                "occurred_at",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","metrics":{"likes":1.5}}"#,
                "`metrics.likes`",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","tags":["ok", 3]}"#,
                "`tags[1]`",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","attributes":[1]}"#,
                "attributes",
            ),
            (
                r#"{"platform":"","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "`platform` must not be empty",
            ),
            (
                r#"{"platform":"../../etc","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "may hold only A-Z",
            ),
            (
                r#"{"platform":"my platform","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "may hold only A-Z",
            ),
            (
                r#"{"platform":"p","id":"1","type":"<script>","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "`type` \"<script>\" may hold only",
            ),
            (
                r#"{"platform":"p","id":"1","type":"post liked","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "`type` \"post liked\" may hold only",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","lang":"en US"}"#,
                "`lang` \"en US\" may hold only",
            ),
            (
                r#"{"platform":"p\u0000","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#,
                "control characters",
            ),
            (
                r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"} trailing"#,
                "trailing",
            ),
        ];
        for (json, expected) in cases {
            let err = parse(json).unwrap_err();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn oversize_fields_are_refused_with_their_limit() {
        let text = "x".repeat(limits::TEXT + 1);
        let json = format!(
            r#"{{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","text":"{text}"}}"#
        );
        assert_eq!(
            parse(&json).unwrap_err(),
            format!(
                "`text` is {} bytes; the limit is {}",
                limits::TEXT + 1,
                limits::TEXT
            )
        );
        let tags: Vec<String> = (0..=limits::TAGS).map(|i| format!("t{i}")).collect();
        let json = serde_json::json!({"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","tags":tags});
        assert!(
            parse(&json.to_string())
                .unwrap_err()
                .contains("`tags` has 65 items")
        );
    }
}
