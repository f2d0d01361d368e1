//! The CloudEvents 1.0 HTTP binding on `POST /v1/notifications`: structured mode
//! (`application/cloudevents+json`, one event), batched mode
//! (`application/cloudevents-batch+json`, a JSON array of events) and binary mode (`ce-*`
//! headers, the body as `data`).
//!
//! Each event becomes one notification and then goes the native road: the same validator,
//! scopes, dedupe on `(platform, id)`, `ack=` and answer. The mapping:
//!
//! | CloudEvents | notification |
//! |---|---|
//! | `source` | `platform` (so it must be a platform name, e.g. `mastodon.social`) |
//! | `id` | `id` |
//! | `type` | `type` |
//! | `time` (required here: a notification needs `occurred_at`) | `occurred_at` |
//! | `subject` | `post_id` (or `data.post_id` when there is no subject) |
//! | `data` (a JSON object) | the other fields: `author_id`, `actor_id`, `text`, `lang`, `tags`, `metrics`, `attributes` |
//! | extensions and `dataschema` | `attributes.cloudevents`, an object by attribute name |
//!
//! The envelope alone names a notification, so `data` may not carry `platform`, `id`, `type`
//! or `occurred_at`: a sender that put a different value there would otherwise see one of the
//! two silently win.
//!
//! Why not the `cloudevents-sdk` crate: 0.9 is on axum 0.8 and http 1, but its axum
//! extractor reads the body with no limit (`to_bytes(body, usize::MAX)`, past our
//! `DefaultBodyLimit` and memory hold) and answers a body that breaks off with a 500 in plain
//! text; its server side has no batched mode; its binary mode does not percent-decode `ce-*`
//! header values (binding §3.1.3.2); and it takes specversion 0.3. What would be left to use is
//! its parse of seven attributes into a typed struct, which we would map again, with five more
//! crates in the build. The parse below is that map, with refusals in our own words.

use std::borrow::Cow;
use std::collections::BTreeMap;

use axum::http::{HeaderMap, header};
use serde::Deserialize;
use serde::de::{Error as _, MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;
use sluice_core::Notification;
use sluice_core::notification::{check_platform, limits};

use crate::body::{Item, mime};
use crate::error::ApiError;

/// The structured mode's content type.
pub const STRUCTURED: &str = "application/cloudevents+json";
/// The batched mode's content type.
pub const BATCHED: &str = "application/cloudevents-batch+json";
/// The key of a notification's `attributes` under which an event's extensions (and its
/// `dataschema`) are kept.
pub const ATTRIBUTES_KEY: &str = "cloudevents";
/// The header whose presence makes a request with a JSON (or no) content type a binary-mode
/// event.
pub const SPECVERSION_HEADER: &str = "ce-specversion";

/// The context attributes of CloudEvents 1.0 that a notification maps or checks. Any other
/// member of a structured event (any other `ce-*` header) is an extension.
const CONTEXT_ATTRIBUTES: [&str; 8] = [
    "specversion",
    "id",
    "source",
    "type",
    "time",
    "subject",
    "datacontenttype",
    "dataschema",
];

/// Which of the binding's three modes a request is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Structured,
    Batched,
    Binary,
}

impl Mode {
    /// The mode a request is in, or `None` for a native request. The content type decides
    /// first, as the binding says; a `ce-specversion` header makes any other request binary,
    /// whose body must then be JSON.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Mode>, ApiError> {
        let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes());
        let mime = content_type.map(|v| mime(&String::from_utf8_lossy(v)));
        match mime.as_deref() {
            Some(STRUCTURED) => return Ok(Some(Mode::Structured)),
            Some(BATCHED) => return Ok(Some(Mode::Batched)),
            _ => {}
        }
        if !headers.contains_key(SPECVERSION_HEADER) {
            return Ok(None);
        }
        match mime.as_deref() {
            None | Some("") => Ok(Some(Mode::Binary)),
            Some(m) if is_json(m) => Ok(Some(Mode::Binary)),
            Some(other) => Err(ApiError::UnsupportedMediaType(format!(
                "a binary-mode CloudEvent (ce-specversion is set) carries its data as the body, \
                 and Sluice needs that data to be a JSON object: send Content-Type: \
                 application/json, not {other:?}"
            ))),
        }
    }
}

/// Whether a media type (lower case, without parameters) is JSON.
fn is_json(mime: &str) -> bool {
    mime == "application/json" || mime == "text/json" || mime.ends_with("+json")
}

/// Parses a CloudEvents request into items, as [`crate::body::parse`] does a native one: a body
/// that cannot be read as a whole is refused whole; otherwise each event is judged on its own.
pub fn parse(
    mode: Mode,
    headers: &HeaderMap,
    body: &[u8],
    received_at: i64,
    max_items: usize,
) -> Result<Vec<Item>, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body is not valid UTF-8: invalid byte at offset {}",
            e.valid_up_to()
        ))
    })?;
    let one = |parsed| -> Result<Vec<Item>, ApiError> {
        Ok(vec![Item {
            index: 0,
            line: None,
            parsed,
        }])
    };
    match mode {
        Mode::Structured => {
            let raw = parse_json(text)?;
            if !is_object(raw) {
                return Err(ApiError::BadRequest(format!(
                    "a structured CloudEvent ({STRUCTURED}) is one JSON object; send several as \
                     a JSON array with Content-Type: {BATCHED}"
                )));
            }
            one(structured(raw.get(), received_at))
        }
        Mode::Batched => {
            if !text.trim_start().starts_with('[') {
                parse_json(text)?;
                return Err(ApiError::BadRequest(format!(
                    "a CloudEvents batch ({BATCHED}) is a JSON array of events; send one event \
                     as a JSON object with Content-Type: {STRUCTURED}"
                )));
            }
            let events: Vec<&RawValue> = serde_json::from_str(text)
                .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))?;
            if events.is_empty() {
                return Err(ApiError::BadRequest(
                    "the batch holds no events: send a JSON array of CloudEvents".to_string(),
                ));
            }
            if events.len() > max_items {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the batch holds {} events; the limit is {max_items} a request",
                    events.len()
                )));
            }
            Ok(events
                .into_iter()
                .enumerate()
                .map(|(index, raw)| Item {
                    index,
                    line: None,
                    parsed: if is_object(raw) {
                        structured(raw.get(), received_at)
                    } else {
                        Err("the item is not a JSON object (a CloudEvent)".to_string())
                    },
                })
                .collect())
        }
        Mode::Binary => {
            // The body is the event's data; an empty body is an event without data.
            let data = if text.trim().is_empty() {
                None
            } else {
                Some(parse_json(text)?)
            };
            one(binary(headers, data).and_then(|event| event.into_notification(received_at)))
        }
    }
}

/// Checks a body's JSON syntax, so that a broken body is a 400 for the whole body.
fn parse_json(text: &str) -> Result<&RawValue, ApiError> {
    serde_json::from_str(text)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn is_object(raw: &RawValue) -> bool {
    raw.get().starts_with('{')
}

/// One event of either JSON mode, as a notification.
fn structured(json: &str, received_at: i64) -> Result<Notification, String> {
    let members: Members<'_> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let mut event = Event::default();
    for (name, raw) in members.0 {
        match name.as_str() {
            "data" if raw.get() != "null" => event.data = Some(raw),
            "data" => {}
            "data_base64" => {
                return Err(
                    "`data_base64` carries binary data; Sluice needs `data` as a JSON object of \
                     the notification's fields"
                        .to_string(),
                );
            }
            name if CONTEXT_ATTRIBUTES.contains(&name) => {
                let value: Option<String> = serde_json::from_str(raw.get())
                    .map_err(|_| format!("`{name}` must be a string"))?;
                if let Some(value) = value {
                    event.set_attribute(name, value);
                }
            }
            _ => {
                check_extension_name(&name)?;
                let value: Value = serde_json::from_str(raw.get())
                    .map_err(|e| format!("extension `{name}`: {e}"))?;
                match value {
                    Value::Null => {}
                    Value::String(_) | Value::Number(_) | Value::Bool(_) => {
                        event.extensions.insert(name, value);
                    }
                    Value::Array(_) | Value::Object(_) => {
                        return Err(format!(
                            "extension `{name}` must be a string, a number or a boolean"
                        ));
                    }
                }
            }
        }
    }
    event.into_notification(received_at)
}

/// A binary-mode event: its attributes from the `ce-*` headers, its data from the body.
fn binary<'a>(headers: &HeaderMap, data: Option<&'a RawValue>) -> Result<Event<'a>, String> {
    let mut event = Event {
        data,
        ..Event::default()
    };
    for name in headers.keys() {
        // Header names arrive in lower case; the binding's prefix is `ce-`.
        let Some(attribute) = name.as_str().strip_prefix("ce-") else {
            continue;
        };
        let mut values = headers.get_all(name).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(format!("the header `{name}` is given more than once"));
        };
        // Values are percent-encoded where they hold anything but printable ASCII.
        let value = percent_encoding::percent_decode(value.as_bytes())
            .decode_utf8()
            .map_err(|_| format!("the header `{name}` is not UTF-8 once percent-decoded"))?
            .into_owned();
        match attribute {
            "datacontenttype" => {
                return Err(
                    "binary mode carries the data's type as Content-Type, not ce-datacontenttype"
                        .to_string(),
                );
            }
            attribute if CONTEXT_ATTRIBUTES.contains(&attribute) => {
                event.set_attribute(attribute, value)
            }
            extension => {
                check_extension_name(extension).map_err(|e| format!("the header `{name}`: {e}"))?;
                event
                    .extensions
                    .insert(extension.to_string(), Value::String(value));
            }
        }
    }
    Ok(event)
}

/// An extension's name: CloudEvents 1.0 allows only lower-case ASCII letters and digits.
fn check_extension_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    {
        return Err(format!(
            "{name:?} is not a CloudEvents 1.0 attribute, and an extension's name may hold only \
             a-z and 0-9"
        ));
    }
    Ok(())
}

/// One event's attributes and data, whichever mode brought it.
#[derive(Default)]
struct Event<'a> {
    specversion: Option<String>,
    id: Option<String>,
    source: Option<String>,
    kind: Option<String>,
    time: Option<String>,
    subject: Option<String>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    extensions: serde_json::Map<String, Value>,
    /// The JSON text of `data`.
    data: Option<&'a RawValue>,
}

impl<'a> Event<'a> {
    fn set_attribute(&mut self, name: &str, value: String) {
        let slot = match name {
            "specversion" => &mut self.specversion,
            "id" => &mut self.id,
            "source" => &mut self.source,
            "type" => &mut self.kind,
            "time" => &mut self.time,
            "subject" => &mut self.subject,
            "datacontenttype" => &mut self.datacontenttype,
            "dataschema" => &mut self.dataschema,
            _ => unreachable!("only CONTEXT_ATTRIBUTES are set"),
        };
        *slot = Some(value);
    }

    /// The notification this event stands for, checked by the native validator.
    fn into_notification(self, received_at: i64) -> Result<Notification, String> {
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| format!("the event has no `{name}`, which CloudEvents requires"))
        };
        let specversion = required(self.specversion, "specversion")?;
        if specversion != "1.0" {
            return Err(format!(
                "`specversion` {specversion:?} is not supported: Sluice takes CloudEvents 1.0"
            ));
        }
        let id = required(self.id, "id")?;
        let source = required(self.source, "source")?;
        let kind = required(self.kind, "type")?;
        let time = self.time.ok_or_else(|| {
            "the event has no `time`: a notification needs the time it happened (occurred_at)"
                .to_string()
        })?;
        check_platform(&source).map_err(|e| {
            format!("`source` is the notification's platform, and {e}").replacen(
                "`platform` ",
                "",
                1,
            )
        })?;
        if time.len() > limits::OCCURRED_AT {
            return Err(format!(
                "`time` is {} bytes; the limit is {}",
                time.len(),
                limits::OCCURRED_AT
            ));
        }
        if let Err(e) = chrono::DateTime::parse_from_rfc3339(&time) {
            return Err(format!(
                "`time` {time:?} is not an RFC 3339 timestamp such as 2026-11-23T07:13:16Z: {e}"
            ));
        }
        if let Some(content_type) = &self.datacontenttype
            && self.data.is_some()
            && !is_json(&mime(content_type))
        {
            return Err(format!(
                "`datacontenttype` is {content_type:?}; Sluice needs `data` as a JSON object \
                 (application/json)"
            ));
        }

        let mut fields: BTreeMap<String, Cow<'a, RawValue>> = match self.data {
            None => BTreeMap::new(),
            Some(data) if is_object(data) => serde_json::from_str::<Members<'a>>(data.get())
                .map_err(|e| format!("`data`: {e}"))?
                .0
                .into_iter()
                .map(|(k, v)| (k, Cow::Borrowed(v)))
                .collect(),
            Some(_) => {
                return Err(
                    "`data` must be a JSON object of the notification's other fields (author_id, \
                     actor_id, text, lang, tags, metrics, attributes)"
                        .to_string(),
                );
            }
        };
        for (field, attribute) in [
            ("platform", "source"),
            ("id", "id"),
            ("type", "type"),
            ("occurred_at", "time"),
        ] {
            if fields.contains_key(field) {
                return Err(format!(
                    "`data.{field}`: the event's `{attribute}` gives it; leave it out of data"
                ));
            }
        }
        let from_subject = self.subject.is_some();
        if let Some(subject) = self.subject {
            if let Some(post_id) = fields.get("post_id")
                && serde_json::from_str::<String>(post_id.get())
                    .ok()
                    .as_deref()
                    != Some(subject.as_str())
            {
                return Err(
                    "`data.post_id` differs from the event's `subject`, which is the post_id: \
                     give one of them"
                        .to_string(),
                );
            }
            fields.insert("post_id".to_string(), Cow::Owned(raw(&subject)));
        }

        let mut kept = self.extensions;
        if let Some(dataschema) = self.dataschema {
            kept.insert("dataschema".to_string(), Value::String(dataschema));
        }
        if !kept.is_empty() {
            let mut attributes = match fields.get("attributes") {
                Some(raw) if raw.get() == "null" => BTreeMap::new(),
                Some(raw) if is_object(raw) => serde_json::from_str::<Members<'_>>(raw.get())
                    .map_err(|e| format!("`data.attributes`: {e}"))?
                    .0
                    .into_iter()
                    .map(|(k, v)| (k, v.to_owned()))
                    .collect(),
                Some(_) => return Err("`data.attributes` must be a JSON object".to_string()),
                None => BTreeMap::new(),
            };
            if attributes.contains_key(ATTRIBUTES_KEY) {
                return Err(format!(
                    "`data.attributes` holds `{ATTRIBUTES_KEY}`, where the event's extensions \
                     are kept: rename it"
                ));
            }
            attributes.insert(ATTRIBUTES_KEY.to_string(), raw(&kept));
            fields.insert("attributes".to_string(), Cow::Owned(raw(&attributes)));
        }
        fields.insert("platform".to_string(), Cow::Owned(raw(&source)));
        fields.insert("id".to_string(), Cow::Owned(raw(&id)));
        fields.insert("type".to_string(), Cow::Owned(raw(&kind)));
        fields.insert("occurred_at".to_string(), Cow::Owned(raw(&time)));

        let json = serde_json::to_string(&fields).map_err(|e| e.to_string())?;
        Notification::from_json(&json, received_at).map_err(|e| match e.strip_prefix("`post_id`") {
            Some(rest) if from_subject => format!("`subject` (the post_id){rest}"),
            _ => e,
        })
    }
}

/// A value as JSON text. Strings and maps of JSON text always serialize.
fn raw<T: serde::Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    serde_json::value::to_raw_value(value).expect("strings and JSON maps serialize")
}

/// The members of a JSON object, each as its JSON text, borrowed from the body. A member named
/// twice is refused, as the native format refuses a field named twice: which one would win is
/// not something a sender should have to guess.
struct Members<'a>(BTreeMap<String, &'a RawValue>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MembersVisitor;
        impl<'de> Visitor<'de> for MembersVisitor {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = BTreeMap::new();
                while let Some(name) = map.next_key::<String>()? {
                    let value: &'de RawValue = map.next_value()?;
                    if members.contains_key(&name) {
                        return Err(A::Error::custom(format!("`{name}` is given twice")));
                    }
                    members.insert(name, value);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(MembersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use serde_json::json;

    use super::*;

    const AT: i64 = 1_000;

    fn native() -> Value {
        json!({
            "platform": "mastodon", "id": "n1", "type": "post.created",
            "occurred_at": "2026-11-30T10:00:00.123456Z", "post_id": "p1",
            "author_id": "a1", "actor_id": "b2", "text": "héllo", "lang": "pt-BR",
            "tags": ["rust", "x"], "metrics": {"likes": 3}, "attributes": {"k": [1, {"v": null}]},
        })
    }

    fn native_notification() -> Notification {
        Notification::from_json(&native().to_string(), AT).unwrap()
    }

    /// The native notification's other fields, as a CloudEvent's data.
    fn data() -> Value {
        let mut data = native();
        for field in ["platform", "id", "type", "occurred_at", "post_id"] {
            data.as_object_mut().unwrap().remove(field);
        }
        data
    }

    fn event() -> Value {
        json!({
            "specversion": "1.0", "id": "n1", "source": "mastodon", "type": "post.created",
            "time": "2026-11-30T10:00:00.123456Z", "subject": "p1", "data": data(),
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        headers
    }

    const BINARY: [(&str, &str); 7] = [
        ("content-type", "application/json"),
        ("ce-specversion", "1.0"),
        ("ce-id", "n1"),
        ("ce-source", "mastodon"),
        ("ce-type", "post.created"),
        ("ce-time", "2026-11-30T10:00:00.123456Z"),
        ("ce-subject", "p1"),
    ];

    fn one(mode: Mode, headers: &HeaderMap, body: &str) -> Result<Notification, String> {
        let mut items = parse(mode, headers, body.as_bytes(), AT, 10).unwrap();
        assert_eq!(items.len(), 1);
        items.remove(0).parsed
    }

    fn structured_event(event: &Value) -> Result<Notification, String> {
        one(Mode::Structured, &HeaderMap::new(), &event.to_string())
    }

    fn refusal(event: &Value) -> String {
        structured_event(event).unwrap_err()
    }

    /// The notification's `attributes` as JSON, without the key of the event's extensions,
    /// and that key's object.
    fn split_attributes(notification: &Notification) -> (Value, Value) {
        let mut attributes: Value =
            serde_json::from_str(notification.attributes.as_deref().unwrap()).unwrap();
        let kept = attributes
            .as_object_mut()
            .unwrap()
            .remove(ATTRIBUTES_KEY)
            .unwrap_or(Value::Null);
        (attributes, kept)
    }

    #[test]
    fn each_mode_maps_onto_the_native_notification() {
        assert_eq!(structured_event(&event()).unwrap(), native_notification());

        let batch = json!([event(), event()]).to_string();
        let items = parse(Mode::Batched, &HeaderMap::new(), batch.as_bytes(), AT, 10).unwrap();
        assert_eq!(items.len(), 2);
        for item in items {
            assert_eq!(item.parsed.unwrap(), native_notification());
        }

        let binary = one(Mode::Binary, &headers(&BINARY), &data().to_string()).unwrap();
        assert_eq!(binary, native_notification());
    }

    #[test]
    fn extensions_and_dataschema_are_kept_under_attributes_cloudevents() {
        let mut with = event();
        with["traceparent"] = json!("00-abc-def-01");
        with["partition2"] = json!(7);
        with["sampled"] = json!(true);
        with["ignored"] = Value::Null;
        with["dataschema"] = json!("https://example.com/schema");
        let notification = structured_event(&with).unwrap();
        let (attributes, kept) = split_attributes(&notification);
        assert_eq!(attributes, native()["attributes"]);
        assert_eq!(
            kept,
            json!({"traceparent": "00-abc-def-01", "partition2": 7, "sampled": true,
                   "dataschema": "https://example.com/schema"})
        );
        // Apart from them it is the native notification.
        let mut without = notification.clone();
        without.attributes = native_notification().attributes;
        assert_eq!(without, native_notification());

        // Binary mode: header values are percent-decoded, extensions are strings.
        let mut pairs = BINARY.to_vec();
        pairs.push(("ce-comment", "caf%C3%A9 %25 done"));
        pairs.push(("ce-partition2", "7"));
        let notification = one(Mode::Binary, &headers(&pairs), &data().to_string()).unwrap();
        let (_, kept) = split_attributes(&notification);
        assert_eq!(kept, json!({"comment": "café % done", "partition2": "7"}));

        // An event without data.attributes gets an attributes object of its own.
        let mut bare = with.clone();
        bare["data"] = json!({"text": "t"});
        let (attributes, kept) = split_attributes(&structured_event(&bare).unwrap());
        assert_eq!(attributes, json!({}));
        assert_eq!(kept["traceparent"], "00-abc-def-01");
    }

    #[test]
    fn data_and_subject_are_optional() {
        let mut minimal = event();
        let object = minimal.as_object_mut().unwrap();
        object.remove("data");
        object.remove("subject");
        let notification = structured_event(&minimal).unwrap();
        assert_eq!(notification.post_id, None);
        assert_eq!(notification.text, None);
        // Null is absent.
        minimal["data"] = Value::Null;
        assert!(structured_event(&minimal).is_ok());
        // Without a subject, data.post_id names the post; with the same subject, too.
        minimal["data"] = json!({"post_id": "p9"});
        assert_eq!(
            structured_event(&minimal).unwrap().post_id.as_deref(),
            Some("p9")
        );
        minimal["subject"] = json!("p9");
        assert!(structured_event(&minimal).is_ok());
        // A binary event may have an empty body.
        let notification = one(Mode::Binary, &headers(&BINARY[1..]), "").unwrap();
        assert_eq!(notification.post_id.as_deref(), Some("p1"));
        assert_eq!(notification.author_id, None);
    }

    #[test]
    fn each_refusal_names_its_reason() {
        let with = |field: &str, value: Value| {
            let mut event = event();
            event[field] = value;
            refusal(&event)
        };
        let without = |field: &str| {
            let mut event = event();
            event.as_object_mut().unwrap().remove(field);
            refusal(&event)
        };
        let data_with = |field: &str, value: Value| {
            let mut event = event();
            event["data"][field] = value;
            refusal(&event)
        };
        let cases = [
            (with("specversion", json!("0.3")), "`specversion` \"0.3\""),
            (
                with("specversion", json!(1.0)),
                "`specversion` must be a string",
            ),
            (without("specversion"), "no `specversion`"),
            (without("id"), "no `id`"),
            (without("source"), "no `source`"),
            (without("type"), "no `type`"),
            (without("time"), "no `time`: a notification needs"),
            (
                with("time", json!("yesterday")),
                "`time` \"yesterday\" is not an RFC 3339",
            ),
            (with("time", json!("2".repeat(65))), "`time` is 65 bytes"),
            (with("id", json!("")), "`id` must not be empty"),
            (with("id", json!(7)), "`id` must be a string"),
            (
                with("type", json!("post created")),
                "`type` \"post created\" may hold only",
            ),
            (
                with("source", json!("https://mastodon.social/users/x")),
                "`source` is the notification's platform, and \"https://",
            ),
            (
                with("subject", json!("")),
                "`subject` (the post_id) must not be empty",
            ),
            (with("data", json!([1])), "`data` must be a JSON object"),
            (with("data", json!("text")), "`data` must be a JSON object"),
            (
                with("data_base64", json!("aGk=")),
                "`data_base64` carries binary data",
            ),
            (
                with("datacontenttype", json!("text/plain")),
                "`datacontenttype` is \"text/plain\"",
            ),
            (
                data_with("platform", json!("bsky")),
                "`data.platform`: the event's `source`",
            ),
            (data_with("id", json!("x")), "`data.id`"),
            (
                data_with("occurred_at", json!("x")),
                "`data.occurred_at`: the event's `time`",
            ),
            (
                data_with("post_id", json!("p2")),
                "`data.post_id` differs from the event's `subject`",
            ),
            (data_with("tags", json!("rust")), "`tags`"),
            (
                data_with("metrics", json!({"likes": 1.5})),
                "`metrics.likes`",
            ),
            (
                data_with("attributes", json!(3)),
                "`attributes` must be a JSON object",
            ),
            (
                with("Trace", json!("x")),
                "\"Trace\" is not a CloudEvents 1.0 attribute",
            ),
            (
                with("trace_id", json!("x")),
                "an extension's name may hold only a-z and 0-9",
            ),
            (
                with("trace", json!({"a": 1})),
                "extension `trace` must be a string, a number",
            ),
            (
                with("trace", json!([1])),
                "extension `trace` must be a string, a number",
            ),
        ];
        for (reason, expected) in cases {
            assert!(
                reason.contains(expected),
                "{reason:?} should say {expected:?}"
            );
        }

        // An extension may not take the place its object is kept in.
        let mut clash = event();
        clash["data"]["attributes"] = json!({ATTRIBUTES_KEY: 1});
        clash["trace"] = json!("x");
        assert!(refusal(&clash).contains("holds `cloudevents`"));
        // Without an extension, the name is the platform's own to use.
        clash.as_object_mut().unwrap().remove("trace");
        assert!(structured_event(&clash).is_ok());

        // A member named twice, in the event or in its data.
        let twice = r#"{"specversion":"1.0","id":"a","id":"b","source":"s","type":"t","time":"2026-11-30T10:00:00Z"}"#;
        assert!(
            structured(twice, AT)
                .unwrap_err()
                .contains("`id` is given twice")
        );
        let twice = r#"{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2026-11-30T10:00:00Z","data":{"text":"a","text":"b"}}"#;
        assert!(
            structured(twice, AT)
                .unwrap_err()
                .contains("`data`: `text` is given twice")
        );
    }

    #[test]
    fn binary_refusals_name_the_header() {
        let refuse = |extra: &[(&str, &str)], skip: &str| {
            let mut pairs: Vec<_> = BINARY.iter().filter(|(n, _)| *n != skip).copied().collect();
            pairs.extend_from_slice(extra);
            one(Mode::Binary, &headers(&pairs), &data().to_string()).unwrap_err()
        };
        for (reason, expected) in [
            (refuse(&[], "ce-time"), "no `time`"),
            (refuse(&[], "ce-source"), "no `source`"),
            (
                refuse(&[("ce-id", "n2")], ""),
                "`ce-id` is given more than once",
            ),
            (
                refuse(&[("ce-trace-id", "x")], ""),
                "the header `ce-trace-id`",
            ),
            (
                refuse(&[("ce-text", "%FF")], ""),
                "not UTF-8 once percent-decoded",
            ),
            (
                refuse(&[("ce-datacontenttype", "application/json")], ""),
                "as Content-Type",
            ),
        ] {
            assert!(
                reason.contains(expected),
                "{reason:?} should say {expected:?}"
            );
        }
        let mut specversion = BINARY;
        specversion[1].1 = "0.3";
        let reason = one(Mode::Binary, &headers(&specversion), "").unwrap_err();
        assert!(reason.contains("CloudEvents 1.0"), "{reason}");
        let reason = one(Mode::Binary, &headers(&BINARY), "[1, 2]").unwrap_err();
        assert!(reason.contains("`data` must be a JSON object"), "{reason}");
    }

    #[test]
    fn a_batch_is_judged_event_by_event() {
        let mut late = event();
        late.as_object_mut().unwrap().remove("time");
        let batch = json!([event(), 3, late, {"specversion": "1.0"}]).to_string();
        let items = parse(Mode::Batched, &HeaderMap::new(), batch.as_bytes(), AT, 10).unwrap();
        let reasons: Vec<_> = items.iter().map(|i| i.parsed.as_ref().err()).collect();
        assert_eq!(reasons[0], None);
        assert_eq!(
            reasons[1].unwrap(),
            "the item is not a JSON object (a CloudEvent)"
        );
        assert!(reasons[2].unwrap().contains("no `time`"));
        assert!(reasons[3].unwrap().contains("no `id`"));
        assert_eq!(
            items.iter().map(|i| i.index).collect::<Vec<_>>(),
            [0, 1, 2, 3]
        );
    }

    #[test]
    fn bodies_that_cannot_be_read_are_refused_whole() {
        let whole = |mode: Mode, body: &[u8], max: usize| {
            parse(mode, &headers(&BINARY), body, AT, max).err().unwrap()
        };
        let batch = json!([event(), event(), event()]).to_string();
        for (error, expected) in [
            (whole(Mode::Structured, b"{\"id\":", 10), "not valid JSON"),
            (whole(Mode::Structured, b"\xff{}", 10), "not valid UTF-8"),
            (
                whole(Mode::Structured, b"[{}]", 10),
                "application/cloudevents-batch+json",
            ),
            (whole(Mode::Structured, b"", 10), "not valid JSON"),
            (whole(Mode::Batched, b"{}", 10), "is a JSON array of events"),
            (whole(Mode::Batched, b"[{},", 10), "not valid JSON"),
            (whole(Mode::Batched, b" [ ] ", 10), "holds no events"),
            (whole(Mode::Batched, batch.as_bytes(), 2), "the limit is 2"),
            (whole(Mode::Binary, b"{\"text\":", 10), "not valid JSON"),
        ] {
            assert!(
                error.to_string().contains(expected),
                "{error} should say {expected:?}"
            );
        }
        assert!(matches!(
            whole(Mode::Batched, batch.as_bytes(), 2),
            ApiError::PayloadTooLarge(_)
        ));
        // Deep nesting is refused, not a crash.
        let deep = format!(
            r#"{{"specversion":"1.0","id":"a","source":"s","type":"t","time":"2026-11-30T10:00:00Z","data":{{"attributes":{{"a":{}1{}}}}}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        match parse(Mode::Structured, &HeaderMap::new(), deep.as_bytes(), AT, 10) {
            Ok(items) => assert!(items[0].parsed.as_ref().unwrap_err().contains("recursion")),
            Err(error) => assert!(error.to_string().contains("recursion"), "{error}"),
        }
    }

    #[test]
    fn the_mode_comes_from_the_content_type_or_ce_specversion() {
        let mode = |pairs: &[(&str, &str)]| Mode::from_headers(&headers(pairs));
        type Pairs = &'static [(&'static str, &'static str)];
        let cases: [(Pairs, Option<Mode>); 7] = [
            (&[("content-type", "application/json")], None),
            (&[("content-type", "application/x-ndjson")], None),
            (&[], None),
            (
                &[(
                    "content-type",
                    "Application/CloudEvents+JSON; charset=utf-8",
                )],
                Some(Mode::Structured),
            ),
            (
                &[
                    ("content-type", "application/cloudevents-batch+json"),
                    ("ce-specversion", "1.0"),
                ],
                Some(Mode::Batched),
            ),
            (
                &[
                    ("content-type", "application/json; charset=utf-8"),
                    ("ce-specversion", "1.0"),
                ],
                Some(Mode::Binary),
            ),
            (&[("ce-specversion", "1.0")], Some(Mode::Binary)),
        ];
        for (pairs, expected) in cases {
            assert_eq!(mode(pairs).unwrap(), expected, "{pairs:?}");
        }
        let refused = mode(&[("content-type", "text/plain"), ("ce-specversion", "1.0")]);
        assert!(matches!(refused, Err(ApiError::UnsupportedMediaType(_))));
    }
}
