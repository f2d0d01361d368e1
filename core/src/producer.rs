//! A producer's id, and the secret that proves a caller owns it.
//!
//! Each ingest process is one producer, `<node-id>-<uuid v7>`, and its batches are stored at
//! `master/<producer>/<sequence>`, put-if-absent. Whoever could append under a live producer's
//! id could take its next sequence with other content and wedge that node (its own Append would
//! then conflict forever). So the uuid's random bits are a commitment: the first 74 bits of
//! SHA-256 of a secret that only the producer holds, sent as the proof with every Append.
//! A publisher checks the proof by hashing alone, so it needs no state shared with other
//! publishers or kept across restarts, and the id (which analysts see in the replica) gives
//! nothing away. Forging a proof for a known id means finding a second preimage of 74 bits.

use sha2::{Digest, Sha256};

/// An ingest process's producer id and the proof of owning it.
#[derive(Clone)]
pub struct ProducerIdentity {
    pub id: String,
    /// 64 hex digits; never logged.
    pub proof: String,
}

impl std::fmt::Debug for ProducerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProducerIdentity")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl ProducerIdentity {
    /// A new producer of ingest node `node_id`: `<node_id>-<uuid v7>`, its random bits drawn
    /// from the hash of a new secret.
    pub fn new(node_id: &str) -> ProducerIdentity {
        let secret: [u8; 32] = rand::random();
        let proof = hex::encode(secret);
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let uuid = committed_uuid(millis, &proof);
        ProducerIdentity {
            id: format!("{node_id}-{}", uuid.simple()),
            proof,
        }
    }
}

/// The uuid v7 of time `millis` whose random bits commit to `proof`.
fn committed_uuid(millis: u64, proof: &str) -> uuid::Uuid {
    let digest = Sha256::digest(proof.as_bytes());
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid()
}

/// Whether `proof` is the secret behind `producer_id`'s uuid.
pub fn proves(producer_id: &str, proof: &str) -> bool {
    let Some((_, uuid)) = producer_id.rsplit_once('-') else {
        return false;
    };
    let Ok(uuid) = uuid::Uuid::try_parse(uuid) else {
        return false;
    };
    if uuid.get_version_num() != 7 {
        return false;
    }
    let bytes = uuid.as_bytes();
    let millis = bytes[..6]
        .iter()
        .fold(0u64, |millis, b| (millis << 8) | u64::from(*b));
    committed_uuid(millis, proof) == uuid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_producers_own_proof_proves_its_id() {
        let producer = ProducerIdentity::new("node-a");
        assert!(producer.id.starts_with("node-a-"));
        assert_eq!(producer.id.len(), "node-a-".len() + 32);
        crate::master::check_producer_id(&producer.id).unwrap();
        assert!(proves(&producer.id, &producer.proof));

        let other = ProducerIdentity::new("node-a");
        assert_ne!(producer.id, other.id);
        assert!(!proves(&producer.id, &other.proof));
        assert!(!proves(&producer.id, ""));
        assert!(!proves("node-a", &producer.proof));
        assert!(!proves("node-a-not-a-uuid", &producer.proof));
        // Another node's name on the same uuid is fine by the proof (the uuid is what is
        // committed), but nobody else holds the proof of either.
        let (_, uuid) = producer.id.rsplit_once('-').unwrap();
        assert!(proves(&format!("node-b-{uuid}"), &producer.proof));
        // The debug form never shows the proof.
        assert!(!format!("{producer:?}").contains(&producer.proof));
    }
}
