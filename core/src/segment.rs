//! The master store's row format: one Avro object container file per publisher batch.
//!
//! Avro OCF is self-describing (the schema travels in the header), splittable, and read by
//! Spark, DuckDB, Python's `fastavro` and most other tools, so the source of truth never needs
//! Sluice to be read. Blocks are compressed with zstd. The header's user metadata carries:
//!
//! | key | value |
//! |---|---|
//! | `sluice.format` | `1` |
//! | `sluice.producer` | the producer (ingest node incarnation) that sent the batch |
//! | `sluice.sequence` | the batch's sequence number within that producer |
//! | `sluice.rows` | the number of records |
//! | `sluice.crc32c` | CRC-32C, as 8 hex digits, over the Avro binary encoding of every record in order |
//!
//! The checksum covers the records themselves, not the file's bytes (the container's sync
//! marker is random), so a reader can verify the content and a writer can tell a retry of the
//! same batch from a different batch at the same key.

use std::sync::LazyLock;

use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Codec, Reader, Schema, Writer, ZstandardSettings};
use bytes::Bytes;

use crate::Notification;
use crate::error::{Error, Result};

/// The Avro schema of one record. Field order is the column order the replica will use.
pub const SCHEMA_JSON: &str = r#"{
  "type": "record",
  "name": "Notification",
  "namespace": "sluice.v1",
  "fields": [
    {"name": "platform", "type": "string"},
    {"name": "id", "type": "string"},
    {"name": "type", "type": "string"},
    {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "received_at", "type": {"type": "long", "logicalType": "timestamp-micros"}},
    {"name": "post_id", "type": ["null", "string"], "default": null},
    {"name": "author_id", "type": ["null", "string"], "default": null},
    {"name": "actor_id", "type": ["null", "string"], "default": null},
    {"name": "text", "type": ["null", "string"], "default": null},
    {"name": "lang", "type": ["null", "string"], "default": null},
    {"name": "tags", "type": {"type": "array", "items": "string"}, "default": []},
    {"name": "metrics", "type": {"type": "map", "values": "long"}, "default": {}},
    {"name": "attributes", "type": ["null", "string"], "default": null}
  ]
}"#;

static SCHEMA: LazyLock<Schema> =
    LazyLock::new(|| Schema::parse_str(SCHEMA_JSON).expect("SCHEMA_JSON is a valid Avro schema"));

/// The format this build writes and reads (`sluice.format` in the header).
pub const FORMAT: &str = "1";

/// The identity and checksum of a segment, as its header states them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentHeader {
    pub producer: String,
    pub sequence: u64,
    pub rows: u64,
    pub crc32c: u32,
}

/// A decoded segment whose rows matched its checksum.
#[derive(Debug, Clone)]
pub struct Segment {
    pub header: SegmentHeader,
    pub records: Vec<Notification>,
}

/// CRC-32C over the Avro binary encoding of each record, in order.
pub fn records_checksum(records: &[Notification]) -> Result<u32> {
    let avro = |e: apache_avro::Error| Error::Avro(e.to_string());
    let writer = GenericDatumWriter::builder(&SCHEMA).build().map_err(avro)?;
    let mut crc = 0u32;
    let mut datum = Vec::with_capacity(512);
    for record in records {
        datum.clear();
        writer.write_ser(&mut datum, record).map_err(avro)?;
        crc = crc32c::crc32c_append(crc, &datum);
    }
    Ok(crc)
}

/// Encodes one batch as an Avro object container file.
pub fn encode(producer: &str, sequence: u64, records: &[Notification]) -> Result<(Bytes, u32)> {
    let crc = records_checksum(records)?;
    let avro = |e: apache_avro::Error| Error::Avro(e.to_string());
    let mut writer = Writer::builder()
        .schema(&SCHEMA)
        .writer(Vec::with_capacity(records.len() * 128 + 4096))
        .codec(Codec::Zstandard(ZstandardSettings::default()))
        .block_size(1 << 20)
        .build()
        .map_err(avro)?;
    for (key, value) in [
        ("sluice.format", FORMAT.to_string()),
        ("sluice.producer", producer.to_string()),
        ("sluice.sequence", sequence.to_string()),
        ("sluice.rows", records.len().to_string()),
        ("sluice.crc32c", format!("{crc:08x}")),
    ] {
        writer
            .add_user_metadata(key.to_string(), value)
            .map_err(avro)?;
    }
    for record in records {
        writer.append_ser(record).map_err(avro)?;
    }
    let bytes = writer.into_inner().map_err(avro)?;
    Ok((Bytes::from(bytes), crc))
}

/// Reads only a segment's header.
pub fn read_header(path: &str, bytes: &[u8]) -> Result<SegmentHeader> {
    let reader = Reader::new(bytes).map_err(|e| invalid(path, e))?;
    header_of(path, &reader)
}

/// Decodes a segment and verifies its row count and checksum.
pub fn decode(path: &str, bytes: &[u8]) -> Result<Segment> {
    let reader = Reader::new(bytes).map_err(|e| invalid(path, e))?;
    let header = header_of(path, &reader)?;
    let mut records = Vec::with_capacity(header.rows as usize);
    for value in reader {
        let value = value.map_err(|e| invalid(path, e))?;
        let record: Notification = apache_avro::from_value(&value).map_err(|e| invalid(path, e))?;
        records.push(record);
    }
    if records.len() as u64 != header.rows {
        return Err(invalid(
            path,
            format!("header says {} rows, found {}", header.rows, records.len()),
        ));
    }
    let crc = records_checksum(&records)?;
    if crc != header.crc32c {
        return Err(invalid(
            path,
            format!(
                "checksum mismatch: header {:08x}, rows {crc:08x}",
                header.crc32c
            ),
        ));
    }
    Ok(Segment { header, records })
}

fn header_of(path: &str, reader: &Reader<'_, &[u8]>) -> Result<SegmentHeader> {
    let meta = reader.user_metadata();
    let field = |key: &str| -> Result<&str> {
        let raw = meta
            .get(key)
            .ok_or_else(|| invalid(path, format!("header lacks {key}")))?;
        std::str::from_utf8(raw).map_err(|_| invalid(path, format!("{key} is not UTF-8")))
    };
    let number = |key: &str| -> Result<u64> {
        field(key)?
            .parse()
            .map_err(|_| invalid(path, format!("{key} is not a number")))
    };
    // A segment of a newer format is not corrupt: this reader is too old for it. It must be
    // waited on (until this service is upgraded), never quarantined.
    if let Ok(format) = field("sluice.format")
        && format != FORMAT
    {
        return Err(Error::UnsupportedSegment {
            path: path.to_string(),
            format: format.to_string(),
        });
    }
    Ok(SegmentHeader {
        producer: field("sluice.producer")?.to_string(),
        sequence: number("sluice.sequence")?,
        rows: number("sluice.rows")?,
        crc32c: u32::from_str_radix(field("sluice.crc32c")?, 16)
            .map_err(|_| invalid(path, "sluice.crc32c is not hex"))?,
    })
}

fn invalid(path: &str, reason: impl ToString) -> Error {
    Error::InvalidSegment {
        path: path.to_string(),
        reason: reason.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn sample(i: usize) -> Notification {
        Notification {
            platform: "bsky".into(),
            id: format!("n{i}"),
            kind: "post.created".into(),
            occurred_at: 1_795_417_200_000_000 + i as i64,
            received_at: 1_795_417_200_500_000,
            post_id: Some(format!("p{}", i % 7)),
            author_id: None,
            actor_id: Some("actor".into()),
            text: i.is_multiple_of(2).then(|| format!("hello {i} ✓")),
            lang: Some("en".into()),
            tags: vec!["a".into(), format!("t{i}")],
            metrics: [("likes".to_string(), i as i64)].into(),
            attributes: i.is_multiple_of(3).then(|| r#"{"x":1}"#.to_string()),
        }
    }

    #[test]
    fn segment_round_trips_and_verifies() {
        let records: Vec<_> = (0..1000).map(sample).collect();
        let (bytes, crc) = encode("prod-1", 42, &records).unwrap();
        let segment = decode("k", &bytes).unwrap();
        assert_eq!(segment.records, records);
        assert_eq!(
            segment.header,
            SegmentHeader {
                producer: "prod-1".into(),
                sequence: 42,
                rows: 1000,
                crc32c: crc
            }
        );
        assert_eq!(read_header("k", &bytes).unwrap(), segment.header);
    }

    #[test]
    fn checksum_depends_on_content_not_on_the_file() {
        let records: Vec<_> = (0..10).map(sample).collect();
        let (a, crc_a) = encode("p", 1, &records).unwrap();
        let (b, crc_b) = encode("p", 1, &records).unwrap();
        assert_ne!(a, b, "sync markers differ");
        assert_eq!(crc_a, crc_b);
        let mut changed = records.clone();
        changed[3].text = Some("other".into());
        assert_ne!(records_checksum(&changed).unwrap(), crc_a);
    }

    #[test]
    fn corruption_is_detected() {
        let records: Vec<_> = (0..50).map(sample).collect();
        let (bytes, _) = encode("p", 1, &records).unwrap();
        let mut broken = bytes.to_vec();
        let at = broken.len() - 40;
        broken[at] ^= 0xff;
        assert!(decode("k", &broken).is_err());
        assert!(decode("k", &bytes[..bytes.len() / 2]).is_err());
    }

    #[test]
    fn a_newer_format_is_unsupported_not_corrupt() {
        let records = vec![sample(1)];
        let (bytes, _) = encode("p-1", 1, &records).unwrap();
        let text = bytes.to_vec();
        // The header's metadata holds the format as a string value "1" after its key.
        let key = b"sluice.format";
        let at = text.windows(key.len()).position(|w| w == key).unwrap() + key.len();
        let mut newer = text.clone();
        let one = newer[at..].iter().position(|b| *b == b'1').unwrap() + at;
        newer[one] = b'2';
        let error = decode("p-1", &newer).unwrap_err();
        assert!(matches!(error, Error::UnsupportedSegment { .. }), "{error}");
        assert!(!error.is_undecodable());
        assert!(decode("p-1", &text).is_ok());
    }
}
