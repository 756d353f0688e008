//! Human-friendly units in `crbridge.yaml`: durations (`500ms`, `30s`, `15m`, `24h`, `7d`)
//! and byte sizes (`512`, `64KiB`, `2GiB`, `10MB`).
//!
//! Both are an unsigned integer followed by a unit, with no space and no fraction, so a
//! value means exactly one thing. A bare integer is seconds (durations) or bytes (sizes).

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};

/// Why a duration or byte size could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The text is not an integer followed by a known duration unit.
    #[error("invalid duration {0:?} (expected e.g. 30s, 15m, 24h, 7d)")]
    InvalidDuration(String),
    /// The duration does not fit in a `std::time::Duration` of whole milliseconds.
    #[error("duration {0:?} is too large")]
    DurationTooLarge(String),
    /// The text is not an integer followed by a known size unit.
    #[error("invalid byte size {0:?} (expected e.g. 512, 64KiB, 64MiB, 2GiB)")]
    InvalidBytes(String),
    /// The size does not fit in 64 bits.
    #[error("byte size {0:?} is too large (at most 16EiB)")]
    BytesTooLarge(String),
}

/// Splits `text` into its leading decimal digits and the rest (the unit).
fn split_number(text: &str) -> Option<(u64, &str)> {
    let end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if end == 0 {
        return None;
    }
    // Only digits, so the parse fails on overflow alone; callers report that as "invalid".
    let number = text[..end].parse::<u64>().ok()?;
    Some((number, &text[end..]))
}

/// Parses a duration: an integer followed by `ms`, `s`, `m`, `h` or `d`; a bare integer is
/// seconds. Surrounding whitespace is ignored.
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let trimmed = text.trim();
    let invalid = || UnitError::InvalidDuration(text.to_owned());
    let (number, unit) = split_number(trimmed).ok_or_else(invalid)?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(invalid()),
    };
    let millis = number
        .checked_mul(millis_per_unit)
        .ok_or_else(|| UnitError::DurationTooLarge(text.to_owned()))?;
    Ok(Duration::from_millis(millis))
}

/// Parses a byte size: an integer followed by nothing or `B` (bytes), `KiB`, `MiB`, `GiB`,
/// `TiB` (powers of 1024) or `KB`, `MB`, `GB`, `TB` (powers of 1000). Surrounding
/// whitespace is ignored.
pub fn parse_bytes(text: &str) -> Result<u64, UnitError> {
    let trimmed = text.trim();
    let invalid = || UnitError::InvalidBytes(text.to_owned());
    let (number, unit) = split_number(trimmed).ok_or_else(invalid)?;
    let multiplier: u64 = match unit {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| UnitError::BytesTooLarge(text.to_owned()))
}

/// Formats a duration in the config's own notation, with the largest unit that divides it
/// exactly (`90s`, `15m`, `24h`, `250ms`), so messages echo what the user could write.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    for (unit, per) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis != 0 && millis.is_multiple_of(per) {
            return format!("{}{unit}", millis / per);
        }
    }
    format!("{millis}ms")
}

/// Serde `deserialize_with` helper for a [`Duration`] written as `30s`, `15m`, ... or as a
/// bare integer number of seconds.
pub fn deserialize_duration<'de, D>(deserializer: D) -> Result<Duration, D::Error>
where
    D: Deserializer<'de>,
{
    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a duration such as 500ms, 30s, 15m, 24h or 7d")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(UnitError::InvalidDuration(v.to_string())))
        }
    }

    deserializer.deserialize_any(DurationVisitor)
}

/// Serde `deserialize_with` helper for a byte size written as `64MiB`, `2GiB`, ... or as a
/// bare integer number of bytes.
pub fn deserialize_bytes<'de, D>(deserializer: D) -> Result<u64, D::Error>
where
    D: Deserializer<'de>,
{
    struct BytesVisitor;

    impl Visitor<'_> for BytesVisitor {
        type Value = u64;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a byte size such as 512, 64KiB, 64MiB or 2GiB")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_bytes(v).map_err(E::custom)
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(UnitError::InvalidBytes(v.to_string())))
        }
    }

    deserializer.deserialize_any(BytesVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_every_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(15 * 60)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(24 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration(" 45 "), Ok(Duration::from_secs(45)));
    }

    #[test]
    fn bad_durations_are_rejected_with_the_text() {
        for bad in ["", "24x", "h", "1.5h", "-5s", "5 s", "5S", "5sec", "1h30m"] {
            let err = parse_duration(bad).unwrap_err();
            assert_eq!(err, UnitError::InvalidDuration(bad.to_owned()), "{bad}");
        }
        assert_eq!(
            parse_duration("24x").unwrap_err().to_string(),
            r#"invalid duration "24x" (expected e.g. 30s, 15m, 24h, 7d)"#
        );
        assert!(matches!(
            parse_duration("18446744073709551615d"),
            Err(UnitError::DurationTooLarge(_))
        ));
    }

    #[test]
    fn format_duration_uses_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(7 * 86_400)), "7d");
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_secs(900)), "15m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::ZERO), "0ms");
        assert_eq!(format_duration(Duration::from_secs(24 * 3600)), "1d");
        for text in ["500ms", "30s", "15m", "25h", "7d", "1001ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn byte_sizes_binary_and_decimal() {
        assert_eq!(parse_bytes("512"), Ok(512));
        assert_eq!(parse_bytes("512B"), Ok(512));
        assert_eq!(parse_bytes("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 * 1024 * 1024));
        assert_eq!(parse_bytes("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_bytes("1TiB"), Ok(1 << 40));
        assert_eq!(parse_bytes("10KB"), Ok(10_000));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("3GB"), Ok(3_000_000_000));
        assert_eq!(parse_bytes("1TB"), Ok(1_000_000_000_000));
    }

    #[test]
    fn bad_byte_sizes_are_rejected_with_the_text() {
        for bad in ["", "GiB", "1.5GiB", "-1", "2 GiB", "2gib", "2G", "2XB"] {
            assert_eq!(
                parse_bytes(bad),
                Err(UnitError::InvalidBytes(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            parse_bytes("2GB!").unwrap_err().to_string(),
            r#"invalid byte size "2GB!" (expected e.g. 512, 64KiB, 64MiB, 2GiB)"#
        );
        assert!(matches!(
            parse_bytes("99999999TiB"),
            Err(UnitError::BytesTooLarge(_))
        ));
    }

    #[derive(Debug, serde::Deserialize)]
    struct Units {
        #[serde(deserialize_with = "deserialize_duration")]
        every: Duration,
        #[serde(deserialize_with = "deserialize_bytes")]
        size: u64,
    }

    fn units(yaml: &str) -> Result<Units, String> {
        serde_saphyr::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn serde_helpers_accept_strings_and_bare_integers() {
        let u = units("{every: 15m, size: 2GiB}").unwrap();
        assert_eq!(u.every, Duration::from_secs(900));
        assert_eq!(u.size, 2 << 30);
        let u = units("{every: 30, size: 4096}").unwrap();
        assert_eq!(u.every, Duration::from_secs(30));
        assert_eq!(u.size, 4096);
    }

    #[test]
    fn serde_helpers_reject_bad_values() {
        assert!(units("{every: 24x, size: 1}")
            .unwrap_err()
            .contains(r#"invalid duration "24x""#));
        assert!(units("{every: -3, size: 1}")
            .unwrap_err()
            .contains(r#"invalid duration "-3""#));
        assert!(units("{every: 1, size: 1.5}")
            .unwrap_err()
            .contains("expected a byte size"));
        assert!(units("{every: 1, size: -1}")
            .unwrap_err()
            .contains(r#"invalid byte size "-1""#));
    }
}
