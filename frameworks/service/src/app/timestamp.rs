//! Marathon's timestamp form, `YYYY-MM-DDTHH:MM:SS.sssZ`.

use jiff::Timestamp;

/// Formats a timestamp as Marathon does: UTC, millisecond precision, `Z`
/// suffix, e.g. `2026-11-22T10:15:30.042Z`.
pub fn timestamp_string(t: Timestamp) -> String {
    let millis = t.as_millisecond();
    let truncated = Timestamp::from_millisecond(millis).unwrap_or(t);
    format!("{truncated:.3}")
}

/// Parses an RFC 3339 timestamp (Marathon's version ids, `versionInfo`).
pub fn parse_timestamp(s: &str) -> Result<Timestamp, jiff::Error> {
    s.parse::<Timestamp>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_string_has_millisecond_precision_and_z() {
        let t: Timestamp = "2026-11-22T10:15:30.042917Z".parse().unwrap();
        assert_eq!(timestamp_string(t), "2026-11-22T10:15:30.042Z");
    }

    #[test]
    fn timestamp_string_keeps_zero_millis() {
        let t: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(timestamp_string(t), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn timestamp_string_round_trips_through_parse() {
        let t: Timestamp = "2026-11-22T10:15:30.042Z".parse().unwrap();
        assert_eq!(parse_timestamp(&timestamp_string(t)).unwrap(), t);
    }
}
