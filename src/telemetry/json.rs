//! A JSON-lines event formatter for `--log-format json`: one object per event with `timestamp`, `level`,
//! `target`, `message` and the event's fields, written straight into the line (escaping as it goes) with
//! no intermediate values. The decision log writes one event per request, so this sits on the request
//! path: tracing-subscriber's general JSON formatter cost about a quarter of a request's instructions
//! (docs/benchmarks.md); this one a small fraction of that. Span fields are not written: every event that
//! needs the request id carries it.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The formatter.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let meta = event.metadata();
        w.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut w, SystemTime::now())?;
        write!(w, "\",\"level\":\"{}\",\"target\":", meta.level())?;
        write_str(&mut w, meta.target())?;
        let mut visitor = Fields {
            w: &mut w,
            result: Ok(()),
        };
        event.record(&mut visitor);
        visitor.result?;
        w.write_str("}\n")
    }
}

struct Fields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn key(&mut self, field: &Field) -> fmt::Result {
        self.w.write_char(',')?;
        write_str(self.w, field.name())?;
        self.w.write_char(':')
    }

    fn put(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        if self.result.is_ok() {
            self.result = self.key(field).and_then(|()| value(self.w));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, |w| write_str(w, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, |w| w.write_str(if value { "true" } else { "false" }));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        if value.is_finite() {
            self.put(field, |w| write!(w, "{value}"));
        } else {
            self.put(field, |w| write_str(w, &value.to_string()));
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // `%x` fields arrive here as Debug wrappers of Display: format them escaped, in place.
        self.put(field, |w| {
            w.write_char('"')?;
            write!(Escape(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// Writes a JSON string literal.
fn write_str(w: &mut Writer<'_>, s: &str) -> fmt::Result {
    w.write_char('"')?;
    Escape(w).write_str(s)?;
    w.write_char('"')
}

/// Escapes what it is given for the inside of a JSON string.
struct Escape<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escape<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(needs_escape) {
            return self.0.write_str(s);
        }
        let mut out = Vec::with_capacity(s.len() + 8);
        escape_into(&mut out, s);
        self.0.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Appends `s` escaped for the inside of a JSON string (the common case, nothing to escape, is one copy).
fn escape_into(out: &mut Vec<u8>, s: &str) {
    if !s.bytes().any(needs_escape) {
        out.extend_from_slice(s.as_bytes());
        return;
    }
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&s.as_bytes()[start..i]);
        if escaped.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escaped);
        }
        start = i + 1;
    }
    out.extend_from_slice(&s.as_bytes()[start..]);
}

/// Appends a JSON string literal.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    escape_into(out, s);
    out.push(b'"');
}

/// Appends `,"key":` (the key is a plain identifier).
pub(crate) fn push_key(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// Appends the opening every line has, as [`JsonLines`] writes it, up to the first field after
/// `message`: `{"timestamp":"…","level":"INFO","target":"…","message":"…"`.
pub(crate) fn push_line_start(out: &mut Vec<u8>, now: SystemTime, target: &str, message: &str) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    out.extend_from_slice(&timestamp(now));
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"target\":");
    push_str(out, target);
    out.extend_from_slice(b",\"message\":");
    push_str(out, message);
}

/// RFC 3339 UTC with microseconds: the calendar date from `time`, the digits written directly rather than
/// through the formatting machinery (this runs for every log line).
fn write_timestamp(w: &mut impl fmt::Write, t: SystemTime) -> fmt::Result {
    w.write_str(std::str::from_utf8(&timestamp(t)).map_err(|_| fmt::Error)?)
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn timestamp(t: SystemTime) -> [u8; 27] {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let rem = secs % 86_400;
    let (year, month, day) = civil_date(secs);
    let mut buf = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year.clamp(0, 9999) as u64);
    put(5, 2, u64::from(month));
    put(8, 2, u64::from(day));
    put(11, 2, rem / 3600);
    put(14, 2, (rem % 3600) / 60);
    put(17, 2, rem % 60);
    put(20, 6, u64::from(d.subsec_micros()));
    buf
}

/// The UTC (year, month, day) of a time in seconds since the Unix epoch, from `time`.
fn civil_date(unix_secs: u64) -> (i32, u8, u8) {
    let t = i64::try_from(unix_secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (y, m, d) = t.to_calendar_date();
    (y, u8::from(m), d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        let mut s = String::new();
        write_timestamp(&mut s, UNIX_EPOCH + Duration::new(1_795_803_609, 880_769_300)).expect("write");
        assert_eq!(s, "2026-11-27T18:20:09.880769Z");
        s.clear();
        write_timestamp(&mut s, UNIX_EPOCH + Duration::from_secs(951_782_400)).expect("write");
        assert_eq!(s, "2000-02-29T00:00:00.000000Z");
    }

    use super::Captured as Sink;

    #[test]
    fn every_line_is_a_json_object_with_every_field_escaped() {
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let shown = "a \"quoted\"\nline\t\u{1}é";
            tracing::info!(target: "decision", request_id = "r-1", count = 7u64, neg = -3i64, ok = true, ratio = 0.5, text = shown, display = %shown, "decision");
        });
        let out = String::from_utf8(sink.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(out.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).expect("a JSON object");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "decision");
        assert_eq!(v["message"], "decision");
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(
            (
                v["count"].as_u64(),
                v["neg"].as_i64(),
                v["ok"].as_bool(),
                v["ratio"].as_f64()
            ),
            (Some(7), Some(-3), Some(true), Some(0.5))
        );
        assert_eq!(v["text"], "a \"quoted\"\nline\t\u{1}é");
        assert_eq!(v["display"], "a \"quoted\"\nline\t\u{1}é");
        assert!(v["timestamp"].as_str().expect("timestamp").ends_with('Z'));
    }
}

/// An in-memory writer for tests: clones share what was written.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(pub(crate) std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
