//! Schedules: Chronos' ISO 8601 repeating intervals and cron expressions, in a time zone.
//!
//! Pure: the current time is passed in, never read.
//!
//! **ISO 8601** `R[n]/[start]/period`: instant `k` is `start + k × period`, computed in the
//! schedule's zone (so `P1D` keeps the wall-clock time across daylight-saving changes and `P1M`
//! from January 31 gives February 28, then March 31). `R` repeats forever, `Rn` gives `n`
//! instants, `R0` none. An empty start is the `now` given to [`Schedule::parse`]. As in Chronos, a
//! `scheduleTimeZone` takes precedence over the start's own offset: the start's wall-clock fields
//! are read in that zone (`R/2026-01-01T02:00:00Z/P1D` with `Asia/Tokyo` runs at 02:00 Tokyo
//! time). Without a zone the start's own offset is used (UTC when it has none).
//!
//! **Cron** (five fields, `*/5 * * * *`, or `@hourly`-style nicknames) evaluated on the wall clock
//! of the zone, with [croner]'s daylight-saving rules:
//! - a *fixed-time* expression (one minute and one hour, e.g. `30 2 * * *`) runs once a matching
//!   day: when its wall-clock time falls in a spring-forward gap it runs at the first instant
//!   after the gap (03:00 for 02:30 in New York on 2026-03-08); when it falls in a fall-back
//!   overlap it runs at the earlier of the two instants only;
//! - any other expression (`*/5 * * * *`, `0 * * * *`) runs at every real instant whose wall
//!   clock matches: wall-clock times in a gap do not exist and are not run, and the repeated hour
//!   of an overlap is run through twice, so `*/5` stays every five real minutes.
use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::fmt::temporal::Pieces;
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

use crate::job::JobError;

/// The JSON field schedule errors are reported against.
const FIELD: &str = "schedule";
/// The JSON field time-zone errors are reported against.
const TZ_FIELD: &str = "scheduleTimeZone";

/// A parsed schedule: the instants at which a job is due.
#[derive(Debug, Clone)]
pub struct Schedule {
    kind: Kind,
    zone_name: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Repeating(Repeating),
    Cron { cron: Box<Cron>, zone: TimeZone },
}

/// `R[n]/start/period`.
#[derive(Debug, Clone)]
struct Repeating {
    /// None: forever.
    repetitions: Option<u64>,
    /// The first instant, in the zone the period is added in.
    start: Zoned,
    period: Span,
}

impl Schedule {
    /// Parses `expr` (`R[n]/[start]/period` or a 5-field cron expression) in zone `tz` (an IANA
    /// name; None or empty: UTC, or for ISO 8601 the start's own offset); an empty ISO 8601
    /// start means `now`. Errors name `schedule` or `scheduleTimeZone`.
    pub fn parse(expr: &str, tz: Option<&str>, now: Timestamp) -> Result<Schedule, JobError> {
        let tz = tz.map(str::trim).filter(|s| !s.is_empty());
        let zone = tz.map(time_zone).transpose()?;
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(JobError::new(FIELD, "must not be empty"));
        }
        if expr.starts_with('R') {
            let repeating = parse_repeating(expr, zone.as_ref(), now)?;
            let zone_name = tz
                .map(str::to_owned)
                .unwrap_or_else(|| zone_label(repeating.start.time_zone()));
            return Ok(Schedule {
                kind: Kind::Repeating(repeating),
                zone_name,
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| {
                JobError::new(
                    FIELD,
                    format_args!(
                        "{expr:?} is neither an ISO 8601 repeating interval (R[n]/[start]/period) nor a \
                         5-field cron expression: {e}"
                    ),
                )
            })?;
        let schedule = Schedule {
            kind: Kind::Cron {
                cron: Box::new(cron),
                zone: zone.unwrap_or(TimeZone::UTC),
            },
            zone_name: tz.unwrap_or("UTC").to_owned(),
        };
        if schedule.next_after(now).is_none() {
            return Err(JobError::new(
                FIELD,
                format_args!("{expr:?} never matches a date"),
            ));
        }
        Ok(schedule)
    }

    /// The first instant at or after `t`, or None when there is none.
    pub fn first_at_or_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Repeating(r) => r.instant(r.count_before(t)),
            Kind::Cron { .. } => {
                // Instants are whole seconds, so the first at or after `t` is the first after the
                // whole second before `ceil(t)`. (croner's own inclusive search, started exactly at
                // the end of a spring-forward gap, misses the run carried over the gap.)
                let floor = floor_second(t);
                let ceil = if floor == t {
                    t
                } else {
                    floor.checked_add(Span::new().seconds(1)).ok()?
                };
                self.next_after(ceil.checked_sub(Span::new().seconds(1)).ok()?)
            }
        }
    }

    /// The first instant strictly after `t`, or None when there is none.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Repeating(r) => r.instant(r.count_at_or_before(t)),
            Kind::Cron { cron, zone } => cron
                .find_next_occurrence(&floor_second(t).to_zoned(zone.clone()), false)
                .ok()
                .map(|z| z.timestamp()),
        }
    }

    /// The last instant at or before `t`, or None when there is none (useful for catch-up: the
    /// most recent instant missed).
    pub fn last_at_or_before(&self, t: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Repeating(r) => r.count_at_or_before(t).checked_sub(1).and_then(|k| r.instant(k)),
            Kind::Cron { cron, zone } => cron
                .find_previous_occurrence(&floor_second(t).to_zoned(zone.clone()), true)
                .ok()
                .map(|z| z.timestamp()),
        }
    }

    /// How many instants fall in `(after, until]`. Logarithmic for ISO 8601 schedules; linear in
    /// the answer for cron expressions, so bound the range.
    pub fn count_between(&self, after: Timestamp, until: Timestamp) -> u64 {
        if until <= after {
            return 0;
        }
        match &self.kind {
            Kind::Repeating(r) => r
                .count_at_or_before(until)
                .saturating_sub(r.count_at_or_before(after)),
            Kind::Cron { .. } => self.iter_after(after).take_while(|t| *t <= until).count() as u64,
        }
    }

    /// The instants strictly after `t`, in order.
    pub fn iter_after(&self, t: Timestamp) -> impl Iterator<Item = Timestamp> + '_ {
        let mut last = t;
        std::iter::from_fn(move || {
            let next = self.next_after(last)?;
            last = next;
            Some(next)
        })
    }

    /// How many instants in all (None: forever). Cron expressions repeat forever.
    pub fn repetitions(&self) -> Option<u64> {
        match &self.kind {
            Kind::Repeating(r) => r.repetitions,
            Kind::Cron { .. } => None,
        }
    }

    /// Instant number `n` (0-based) of an ISO 8601 schedule; None past the last one, and for cron
    /// expressions (which have no first instant).
    pub fn instant(&self, n: u64) -> Option<Timestamp> {
        match &self.kind {
            Kind::Repeating(r) => r.instant(n),
            Kind::Cron { .. } => None,
        }
    }

    /// The first instant of an ISO 8601 schedule (None for cron expressions).
    pub fn start(&self) -> Option<Timestamp> {
        match &self.kind {
            Kind::Repeating(r) => Some(r.start.timestamp()),
            Kind::Cron { .. } => None,
        }
    }

    /// True for cron expressions, false for ISO 8601 repeating intervals.
    pub fn is_cron(&self) -> bool {
        matches!(self.kind, Kind::Cron { .. })
    }

    /// The name of the zone the schedule is evaluated in (`UTC` by default; a fixed offset such
    /// as `+01:00` for an ISO 8601 start with an offset and no `scheduleTimeZone`).
    pub fn zone_name(&self) -> &str {
        &self.zone_name
    }
}

/// The schedule with its start written out: `R5/2026-03-01T19:00:00+09:00/PT1H`; a cron
/// expression as written. Parsing this text again with the same zone gives the same instants
/// (use it to store a schedule whose start was empty, so that it does not move with `now`).
impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Repeating(r) => {
                f.write_str("R")?;
                if let Some(n) = r.repetitions {
                    write!(f, "{n}")?;
                }
                write!(
                    f,
                    "/{}/{}",
                    r.start.timestamp().display_with_offset(r.start.offset()),
                    r.period
                )
            }
            Kind::Cron { cron, .. } => f.write_str(cron.pattern.as_str()),
        }
    }
}

/// Writes out an empty ISO 8601 start as `now`, so the stored schedule does not move each time
/// it is parsed; returns other expressions unchanged. Fails as [`Schedule::parse`] does.
pub fn pin_start(expr: &str, tz: Option<&str>, now: Timestamp) -> Result<String, JobError> {
    let has_empty_start = expr.trim().starts_with('R') && expr.split('/').nth(1).is_some_and(str::is_empty);
    let schedule = Schedule::parse(expr, tz, now)?;
    Ok(if has_empty_start {
        schedule.to_string()
    } else {
        expr.to_owned()
    })
}

/// Looks up an IANA time zone (also Java's legacy three-letter ids such as `PST`, which Chronos
/// accepted). Errors name `scheduleTimeZone`.
pub fn time_zone(name: &str) -> Result<TimeZone, JobError> {
    let name = name.trim();
    if let Ok(zone) = TimeZone::get(name) {
        return Ok(zone);
    }
    let alias = JAVA_SHORT_IDS
        .iter()
        .find(|(id, _)| *id == name)
        .map(|(_, zone)| *zone);
    match alias {
        Some(zone) => {
            TimeZone::get(zone).map_err(|e| JobError::new(TZ_FIELD, format_args!("{name:?} ({zone}): {e}")))
        }
        None => Err(JobError::new(
            TZ_FIELD,
            format_args!("unknown time zone {name:?}"),
        )),
    }
}

/// `java.time.ZoneId.SHORT_IDS` that are not themselves names in the tz database.
const JAVA_SHORT_IDS: &[(&str, &str)] = &[
    ("ACT", "Australia/Darwin"),
    ("AET", "Australia/Sydney"),
    ("AGT", "America/Argentina/Buenos_Aires"),
    ("ART", "Africa/Cairo"),
    ("AST", "America/Anchorage"),
    ("BET", "America/Sao_Paulo"),
    ("BST", "Asia/Dhaka"),
    ("CAT", "Africa/Harare"),
    ("CNT", "America/St_Johns"),
    ("CST", "America/Chicago"),
    ("CTT", "Asia/Shanghai"),
    ("EAT", "Africa/Addis_Ababa"),
    ("ECT", "Europe/Paris"),
    ("IET", "America/Indiana/Indianapolis"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("MIT", "Pacific/Apia"),
    ("NET", "Asia/Yerevan"),
    ("NST", "Pacific/Auckland"),
    ("PLT", "Asia/Karachi"),
    ("PNT", "America/Phoenix"),
    ("PRT", "America/Puerto_Rico"),
    ("PST", "America/Los_Angeles"),
    ("SST", "Pacific/Guadalcanal"),
    ("VST", "Asia/Ho_Chi_Minh"),
];

fn zone_label(zone: &TimeZone) -> String {
    match zone.iana_name() {
        Some(name) => name.to_owned(),
        None => zone
            .to_fixed_offset()
            .map(|o| o.to_string())
            .unwrap_or_else(|_| "UTC".to_owned()),
    }
}

fn floor_second(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

fn parse_repeating(expr: &str, zone: Option<&TimeZone>, now: Timestamp) -> Result<Repeating, JobError> {
    let bad = |what: fmt::Arguments<'_>| {
        JobError::new(FIELD, format_args!("{expr:?} is not R[n]/[start]/period: {what}"))
    };
    let mut parts = expr.splitn(3, '/');
    let (Some(reps), Some(start), Some(period)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format_args!("expected three parts separated by '/'")));
    };
    let repetitions = match reps.strip_prefix('R') {
        Some("") => None,
        Some(n) if n.bytes().all(|b| b.is_ascii_digit()) => Some(
            n.parse::<u64>()
                .map_err(|e| bad(format_args!("repetitions {n:?}: {e}")))?,
        ),
        _ => return Err(bad(format_args!("{reps:?} is not R or R<count>"))),
    };
    if !period.starts_with('P') {
        return Err(bad(format_args!(
            "period {period:?} must be an ISO 8601 duration like PT1H or P1D"
        )));
    }
    let period: Span = period
        .parse()
        .map_err(|e| bad(format_args!("period {period:?}: {e}")))?;
    if !period.is_positive() {
        return Err(bad(format_args!("period must be longer than zero")));
    }
    let start = if start.is_empty() {
        now.to_zoned(zone.cloned().unwrap_or(TimeZone::UTC))
    } else {
        let pieces = Pieces::parse(start).map_err(|e| bad(format_args!("start {start:?}: {e}")))?;
        let civil = pieces.date().to_datetime(pieces.time().unwrap_or_default());
        let zone = match (zone, pieces.to_numeric_offset()) {
            (Some(zone), _) => zone.clone(),
            (None, Some(offset)) => TimeZone::fixed(offset),
            (None, None) => TimeZone::UTC,
        };
        civil
            .to_zoned(zone)
            .map_err(|e| bad(format_args!("start {start:?}: {e}")))?
    };
    Ok(Repeating {
        repetitions,
        start,
        period,
    })
}

impl Repeating {
    /// `start + k × period` without the repetition limit; None when out of range.
    fn raw_instant(&self, k: u64) -> Option<Timestamp> {
        let k = i64::try_from(k).ok()?;
        let span = self.period.checked_mul(k).ok()?;
        self.start.checked_add(span).ok().map(|z| z.timestamp())
    }

    /// Instant `k`, within the repetition limit.
    fn instant(&self, k: u64) -> Option<Timestamp> {
        if self.repetitions.is_some_and(|n| k >= n) {
            return None;
        }
        self.raw_instant(k)
    }

    /// The smallest `k` whose raw instant does not satisfy `before`, or the repetition count when
    /// every instant does. Raw instants are non-decreasing in `k`, and out-of-range ones count as
    /// infinitely late, so a gallop and a bisection find it in O(log k) additions.
    fn first_index_not(&self, before: impl Fn(Timestamp) -> bool) -> u64 {
        let cap = self.repetitions.unwrap_or(u64::MAX);
        let is_before = |k: u64| self.raw_instant(k).is_some_and(&before);
        if cap == 0 || !is_before(0) {
            return 0;
        }
        // Gallop to an upper bound, then bisect: `lo` is before, `hi` is not (or is the cap).
        let mut lo = 0u64;
        let mut hi = 1u64;
        while hi < cap && is_before(hi) {
            lo = hi;
            hi = hi.saturating_mul(2);
        }
        let mut hi = hi.min(cap);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if is_before(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    }

    /// How many instants are strictly before `t`.
    fn count_before(&self, t: Timestamp) -> u64 {
        self.first_index_not(|x| x < t)
    }

    /// How many instants are at or before `t`.
    fn count_at_or_before(&self, t: Timestamp) -> u64 {
        self.first_index_not(|x| x <= t)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn parse(expr: &str, tz: Option<&str>) -> Schedule {
        Schedule::parse(expr, tz, ts("2026-06-15T12:34:56Z")).unwrap()
    }

    fn next_n(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        s.iter_after(ts(from)).take(n).map(|t| t.to_string()).collect()
    }

    // ---- ISO 8601 repeating intervals ----

    #[test]
    fn iso_hourly_first_at_or_after_includes_the_instant_itself() {
        let s = parse("R/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(
            s.first_at_or_after(ts("2026-03-01T10:00:00Z")),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            s.first_at_or_after(ts("2026-03-01T10:00:00.001Z")),
            Some(ts("2026-03-01T11:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T10:00:00Z")),
            Some(ts("2026-03-01T11:00:00Z"))
        );
    }

    #[test]
    fn iso_before_start_gives_the_start() {
        let s = parse("R/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(
            s.first_at_or_after(ts("2020-01-01T00:00:00Z")),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2020-01-01T00:00:00Z")),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        assert_eq!(s.last_at_or_before(ts("2026-03-01T09:59:59Z")), None);
    }

    #[test]
    fn iso_far_from_start_is_found_without_walking() {
        let s = parse("R/2000-01-01T00:00:00Z/PT1S", None);
        assert_eq!(
            s.next_after(ts("2026-06-15T12:34:56.5Z")),
            Some(ts("2026-06-15T12:34:57Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-06-15T12:34:56.5Z")),
            Some(ts("2026-06-15T12:34:56Z"))
        );
    }

    #[test]
    fn iso_rn_gives_exactly_n_instants() {
        let s = parse("R3/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(s.repetitions(), Some(3));
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:00Z", 10),
            [
                "2026-03-01T10:00:00Z",
                "2026-03-01T11:00:00Z",
                "2026-03-01T12:00:00Z"
            ]
        );
        assert_eq!(s.next_after(ts("2026-03-01T12:00:00Z")), None);
        assert_eq!(s.first_at_or_after(ts("2026-03-01T12:00:01Z")), None);
        assert_eq!(s.instant(2), Some(ts("2026-03-01T12:00:00Z")));
        assert_eq!(s.instant(3), None);
    }

    #[test]
    fn iso_r0_never_runs() {
        let s = parse("R0/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(s.repetitions(), Some(0));
        assert_eq!(s.first_at_or_after(ts("2020-01-01T00:00:00Z")), None);
        assert_eq!(s.next_after(ts("2020-01-01T00:00:00Z")), None);
    }

    #[test]
    fn iso_r_alone_repeats_forever() {
        let s = parse("R/2026-03-01T10:00:00Z/P1D", None);
        assert_eq!(s.repetitions(), None);
        assert_eq!(
            s.next_after(ts("2199-12-31T12:00:00Z")),
            Some(ts("2200-01-01T10:00:00Z"))
        );
    }

    #[test]
    fn iso_r1_runs_once() {
        let s = parse("R1/2026-03-01T10:00:00Z/PT24H", None);
        assert_eq!(next_n(&s, "2026-01-01T00:00:00Z", 5), ["2026-03-01T10:00:00Z"]);
    }

    #[test]
    fn iso_empty_start_is_now() {
        let now = ts("2026-06-15T12:34:56Z");
        let s = Schedule::parse("R2//PT1H", None, now).unwrap();
        assert_eq!(s.first_at_or_after(now), Some(now));
        assert_eq!(
            next_n(&s, "2026-06-15T12:00:00Z", 5),
            ["2026-06-15T12:34:56Z", "2026-06-15T13:34:56Z"]
        );
    }

    #[test]
    fn iso_months_are_calendar_months_from_the_start() {
        let s = parse("R/2026-01-31T08:00:00Z/P1M", None);
        assert_eq!(
            next_n(&s, "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-31T08:00:00Z",
                "2026-02-28T08:00:00Z",
                "2026-03-31T08:00:00Z",
                "2026-04-30T08:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_years_keep_february_29_when_it_exists() {
        let s = parse("R/2024-02-29T00:00:00Z/P1Y", None);
        assert_eq!(
            next_n(&s, "2024-01-01T00:00:00Z", 5),
            [
                "2024-02-29T00:00:00Z",
                "2025-02-28T00:00:00Z",
                "2026-02-28T00:00:00Z",
                "2027-02-28T00:00:00Z",
                "2028-02-29T00:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_mixed_day_and_hours_period() {
        let s = parse("R/2026-03-01T00:00:00Z/P1DT12H", None);
        assert_eq!(
            next_n(&s, "2026-02-01T00:00:00Z", 3),
            [
                "2026-03-01T00:00:00Z",
                "2026-03-02T12:00:00Z",
                "2026-03-04T00:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_thirty_seconds_period() {
        let s = parse("R/2026-03-01T00:00:00Z/PT30S", None);
        assert_eq!(
            s.count_between(ts("2026-03-01T00:00:00Z"), ts("2026-03-01T01:00:00Z")),
            120
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T00:10:10Z")),
            Some(ts("2026-03-01T00:10:30Z"))
        );
    }

    #[test]
    fn iso_count_between_is_half_open_and_capped() {
        let s = parse("R5/2026-03-01T00:00:00Z/PT1H", None);
        // (00:00, 02:00] holds 01:00 and 02:00.
        assert_eq!(
            s.count_between(ts("2026-03-01T00:00:00Z"), ts("2026-03-01T02:00:00Z")),
            2
        );
        assert_eq!(
            s.count_between(ts("2026-02-01T00:00:00Z"), ts("2027-01-01T00:00:00Z")),
            5
        );
        assert_eq!(
            s.count_between(ts("2026-03-01T02:00:00Z"), ts("2026-03-01T02:00:00Z")),
            0
        );
    }

    #[test]
    fn iso_schedule_time_zone_reads_the_start_wall_clock_in_that_zone() {
        // As in Chronos: the zone takes precedence over the start's own offset.
        let s = parse("R/2026-01-01T02:00:00Z/P1D", Some("Asia/Tokyo"));
        assert_eq!(s.start(), Some(ts("2025-12-31T17:00:00Z")));
        assert_eq!(s.zone_name(), "Asia/Tokyo");
    }

    #[test]
    fn iso_start_offset_is_used_without_a_zone() {
        let s = parse("R/2026-01-01T02:00:00+01:00/P1D", None);
        assert_eq!(s.start(), Some(ts("2026-01-01T01:00:00Z")));
        let s = parse("R/2026-01-01T02:00:00/P1D", None);
        assert_eq!(s.start(), Some(ts("2026-01-01T02:00:00Z")));
        assert_eq!(s.zone_name(), "UTC");
    }

    #[test]
    fn iso_daily_keeps_the_wall_clock_time_across_dst() {
        let s = parse("R/2026-03-07T09:00:00/P1D", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-03-01T00:00:00Z", 3),
            [
                "2026-03-07T14:00:00Z",
                "2026-03-08T13:00:00Z",
                "2026-03-09T13:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_daily_in_the_spring_forward_gap_runs_once_an_hour_later() {
        // 02:30 does not exist in New York on 2026-03-08: that day's run is at 03:30 EDT.
        let s = parse("R/2026-03-07T02:30:00/P1D", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-03-01T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:30:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
    }

    #[test]
    fn iso_daily_in_the_fall_back_overlap_runs_once_at_the_first_instant() {
        // 01:30 happens twice in New York on 2026-11-01 (EDT, then EST): one run, at 01:30 EDT.
        let s = parse("R/2026-10-31T01:30:00/P1D", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-10-30T00:00:00Z", 3),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
    }

    #[test]
    fn iso_hourly_is_exact_hours_across_dst() {
        let s = parse("R/2026-11-01T00:00:00/PT1H", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-11-01T00:00:00Z", 4),
            [
                "2026-11-01T04:00:00Z",
                "2026-11-01T05:00:00Z",
                "2026-11-01T06:00:00Z",
                "2026-11-01T07:00:00Z"
            ]
        );
    }

    #[test]
    fn iso_last_at_or_before_is_the_latest_instant_not_after() {
        let s = parse("R/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(
            s.last_at_or_before(ts("2026-03-01T12:30:00Z")),
            Some(ts("2026-03-01T12:00:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-03-01T12:00:00Z")),
            Some(ts("2026-03-01T12:00:00Z"))
        );
        let s = parse("R2/2026-03-01T10:00:00Z/PT1H", None);
        assert_eq!(
            s.last_at_or_before(ts("2027-01-01T00:00:00Z")),
            Some(ts("2026-03-01T11:00:00Z"))
        );
    }

    #[test]
    fn iso_display_writes_the_start_out_and_parses_back_to_the_same_instants() {
        let now = ts("2026-06-15T12:34:56Z");
        let s = Schedule::parse("R5//PT1H", Some("Asia/Tokyo"), now).unwrap();
        let text = s.to_string();
        assert_eq!(text, "R5/2026-06-15T21:34:56+09:00/PT1H");
        let again = Schedule::parse(&text, Some("Asia/Tokyo"), ts("2030-01-01T00:00:00Z")).unwrap();
        assert_eq!(again.start(), Some(now));
        assert_eq!(again.repetitions(), Some(5));
    }

    #[test]
    fn pin_start_fills_only_an_empty_start() {
        let now = ts("2026-06-15T12:34:56Z");
        assert_eq!(
            pin_start("R//PT1H", None, now).unwrap(),
            "R/2026-06-15T12:34:56+00:00/PT1H"
        );
        assert_eq!(
            pin_start("R/2026-01-01T00:00:00Z/PT1H", None, now).unwrap(),
            "R/2026-01-01T00:00:00Z/PT1H"
        );
        assert_eq!(pin_start("*/5 * * * *", None, now).unwrap(), "*/5 * * * *");
    }

    #[test]
    fn iso_start_with_fraction_and_date_only_start_parse() {
        assert_eq!(
            parse("R/2014-03-08T20:00:00.000Z/PT2H", None).start(),
            Some(ts("2014-03-08T20:00:00Z"))
        );
        assert_eq!(
            parse("R/2026-01-01/P1D", None).start(),
            Some(ts("2026-01-01T00:00:00Z"))
        );
    }

    #[test]
    fn java_short_zone_ids_are_accepted() {
        let s = parse("R/2014-10-10T18:32:00Z/PT60M", Some("PST"));
        assert_eq!(s.start(), Some(ts("2014-10-11T01:32:00Z")));
    }

    // ---- bad input ----

    fn error(expr: &str, tz: Option<&str>) -> JobError {
        Schedule::parse(expr, tz, ts("2026-06-15T12:34:56Z")).unwrap_err()
    }

    #[test]
    fn unparseable_schedules_are_rejected_naming_schedule() {
        for bad in [
            "",
            "   ",
            "every hour",
            "R/2026-01-01T00:00:00Z",
            "R/2026-01-01T00:00:00Z/1H",
            "R/not-a-date/PT1H",
            "Rx/2026-01-01T00:00:00Z/PT1H",
            "R-1/2026-01-01T00:00:00Z/PT1H",
            "R/2026-01-01T00:00:00Z/P",
            "R/2026-01-01T00:00:00Z/PT0S",
            "R/2026-13-01T00:00:00Z/PT1H",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "* 24 * * *",
            "*/0 * * * *",
            "0 0 30 2 *",
        ] {
            let e = error(bad, None);
            assert_eq!(e.field, "schedule", "{bad:?}: {e}");
            assert!(e.message.starts_with("schedule: "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn unknown_time_zone_is_rejected_naming_schedule_time_zone() {
        for expr in ["R/2026-01-01T00:00:00Z/PT1H", "*/5 * * * *"] {
            let e = error(expr, Some("Mars/Olympus_Mons"));
            assert_eq!(e.field, "scheduleTimeZone");
            assert!(e.message.contains("Mars/Olympus_Mons"), "{e}");
        }
    }

    #[test]
    fn empty_time_zone_means_utc() {
        assert_eq!(
            parse("0 2 * * *", Some("")).next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T02:00:00Z"))
        );
    }

    // ---- cron expressions ----

    #[test]
    fn cron_every_five_minutes() {
        let s = parse("*/5 * * * *", None);
        assert!(s.is_cron());
        assert_eq!(s.repetitions(), None);
        assert_eq!(
            next_n(&s, "2026-03-01T10:02:00Z", 3),
            [
                "2026-03-01T10:05:00Z",
                "2026-03-01T10:10:00Z",
                "2026-03-01T10:15:00Z"
            ]
        );
        assert_eq!(
            s.count_between(ts("2026-03-01T10:00:00Z"), ts("2026-03-01T11:00:00Z")),
            12
        );
    }

    #[test]
    fn cron_first_at_or_after_is_inclusive_to_the_nanosecond() {
        let s = parse("*/5 * * * *", None);
        assert_eq!(
            s.first_at_or_after(ts("2026-03-01T10:05:00Z")),
            Some(ts("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            s.first_at_or_after(ts("2026-03-01T10:05:00.000000001Z")),
            Some(ts("2026-03-01T10:10:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T10:04:59.999Z")),
            Some(ts("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T10:05:00Z")),
            Some(ts("2026-03-01T10:10:00Z"))
        );
    }

    #[test]
    fn cron_last_at_or_before() {
        let s = parse("*/5 * * * *", None);
        assert_eq!(
            s.last_at_or_before(ts("2026-03-01T10:07:30Z")),
            Some(ts("2026-03-01T10:05:00Z"))
        );
        assert_eq!(
            s.last_at_or_before(ts("2026-03-01T10:05:00Z")),
            Some(ts("2026-03-01T10:05:00Z"))
        );
        assert_eq!(s.instant(0), None);
    }

    #[test]
    fn cron_is_evaluated_in_the_schedule_time_zone() {
        let s = parse("0 2 * * *", Some("Asia/Tokyo"));
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-01T17:00:00Z"))
        );
    }

    #[test]
    fn cron_nicknames_and_names_are_accepted() {
        let s = parse("@hourly", None);
        assert_eq!(
            s.next_after(ts("2026-01-01T00:10:00Z")),
            Some(ts("2026-01-01T01:00:00Z"))
        );
        let s = parse("0 9 * * MON", None);
        // 2026-01-05 is a Monday.
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-01-05T09:00:00Z"))
        );
    }

    #[test]
    fn cron_fixed_time_in_spring_forward_gap_runs_once_when_the_gap_ends() {
        // New York, 2026-03-08: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist.
        let s = parse("30 2 * * *", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z",
                "2026-03-08T07:00:00Z",
                "2026-03-09T06:30:00Z"
            ]
        );
    }

    #[test]
    fn cron_run_carried_over_a_gap_is_found_from_exactly_its_instant() {
        let s = parse("30 2 * * *", Some("America/New_York"));
        let carried = ts("2026-03-08T07:00:00Z");
        assert_eq!(s.first_at_or_after(carried), Some(carried));
        assert_eq!(s.last_at_or_before(ts("2026-03-08T07:20:00Z")), Some(carried));
    }

    #[test]
    fn cron_fixed_time_in_fall_back_overlap_runs_once_at_the_earlier_instant() {
        // New York, 2026-11-01: 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
        let s = parse("30 1 * * *", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-10-31T00:00:00Z", 3),
            [
                "2026-10-31T05:30:00Z",
                "2026-11-01T05:30:00Z",
                "2026-11-02T06:30:00Z"
            ]
        );
        assert_eq!(
            s.count_between(ts("2026-11-01T00:00:00Z"), ts("2026-11-02T00:00:00Z")),
            1
        );
    }

    #[test]
    fn cron_interval_runs_every_real_interval_through_fall_back() {
        let s = parse("*/30 * * * *", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-11-01T04:45:00Z", 5),
            [
                "2026-11-01T05:00:00Z", // 01:00 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:00:00Z", // 01:00 EST
                "2026-11-01T06:30:00Z", // 01:30 EST
                "2026-11-01T07:00:00Z", // 02:00 EST
            ]
        );
        // Also when asked from inside the repeated hour's second pass.
        assert_eq!(
            s.next_after(ts("2026-11-01T06:10:00Z")),
            Some(ts("2026-11-01T06:30:00Z"))
        );
    }

    #[test]
    fn cron_interval_skips_the_nonexistent_hour_in_spring_forward() {
        let s = parse("*/30 * * * *", Some("America/New_York"));
        assert_eq!(
            next_n(&s, "2026-03-08T06:15:00Z", 3),
            [
                "2026-03-08T06:30:00Z", // 01:30 EST
                "2026-03-08T07:00:00Z", // 03:00 EDT
                "2026-03-08T07:30:00Z", // 03:30 EDT
            ]
        );
    }

    #[test]
    fn cron_daylight_saving_in_berlin() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 2026-10-25: 03:00 CEST goes back to 02:00 CET.
        let s = parse("30 2 * * *", Some("Europe/Berlin"));
        assert_eq!(
            s.next_after(ts("2026-03-28T12:00:00Z")),
            Some(ts("2026-03-29T01:00:00Z"))
        );
        assert_eq!(
            next_n(&s, "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
        );
        let hourly = parse("0 * * * *", Some("Europe/Berlin"));
        // Every real hour, including both 02:00s of 2026-10-25.
        assert_eq!(
            hourly.count_between(ts("2026-10-24T22:00:00Z"), ts("2026-10-25T04:00:00Z")),
            6
        );
    }

    proptest! {
        #[test]
        fn next_after_is_strictly_increasing_and_agrees_with_first_at_or_after(
            expr in prop::sample::select(vec![
                "*/5 * * * *", "30 2 * * *", "30 1 * * *", "0 * * * *", "15,45 1-3 * * 0",
                "0 0 29 2 *", "R/2026-01-31T02:30:00/P1M", "R/2026-03-07T02:30:00/P1D",
                "R10/2026-10-31T01:30:00/PT7H", "R/2025-12-31T23:59:59.5Z/PT45S", "R/2026-01-01T00:00:00/P1DT12H",
            ]),
            zone in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin", "Australia/Lord_Howe"]),
            secs in 1_767_225_600i64..1_830_297_600i64, // 2026-01-01 .. 2028-01-01
            nanos in 0i32..1_000_000_000,
        ) {
            let s = Schedule::parse(expr, Some(zone), ts("2026-01-01T00:00:00Z")).unwrap();
            let t = Timestamp::new(secs, nanos).unwrap();
            let mut last = t;
            for _ in 0..4 {
                let Some(next) = s.next_after(last) else { break };
                prop_assert!(next > last, "{expr} in {zone}: next_after({last}) = {next}");
                let just_after = last.checked_add(jiff::SignedDuration::from_nanos(1)).unwrap();
                prop_assert_eq!(s.first_at_or_after(just_after), Some(next));
                prop_assert_eq!(s.first_at_or_after(next), Some(next));
                prop_assert_eq!(s.last_at_or_before(next), Some(next));
                let just_before = next.checked_sub(jiff::SignedDuration::from_nanos(1)).unwrap();
                if last != t {
                    prop_assert_eq!(s.last_at_or_before(just_before), Some(last));
                }
                last = next;
            }
        }
    }
}
