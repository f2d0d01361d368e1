//! The body decoder and the validator under generated input (proptest): arbitrary bytes and
//! mutations of valid bodies, in both framings, and the same for CloudEvents (structured,
//! batched and binary mode).
//!
//! What must hold for every input:
//! - no panic, and a refusal of the whole body is a 4xx that says why (never a 5xx);
//! - never more items than the limit;
//! - whatever the validator accepts, the publisher accepts too (the proto conversion takes it
//!   back unchanged), and it reads back the same from its own JSON: an accepted notification can
//!   never become a poison pill downstream.
//!
//! `SLUICE_FUZZ_CASES` sets the cases per property (CI runs the default; a longer run is
//! `SLUICE_FUZZ_CASES=200000 cargo test -p sluice-ingest-api --test fuzz_body --release`).

use proptest::prelude::*;
use sluice_core::Notification;
use sluice_ingest_api::body::{Framing, Item, parse};
use sluice_ingest_api::cloudevents;
use sluice_proto::v1;

const MAX_ITEMS: usize = 50;

fn cases() -> u32 {
    std::env::var("SLUICE_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3_000)
}

/// Checks every property on one body.
fn check(body: &[u8], framing: Framing) {
    check_parsed(parse(body, framing, 1_764_000_000_000_000, MAX_ITEMS), body);
}

/// Checks every property on one CloudEvents body (in binary mode, with a valid set of headers).
fn check_cloudevents(body: &[u8], mode: cloudevents::Mode) {
    let mut headers = axum::http::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "x"),
        ("ce-source", "p"),
        ("ce-type", "t"),
        ("ce-time", "2026-01-01T00:00:00Z"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let parsed = cloudevents::parse(mode, &headers, body, 1_764_000_000_000_000, MAX_ITEMS);
    check_parsed(parsed, body);
}

fn check_parsed(parsed: Result<Vec<Item>, sluice_ingest_api::error::ApiError>, body: &[u8]) {
    match parsed {
        Err(error) => {
            let status = error.status();
            assert!(status.is_client_error(), "{status} for {body:?}: {error}");
            assert!(!error.to_string().is_empty());
        }
        Ok(items) => {
            assert!(items.len() <= MAX_ITEMS);
            for item in items {
                match item.parsed {
                    Err(reason) => assert!(!reason.is_empty()),
                    Ok(notification) => accepted_everywhere(&notification),
                }
            }
        }
    }
}

fn accepted_everywhere(notification: &Notification) {
    let through_grpc = Notification::try_from(v1::Notification::from(notification))
        .unwrap_or_else(|reason| panic!("the publisher would refuse {notification:?}: {reason}"));
    assert_eq!(&through_grpc, notification);
    let json = notification.to_json().to_string();
    let again = Notification::from_json(&json, notification.received_at)
        .unwrap_or_else(|reason| panic!("{json} does not read back: {reason}"));
    assert_eq!(&again, notification);
}

/// Valid notifications in the contract's shape, with values that stress it: unicode, empty
/// optional strings, big numbers, nested attributes.
fn valid_object() -> impl Strategy<Value = serde_json::Value> {
    (
        "[A-Za-z0-9][A-Za-z0-9._-]{0,19}",
        "\\PC{1,40}",
        "[a-z]{1,8}\\.[a-z]{1,8}",
        (2000i32..2100, 1u32..13, 1u32..29, 0u32..24),
        proptest::option::of("\\PC{0,200}"),
        proptest::collection::vec("\\PC{1,12}", 0..4),
        proptest::collection::btree_map("[a-z]{1,6}", any::<i64>(), 0..4),
        proptest::option::of("[a-z]{2}(-[A-Z]{2})?"),
    )
        .prop_map(
            |(platform, id, kind, (year, month, day, hour), text, tags, metrics, lang)| {
                let mut object = serde_json::json!({
                    "platform": platform,
                    "id": id,
                    "type": kind,
                    "occurred_at": format!("{year:04}-{month:02}-{day:02}T{hour:02}:00:00Z"),
                    "tags": tags,
                    "metrics": metrics,
                    "attributes": {"nested": {"list": [1, "two", null]}},
                });
                if let Some(text) = text {
                    object["text"] = text.into();
                }
                if let Some(lang) = lang {
                    object["lang"] = lang.into();
                }
                object
            },
        )
}

/// A valid notification as the CloudEvent that stands for it.
fn as_event(object: &serde_json::Value) -> serde_json::Value {
    let mut data = object.as_object().unwrap().clone();
    let mut event = serde_json::json!({"specversion": "1.0"});
    for (field, attribute) in [
        ("platform", "source"),
        ("id", "id"),
        ("type", "type"),
        ("occurred_at", "time"),
    ] {
        event[attribute] = data.remove(field).unwrap();
    }
    event["data"] = serde_json::Value::Object(data);
    event
}

/// Random byte edits of a body.
fn mutate(mut body: Vec<u8>, edits: Vec<(prop::sample::Index, u8, u8)>) -> Vec<u8> {
    for (at, byte, kind) in edits {
        if body.is_empty() {
            break;
        }
        let at = at.index(body.len());
        match kind {
            0 => body[at] = byte,
            1 => body.insert(at, byte),
            _ => {
                body.remove(at);
            }
        }
    }
    body
}

/// A body: some valid objects in either framing, then a few random byte edits.
fn mutated_body() -> impl Strategy<Value = (Vec<u8>, Framing)> {
    (
        proptest::collection::vec(valid_object(), 1..6),
        any::<bool>(),
        proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
    )
        .prop_map(|(objects, ndjson, edits)| {
            let (body, framing) = if ndjson {
                let lines: Vec<String> = objects.iter().map(|o| o.to_string()).collect();
                (lines.join("\n").into_bytes(), Framing::Ndjson)
            } else {
                (
                    serde_json::Value::Array(objects).to_string().into_bytes(),
                    Framing::Json,
                )
            };
            (mutate(body, edits), framing)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_a_clear_answer(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        ndjson in any::<bool>(),
    ) {
        check(&body, if ndjson { Framing::Ndjson } else { Framing::Json });
    }

    #[test]
    fn mutated_valid_bodies_get_a_clear_answer_and_what_is_accepted_is_accepted_downstream(
        (body, framing) in mutated_body(),
    ) {
        check(&body, framing);
    }

    #[test]
    fn valid_bodies_are_accepted_whole(objects in proptest::collection::vec(valid_object(), 1..6)) {
        let body = serde_json::Value::Array(objects.clone()).to_string();
        let items = parse(body.as_bytes(), Framing::Json, 0, MAX_ITEMS).unwrap();
        prop_assert_eq!(items.len(), objects.len());
        for item in items {
            let notification = item.parsed.map_err(TestCaseError::fail)?;
            accepted_everywhere(&notification);
        }
    }

    #[test]
    fn cloudevents_bodies_get_a_clear_answer(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        mode in prop::sample::select(vec![
            cloudevents::Mode::Structured,
            cloudevents::Mode::Batched,
            cloudevents::Mode::Binary,
        ]),
    ) {
        check_cloudevents(&body, mode);
    }

    #[test]
    fn mutated_cloudevents_get_a_clear_answer(
        objects in proptest::collection::vec(valid_object(), 1..6),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 0..6),
    ) {
        let events: Vec<serde_json::Value> = objects.iter().map(as_event).collect();
        let batch = serde_json::Value::Array(events.clone()).to_string().into_bytes();
        check_cloudevents(&mutate(batch, edits.clone()), cloudevents::Mode::Batched);
        let one = events[0].to_string().into_bytes();
        check_cloudevents(&mutate(one, edits), cloudevents::Mode::Structured);
    }

    #[test]
    fn a_valid_notification_as_a_cloudevent_is_the_same_notification(
        objects in proptest::collection::vec(valid_object(), 1..6),
    ) {
        let events: Vec<serde_json::Value> = objects.iter().map(as_event).collect();
        let batch = serde_json::Value::Array(events).to_string();
        let headers = axum::http::HeaderMap::new();
        let items =
            cloudevents::parse(cloudevents::Mode::Batched, &headers, batch.as_bytes(), 0, MAX_ITEMS)
                .unwrap();
        prop_assert_eq!(items.len(), objects.len());
        for (item, object) in items.into_iter().zip(&objects) {
            let native = Notification::from_json(&object.to_string(), 0).unwrap();
            prop_assert_eq!(item.parsed.map_err(TestCaseError::fail)?, native);
        }
    }
}
