//! Conversions between the wire messages and [`sluice_core::Notification`].

use sluice_core::Notification;

use crate::v1;

impl From<&Notification> for v1::Notification {
    fn from(n: &Notification) -> Self {
        v1::Notification {
            platform: n.platform.clone(),
            id: n.id.clone(),
            r#type: n.kind.clone(),
            occurred_at_micros: n.occurred_at,
            received_at_micros: n.received_at,
            post_id: n.post_id.clone(),
            author_id: n.author_id.clone(),
            actor_id: n.actor_id.clone(),
            text: n.text.clone(),
            lang: n.lang.clone(),
            tags: n.tags.clone(),
            metrics: n.metrics.clone(),
            attributes_json: n.attributes.clone(),
        }
    }
}

impl TryFrom<v1::Notification> for Notification {
    /// Why the record breaks the notification contract.
    type Error = String;

    fn try_from(n: v1::Notification) -> Result<Self, Self::Error> {
        let notification = Notification {
            platform: n.platform,
            id: n.id,
            kind: n.r#type,
            occurred_at: n.occurred_at_micros,
            received_at: n.received_at_micros,
            post_id: n.post_id,
            author_id: n.author_id,
            actor_id: n.actor_id,
            text: n.text,
            lang: n.lang,
            tags: n.tags,
            metrics: n.metrics,
            attributes: n.attributes_json,
        };
        notification.validate()?;
        Ok(notification)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_survives_the_wire() {
        let n = Notification::from_json(
            r#"{"platform":"p","id":"1","type":"t","occurred_at":"2026-01-01T00:00:00Z",
                "tags":["a"],"metrics":{"m":1},"attributes":{"x":true}}"#,
            7,
        )
        .unwrap();
        let wire = v1::Notification::from(&n);
        assert_eq!(Notification::try_from(wire).unwrap(), n);
        let bad = v1::Notification {
            platform: String::new(),
            ..v1::Notification::from(&n)
        };
        assert!(
            Notification::try_from(bad)
                .unwrap_err()
                .contains("platform")
        );
    }
}
