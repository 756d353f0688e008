//! How object states and outbox entries are laid out as sled values.
//!
//! Both carry the object's JSON after a small header, LZ4-compressed (a block with its
//! uncompressed length in front), so the JSON capture serialized once (for the event's
//! `data`) is stored without re-serializing, and reading an outbox entry does not re-parse
//! the payload into a tree:
//!
//! | value        | layout                                                                      |
//! |--------------|-----------------------------------------------------------------------------|
//! | object state | `0x02`, u16 BE length, resourceVersion, LZ4(object JSON)                      |
//! | outbox entry | `0x02`, u32 BE length, header JSON (everything but `data`), LZ4(`data`)       |
//!
//! LZ4 block: u32 LE uncompressed length, then the compressed bytes. Compression matters
//! for memory, not only disk: sled keeps the leaf pages it touched in memory, values
//! inline, and at a few hundred thousand pages its cache does not evict (BENCHMARKS.md §4).
//!
//! Still decoded: version `0x01` (the same layout, uncompressed) and values written before
//! either, whole JSON documents starting with `{`.

use crbridge_sink_api::{Event, Extension, Route};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{OutboxEntry, StoreError, StoredObject};

/// First byte of an uncompressed value (read only).
const V1: u8 = 0x01;
/// First byte of a value in the current layout.
const V2: u8 = 0x02;
/// Largest uncompressed length a stored LZ4 block may claim. Objects are at most a few
/// MiB (etcd's request limit is 1.5 MiB); a larger claim is corruption, not an allocation
/// to attempt.
const MAX_UNCOMPRESSED: usize = 64 << 20;

fn corrupt(what: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what,
        detail: detail.to_string(),
    }
}

/// An object state: `resource_version` and the object's JSON text.
pub fn encode_state(resource_version: &str, object_json: &str) -> Result<Vec<u8>, StoreError> {
    let rv_len = u16::try_from(resource_version.len())
        .map_err(|_| corrupt("object state", "resourceVersion longer than 64 KiB"))?;
    let mut out = Vec::with_capacity(3 + resource_version.len() + object_json.len() / 2);
    out.push(V2);
    out.extend_from_slice(&rv_len.to_be_bytes());
    out.extend_from_slice(resource_version.as_bytes());
    compress_into(object_json.as_bytes(), &mut out);
    Ok(out)
}

/// Reads a value written by [`encode_state`] (or a legacy JSON state).
pub fn decode_state(v: &[u8]) -> Result<StoredObject, StoreError> {
    const WHAT: &str = "object state";
    match v.first() {
        Some(&version @ (V1 | V2)) => {
            let (rv, json) = split_prefixed::<2>(&v[1..], WHAT, "truncated resourceVersion")?;
            let object = if version == V2 {
                serde_json::from_slice(&decompress(json, WHAT)?)
            } else {
                serde_json::from_slice(json)
            };
            Ok(StoredObject {
                resource_version: std::str::from_utf8(rv)
                    .map_err(|e| corrupt(WHAT, e))?
                    .to_string(),
                object: object.map_err(|e| corrupt(WHAT, e))?,
            })
        }
        _ => serde_json::from_slice(v).map_err(|e| corrupt(WHAT, e)),
    }
}

/// The resourceVersion of a value written by [`encode_state`], without decompressing or
/// parsing the object (a legacy JSON state is parsed whole).
pub fn state_version(v: &[u8]) -> Result<String, StoreError> {
    const WHAT: &str = "object state";
    match v.first() {
        Some(&(V1 | V2)) => {
            let (rv, _) = split_prefixed::<2>(&v[1..], WHAT, "truncated resourceVersion")?;
            Ok(std::str::from_utf8(rv)
                .map_err(|e| corrupt(WHAT, e))?
                .to_string())
        }
        _ => Ok(decode_state(v)?.resource_version),
    }
}

/// Everything of an outbox entry but the event's `data`, borrowed for encoding.
#[derive(Serialize)]
struct HeaderRef<'a> {
    watch: &'a str,
    sinks: Option<&'a [String]>,
    written_ms: u64,
    observed_us: u64,
    id: &'a str,
    source: &'a str,
    ty: &'a str,
    subject: &'a str,
    time: &'a str,
    extensions: &'a [(String, Extension)],
    route: &'a Route,
}

/// The decoding side of [`HeaderRef`].
#[derive(Deserialize)]
struct Header {
    watch: String,
    sinks: Option<Vec<String>>,
    written_ms: u64,
    observed_us: u64,
    id: String,
    source: String,
    ty: String,
    subject: String,
    time: String,
    extensions: Vec<(String, Extension)>,
    route: Route,
}

/// An outbox entry: header JSON, then the event's `data` verbatim.
pub fn encode_entry(entry: &OutboxEntry) -> Result<Vec<u8>, StoreError> {
    let e = &entry.event;
    let header = serde_json::to_vec(&HeaderRef {
        watch: &entry.watch,
        sinks: entry.sinks.as_deref(),
        written_ms: entry.written_ms,
        observed_us: entry.observed_us,
        id: &e.id,
        source: &e.source,
        ty: &e.ty,
        subject: &e.subject,
        time: &e.time,
        extensions: &e.extensions,
        route: &e.route,
    })
    .map_err(|e| corrupt("outbox entry to encode", e))?;
    let len =
        u32::try_from(header.len()).map_err(|_| corrupt("outbox entry", "header too large"))?;
    let data = e.data.get();
    let mut out = Vec::with_capacity(5 + header.len() + data.len() / 2);
    out.push(V2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&header);
    compress_into(data.as_bytes(), &mut out);
    Ok(out)
}

/// Reads a value written by [`encode_entry`] (or a legacy JSON entry).
pub fn decode_entry(v: &[u8]) -> Result<OutboxEntry, StoreError> {
    const WHAT: &str = "outbox entry";
    match v.first() {
        Some(&version @ (V1 | V2)) => {
            let (header, data) = split_prefixed::<4>(&v[1..], WHAT, "truncated header")?;
            let h: Header = serde_json::from_slice(header).map_err(|e| corrupt(WHAT, e))?;
            let data = if version == V2 {
                String::from_utf8(decompress(data, WHAT)?).map_err(|e| corrupt(WHAT, e))?
            } else {
                std::str::from_utf8(data)
                    .map_err(|e| corrupt(WHAT, e))?
                    .to_string()
            };
            Ok(OutboxEntry {
                watch: h.watch,
                sinks: h.sinks,
                written_ms: h.written_ms,
                observed_us: h.observed_us,
                event: Event {
                    id: h.id,
                    source: h.source,
                    ty: h.ty,
                    subject: h.subject,
                    time: h.time,
                    extensions: h.extensions,
                    data: RawValue::from_string(data).map_err(|e| corrupt(WHAT, e))?,
                    route: h.route,
                },
            })
        }
        _ => serde_json::from_slice(v).map_err(|e| corrupt(WHAT, e)),
    }
}

/// Appends `raw` as an LZ4 block: u32 LE length of `raw`, then the compressed bytes.
fn compress_into(raw: &[u8], out: &mut Vec<u8>) {
    // Objects are far below 4 GiB (MAX_UNCOMPRESSED); the cast cannot truncate one.
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    let start = out.len();
    out.resize(
        start + lz4_flex::block::get_maximum_output_size(raw.len()),
        0,
    );
    let written = lz4_flex::block::compress_into(raw, &mut out[start..])
        .expect("the output holds the maximum compressed size");
    out.truncate(start + written);
}

/// Reads an LZ4 block written by [`compress_into`].
fn decompress(block: &[u8], what: &'static str) -> Result<Vec<u8>, StoreError> {
    let Some((len, compressed)) = block.split_first_chunk::<4>() else {
        return Err(corrupt(what, "truncated compressed length"));
    };
    let len = u32::from_le_bytes(*len) as usize;
    if len > MAX_UNCOMPRESSED {
        return Err(corrupt(
            what,
            format!("claims {len} bytes uncompressed, more than {MAX_UNCOMPRESSED}"),
        ));
    }
    lz4_flex::block::decompress(compressed, len).map_err(|e| corrupt(what, e))
}

/// A field prefixed by its big-endian length of `N` bytes, and what follows it;
/// `truncated` names the field when fewer bytes follow than the length says.
fn split_prefixed<'a, const N: usize>(
    v: &'a [u8],
    what: &'static str,
    truncated: &'static str,
) -> Result<(&'a [u8], &'a [u8]), StoreError> {
    if v.len() < N {
        return Err(corrupt(what, "truncated length"));
    }
    let (len, rest) = v.split_at(N);
    let len = len
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
    if rest.len() < len {
        return Err(corrupt(what, truncated));
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_entry;
    use serde_json::json;

    #[test]
    fn state_round_trips_and_legacy_json_still_reads() {
        let object = json!({"metadata": {"uid": "u"}, "spec": {"a": "é\"x"}});
        let json = serde_json::to_string(&object).unwrap();
        let v = encode_state("42", &json).unwrap();
        let back = decode_state(&v).unwrap();
        assert_eq!(back.resource_version, "42");
        assert_eq!(back.object, object);
        let legacy = serde_json::to_vec(&back).unwrap();
        assert_eq!(decode_state(&legacy).unwrap(), back);
        assert_eq!(state_version(&v).unwrap(), "42");
        assert_eq!(state_version(&legacy).unwrap(), "42");
    }

    #[test]
    fn entry_round_trips_and_legacy_json_still_reads() {
        let mut entry = test_entry("id-1", "widgets", "u", 7);
        entry.sinks = Some(vec!["nats".into()]);
        entry.observed_us = 7_001;
        entry.event.extensions = vec![
            ("crbinferred".into(), Extension::Bool(true)),
            ("crbgeneration".into(), Extension::Integer(3)),
            ("crbname".into(), Extension::String("w".into())),
        ];
        entry.event.data = RawValue::from_string(r#"{"object":{"a":[1,"2"]}}"#.into()).unwrap();
        let v = encode_entry(&entry).unwrap();
        assert_eq!(decode_entry(&v).unwrap(), entry);
        let legacy = serde_json::to_vec(&entry).unwrap();
        assert_eq!(decode_entry(&legacy).unwrap(), entry);
    }

    #[test]
    fn uncompressed_v1_values_still_read() {
        let json = r#"{"metadata":{"uid":"u"}}"#;
        let state = [&[V1, 0, 2][..], b"42", json.as_bytes()].concat();
        let back = decode_state(&state).unwrap();
        assert_eq!(back.resource_version, "42");
        assert_eq!(back.object, serde_json::json!({"metadata": {"uid": "u"}}));

        let entry = test_entry("id-1", "widgets", "u", 7);
        let v2 = encode_entry(&entry).unwrap();
        let header_len = u32::from_be_bytes(v2[1..5].try_into().unwrap()) as usize;
        let v1 = [
            &[V1][..],
            &v2[1..5 + header_len],
            entry.event.data.get().as_bytes(),
        ]
        .concat();
        assert_eq!(decode_entry(&v1).unwrap(), entry);
    }

    #[test]
    fn objects_are_stored_compressed() {
        let spec: serde_json::Map<String, serde_json::Value> = (0..50)
            .map(|i| {
                (
                    format!("field{i:02}"),
                    json!(format!("value-{i}-replicated")),
                )
            })
            .collect();
        let json = serde_json::to_string(&json!({ "spec": spec })).unwrap();
        let v = encode_state("1", &json).unwrap();
        assert!(
            v.len() * 2 < json.len(),
            "{} bytes stored for {} bytes of JSON",
            v.len(),
            json.len()
        );
        assert_eq!(decode_state(&v).unwrap().object, json!({ "spec": spec }));
    }

    #[test]
    fn an_absurd_uncompressed_length_is_corrupt_not_an_allocation() {
        let mut v = encode_state("1", r#"{"a":1}"#).unwrap();
        let at = 3 + 1;
        v[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        match decode_state(&v) {
            Err(StoreError::Corrupt { detail, .. }) => assert!(detail.contains("claims")),
            other => panic!("expected corrupt, got {other:?}"),
        }
    }

    #[test]
    fn truncated_values_are_corrupt_not_panics() {
        let v = encode_entry(&test_entry("id-1", "widgets", "u", 7)).unwrap();
        for cut in [1, 3, 5, 20] {
            assert!(matches!(
                decode_entry(&v[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
        assert!(matches!(
            decode_state(&[V1, 0, 9, b'1']),
            Err(StoreError::Corrupt { .. })
        ));
        let state = encode_state("1", r#"{"a":"bcdefgh"}"#).unwrap();
        for cut in [4, 6, state.len() - 1] {
            assert!(matches!(
                decode_state(&state[..cut]),
                Err(StoreError::Corrupt { .. })
            ));
        }
    }
}
