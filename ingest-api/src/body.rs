//! Splits a request body into notifications: one JSON object, a JSON array of objects, or
//! NDJSON (one object a line).
//!
//! A body that cannot be read as a whole (not UTF-8, broken JSON, too many items) is refused
//! as a whole with the place where it broke. Otherwise each item is judged on its own, so one
//! bad notification in a batch of a thousand costs only itself.

use serde_json::value::RawValue;
use sluice_core::Notification;

use crate::error::ApiError;

/// How the body is framed, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Json,
    Ndjson,
}

impl Framing {
    /// `application/json` (or no content type at all) and `application/x-ndjson` (also
    /// `application/jsonl`, `application/ndjson`).
    pub fn from_content_type(content_type: Option<&str>) -> Result<Self, ApiError> {
        let Some(content_type) = content_type else {
            return Ok(Framing::Json);
        };
        match mime(content_type).as_str() {
            "application/json" | "" => Ok(Framing::Json),
            "application/x-ndjson"
            | "application/ndjson"
            | "application/jsonl"
            | "application/x-jsonlines" => Ok(Framing::Ndjson),
            _ => Err(ApiError::UnsupportedMediaType(format!(
                "content type {content_type:?} is not accepted: send application/json (an object \
                 or an array of objects), application/x-ndjson (one object per line), or \
                 CloudEvents (application/cloudevents+json, application/cloudevents-batch+json, \
                 or ce-* headers with an application/json body)"
            ))),
        }
    }
}

/// A content type's media type, lower case and without its parameters (`; charset=…`).
pub(crate) fn mime(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// One item of the body: its position and either the notification or why it was refused.
pub struct Item {
    pub index: usize,
    /// The 1-based line of an NDJSON item.
    pub line: Option<usize>,
    pub parsed: Result<Notification, String>,
}

/// Parses a whole body. `received_at` stamps every notification of the request alike.
pub fn parse(
    body: &[u8],
    framing: Framing,
    received_at: i64,
    max_items: usize,
) -> Result<Vec<Item>, ApiError> {
    let items = match framing {
        Framing::Json => parse_json(body, received_at, max_items)?,
        Framing::Ndjson => parse_ndjson(body, received_at, max_items)?,
    };
    if items.is_empty() {
        return Err(ApiError::BadRequest(
            "the body holds no notifications: send a JSON object, an array of objects, or \
             NDJSON lines"
                .to_string(),
        ));
    }
    Ok(items)
}

fn parse_json(body: &[u8], received_at: i64, max_items: usize) -> Result<Vec<Item>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not valid UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    let trimmed = text.trim_start();
    if trimmed.starts_with('[') {
        let raw: Vec<&RawValue> = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        if raw.len() > max_items {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body holds {} notifications; the limit is {max_items} a request",
                raw.len()
            )));
        }
        Ok(raw
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Item {
                index,
                line: None,
                parsed: parse_object(raw.get(), received_at),
            })
            .collect())
    } else if trimmed.starts_with('{') {
        // Parse the object's syntax first, so that a broken body is a 400 for the whole body.
        let raw: &RawValue = serde_json::from_str(text)
            .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
        Ok(vec![Item {
            index: 0,
            line: None,
            parsed: parse_object(raw.get(), received_at),
        }])
    } else if trimmed.is_empty() {
        Ok(Vec::new())
    } else {
        Err(ApiError::BadRequest(
            "the body must be a JSON object or an array of objects (for one object per line, \
             send Content-Type: application/x-ndjson)"
                .to_string(),
        ))
    }
}

fn parse_ndjson(body: &[u8], received_at: i64, max_items: usize) -> Result<Vec<Item>, ApiError> {
    let mut items = Vec::new();
    for (line_index, line) in body.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if items.len() == max_items {
            return Err(ApiError::PayloadTooLarge(format!(
                "the body holds more than {max_items} notifications; the limit is {max_items} a \
                 request"
            )));
        }
        let parsed = match std::str::from_utf8(line) {
            Ok(text) => parse_object(text.trim(), received_at),
            Err(e) => Err(format!(
                "the line is not valid UTF-8: invalid byte at offset {}",
                e.valid_up_to()
            )),
        };
        items.push(Item {
            index: items.len(),
            line: Some(line_index + 1),
            parsed,
        });
    }
    Ok(items)
}

fn parse_object(json: &str, received_at: i64) -> Result<Notification, String> {
    if !json.starts_with('{') {
        return Err("the item is not a JSON object".to_string());
    }
    Notification::from_json(json, received_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z"}"#;

    fn reasons(items: &[Item]) -> Vec<Option<&str>> {
        items
            .iter()
            .map(|i| i.parsed.as_ref().err().map(String::as_str))
            .collect()
    }

    #[test]
    fn an_array_is_judged_item_by_item() {
        let body = format!("[{OK}, 3, {{\"platform\":\"p\"}}]");
        let items = parse(body.as_bytes(), Framing::Json, 0, 10).unwrap();
        let reasons = reasons(&items);
        assert_eq!(reasons[0], None);
        assert_eq!(reasons[1], Some("the item is not a JSON object"));
        assert!(reasons[2].unwrap().contains("missing field `id`"));
    }

    #[test]
    fn ndjson_skips_blank_lines_and_reports_lines() {
        let body = format!("{OK}\n\n  \n{{\"platform\": 1\n{OK}\r\n");
        let items = parse(body.as_bytes(), Framing::Ndjson, 0, 10).unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(items[1].line, Some(4));
        assert!(items[1].parsed.is_err());
        assert!(items[2].parsed.is_ok());
    }

    #[test]
    fn broken_bodies_are_refused_whole() {
        for (body, framing, expected) in [
            (b"[{\"a\":1},".as_slice(), Framing::Json, "not valid JSON"),
            (b"\xff\xfe{}", Framing::Json, "not valid UTF-8"),
            (b"   ", Framing::Json, "no notifications"),
            (b"\n\n", Framing::Ndjson, "no notifications"),
            (b"42", Framing::Json, "must be a JSON object"),
        ] {
            let err = parse(body, framing, 0, 10).err().unwrap();
            assert!(err.to_string().contains(expected), "{err}");
        }
        let many = format!("[{}]", [OK; 11].join(","));
        assert!(matches!(
            parse(many.as_bytes(), Framing::Json, 0, 10),
            Err(ApiError::PayloadTooLarge(_))
        ));
    }

    #[test]
    fn deep_nesting_is_refused_without_crashing() {
        let depth = 1_000_000;
        let nested = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let deep_item = format!("[{nested}]");
        let items = parse(deep_item.as_bytes(), Framing::Json, 0, 10).unwrap();
        assert_eq!(
            items[0].parsed.as_ref().unwrap_err(),
            "the item is not a JSON object"
        );
        let with = |field: &str| {
            let body = format!(
                r#"{{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z","{field}":{{"a":{nested}}}}}"#
            );
            parse(body.as_bytes(), Framing::Ndjson, 0, 10)
                .unwrap()
                .remove(0)
                .parsed
        };
        let reason = with("attributes").unwrap_err();
        assert!(reason.contains("recursion limit"), "{reason}");
        // An unknown field is skipped without recursion, however deep it is.
        assert!(with("unknown_field").is_ok());
    }
}
