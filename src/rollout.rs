//! Rollout and verify: trigger the planned moves through IoT Hub, wave by wave, never faster than the
//! plan, with DPS's retry rules applied to our own calls and resumable after any stop; then ask DPS where
//! each device landed.
//!
//! The calls (IoT Hub service REST API 2021-04-12; DPS service API 2021-10-01):
//! - a direct method: `POST /twins/{deviceId}/methods?api-version=2021-04-12` with `methodName`,
//!   `responseTimeoutInSeconds` and a payload naming the destination hub;
//! - a desired property: `PATCH /twins/{deviceId}?api-version=2021-04-12`, `If-Match: *`, the dotted path
//!   as nested objects;
//! - the registration state: `GET /registrations/{registrationId}?api-version=2021-10-01` on the DPS host.
//!
//! Outcomes and retries: 200 (a method's device answered, whatever its status) or 204 is `triggered`;
//! 429 waits for Retry-After (never less), or backs off as for a 5xx without one; a 5xx or a failed
//! connection backs off exponentially with jitter from at least 5 s, up to `max_tries`, then `failed`;
//! 404 with errorCode 404103 (device not online) is `offline`; another 404 is `not_found`; any other 4xx
//! is `failed` at once. Each hub is called at most `rate` times a second and no device before its
//! not-before time. Progress is appended to a state file line by line (a kill loses at most the calls in
//! flight: one per hub); a rerun skips `triggered`, `not_found` and `skipped` devices and retries the rest.
//! The HTTP transport is the caller's ([`Transport`]); this module holds the rules.

pub mod sas;

use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub use sas::Credentials;

/// IoT Hub service API version of the trigger calls.
pub const IOTHUB_API_VERSION: &str = "2021-04-12";
/// DPS service API version of the registration-state lookup.
pub const DPS_API_VERSION: &str = "2021-10-01";

/// The latest not-before time a schedule may hold: ten years, in seconds. A larger value is a located
/// error (it could only be a mistake, and would overflow the clock arithmetic).
pub const MAX_NOT_BEFORE_S: u64 = 10 * 365 * 86_400;
/// The longest wait a `Retry-After` may ask for by default (five minutes): a longer one (IoT Hub and DPS
/// throttle by the second and the minute) is treated as this and reported.
pub const DEFAULT_MAX_RETRY_AFTER_S: u64 = 300;
/// The longest back-off after a 5xx or no answer, whatever the number of tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The deadline of one call by default, connect, head and body together: a direct method's 30 s
/// response timeout, and as long again for the network and the service.
pub const DEFAULT_CALL_TIMEOUT_S: u64 = 60;
/// The most of a response body read; past it the body is left unread (the status still decides).
pub const REPLY_BODY_LIMIT: usize = 1 << 20;

/// One row of a schedule (`plan --schedule`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Registration id.
    pub registration_id: String,
    /// The hub it leaves (where it is triggered).
    pub from_hub: String,
    /// The hub the plan moves it to.
    pub to_hub: String,
    /// Wave, from 1.
    pub wave: u32,
    /// Seconds from the rollout's start before which it is not triggered.
    pub not_before_s: u64,
    /// The device id (the registration id unless the schedule says otherwise).
    pub device_id: String,
}

/// A schedule as read: its rows, each registration id once, and how many rows repeated an id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    /// The rows, in file order; a registration id listed again is kept at its first row only.
    pub entries: Vec<Entry>,
    /// Rows dropped because their registration id was listed before.
    pub duplicates: u64,
}

/// Reads a schedule: `registration_id,from_hub,to_hub,wave,not_before_s[,device_id]`. A device listed
/// several times is kept once (its first row) and the others counted; a `not_before_s` beyond
/// [`MAX_NOT_BEFORE_S`] is a located error.
pub fn read_schedule(path: &Path) -> Result<Schedule, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = csv::ReaderBuilder::new()
        .flexible(true)
        .from_reader(std::io::BufReader::new(file));
    let headers = r.headers().map_err(|e| format!("{}: {e}", path.display()))?.clone();
    let want = ["registration_id", "from_hub", "to_hub", "wave", "not_before_s"];
    if headers.len() < 5 || headers.iter().take(5).ne(want) {
        return Err(format!(
            "{}: a schedule's header is `registration_id,from_hub,to_hub,wave,not_before_s` (plan --schedule writes it)",
            path.display()
        ));
    }
    let has_device_id = headers.get(5) == Some("device_id");
    let mut out = Schedule::default();
    let mut seen = crate::hashing::SeenIds::default();
    for (i, rec) in r.records().enumerate() {
        let rec = rec.map_err(|e| format!("{}: {e}", path.display()))?;
        let row = i + 2;
        let f = |k: usize| rec.get(k).map(str::trim).filter(|s| !s.is_empty());
        let bad = || {
            format!(
                "{}, row {row}: five fields: id, hubs, wave, not_before_s",
                path.display()
            )
        };
        let (Some(id), Some(from), Some(to)) = (f(0), f(1), f(2)) else {
            return Err(bad());
        };
        let wave = f(3).and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let not_before_s = f(4)
            .and_then(|w| w.parse::<u64>().ok())
            .filter(|s| *s <= MAX_NOT_BEFORE_S)
            .ok_or_else(|| {
                format!(
                    "{}, row {row}: not_before_s `{}` is not a whole number of seconds from 0 to {MAX_NOT_BEFORE_S} (ten years)",
                    path.display(),
                    f(4).unwrap_or("")
                )
            })?;
        if !seen.first(id) {
            out.duplicates += 1;
            continue;
        }
        out.entries.push(Entry {
            registration_id: id.to_owned(),
            from_hub: from.to_ascii_lowercase(),
            to_hub: to.to_ascii_lowercase(),
            wave,
            not_before_s,
            device_id: has_device_id.then(|| f(5)).flatten().unwrap_or(id).to_owned(),
        });
    }
    Ok(out)
}

/// How a device is told to re-provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A direct method of this name.
    Method(String),
    /// A desired property at this dotted path.
    Desired(Vec<String>),
}

impl std::str::FromStr for Trigger {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("method", name)) if !name.is_empty() => Ok(Trigger::Method(name.to_owned())),
            Some(("desired", path)) if !path.is_empty() && path.split('.').all(|p| !p.is_empty()) => {
                Ok(Trigger::Desired(path.split('.').map(str::to_owned).collect()))
            }
            _ => Err(format!("`{s}`: use method:NAME or desired:PATH (dotted)")),
        }
    }
}

/// An HTTP request to a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// `POST`, `PATCH` or `GET`.
    pub method: &'static str,
    /// The service host (the base URL is `https://{host}` unless the transport overrides it).
    pub host: String,
    /// Path and query.
    pub path: String,
    /// JSON body.
    pub body: Option<String>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
}

/// A service's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status.
    pub status: u16,
    /// The Retry-After header, in seconds ([`retry_after`]; not capped yet).
    pub retry_after: Option<u64>,
    /// The body, as much of it as was read (at most [`REPLY_BODY_LIMIT`], within the call's deadline;
    /// empty when it could not be read): only read for error codes and registration states, never for
    /// what the status already says.
    pub body: String,
}

/// A `Retry-After` value in seconds from `now`: delay-seconds (a number too large for 64 bits is
/// `u64::MAX`), or an HTTP-date (RFC 9110 section 10.2.3; a date in the past is 0). Junk is `None` (then
/// the back-off rules apply, as for no Retry-After).
pub fn retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let v = value.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(v.parse::<u64>().unwrap_or(u64::MAX));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_secs()))
}

/// Sends calls. `Err` is a failure to get any answer (connection refused, timeout): retried as a 5xx.
pub trait Transport: Sync {
    /// Sends one call with this `Authorization` value.
    fn send(&self, call: &Call, authorization: &str) -> Result<Reply, String>;
}

/// Pace and retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Calls per second per hub, at most.
    pub rate_per_s: f64,
    /// Tries before a 5xx or a failed connection is `failed`.
    pub max_tries: u32,
    /// The first back-off after a 5xx (at least 5 s, DPS's rule).
    pub backoff: Duration,
    /// A direct method's response timeout.
    pub method_timeout_s: u32,
    /// The longest wait a `Retry-After` may ask for; a longer one is treated as this and reported.
    pub max_retry_after: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rate_per_s: 10.0,
            max_tries: 5,
            backoff: Duration::from_secs(5),
            method_timeout_s: 30,
            max_retry_after: Duration::from_secs(DEFAULT_MAX_RETRY_AFTER_S),
        }
    }
}

/// What happened to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Told to re-provision.
    Triggered,
    /// Not connected (404103): try again in a later run.
    Offline,
    /// Gave up: a 4xx, or 5xx and failed connections `max_tries` times.
    Failed,
    /// The hub does not know the device (404).
    NotFound,
    /// No connection string for the hub it leaves.
    Skipped,
}

impl Outcome {
    /// The name in output and state.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Triggered => "triggered",
            Outcome::Offline => "offline",
            Outcome::Failed => "failed",
            Outcome::NotFound => "not_found",
            Outcome::Skipped => "skipped",
        }
    }

    /// Whether a rerun leaves the device alone. `skipped` is not: no call was made, and a rerun may bring
    /// the connection string that was missing.
    pub fn is_final(self) -> bool {
        matches!(self, Outcome::Triggered | Outcome::NotFound)
    }
}

/// The state file: a header line with the rollout's start, then one line per outcome, appended as work
/// proceeds. On open it is locked for the run (`NAME.lock` beside it, so a second run on the same state
/// is refused instead of triggering every device again), read, and rewritten compacted, atomically
/// (through `NAME.tmp`, a name no other state file shares). A file whose first line is not a state header
/// is never adopted (it may be an operator's file, or the schedule itself); corrupt lines other than a
/// torn last one (a run killed mid-write) stop the run unless it is told to go on.
pub struct State {
    path: PathBuf,
    /// When the rollout started, seconds since the Unix epoch: not-before times count from here.
    pub started_unix: f64,
    /// The last outcome of every device that has one.
    pub outcomes: HashMap<String, Outcome>,
    file: Option<std::fs::File>,
    /// The lock held for the run (released when the state is dropped, or the process ends).
    _lock: Option<std::fs::File>,
}

/// What opening a state file found beside the outcomes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateNotes {
    /// A last line without its newline (a run stopped while writing it) was ignored.
    pub torn_last_line: bool,
    /// Line numbers (from 1) of corrupt lines that were skipped (with `accept_corrupt`).
    pub corrupt_lines: Vec<usize>,
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    started_unix: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outcome: Option<Outcome>,
}

fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `DIR/NAME` + `suffix`: a sibling named after the whole file name (`NAME.a` and `NAME.b` never share one).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(suffix);
    path.with_file_name(name)
}

/// Line numbers for a message: the first ten, then how many more.
fn line_list(lines: &[usize]) -> String {
    let mut text = lines
        .iter()
        .take(10)
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if lines.len() > 10 {
        text.push_str(&format!(" and {} more", lines.len() - 10));
    }
    text
}

impl State {
    /// Locks, reads (or starts) and compacts a state file. `accept_corrupt`: skip corrupt lines (they are
    /// reported in the notes) instead of refusing the file.
    pub fn open(path: &Path, accept_corrupt: bool) -> Result<(State, StateNotes), String> {
        let shown = path.display();
        let lock_path = sibling(path, ".lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("{}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "{shown} is in use by another rollout (it holds {}): wait for it to finish, or give another --state",
                    lock_path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(format!("{}: {e}", lock_path.display())),
        }
        let mut started = None;
        let mut outcomes = HashMap::new();
        let mut notes = StateNotes::default();
        match std::fs::read(path) {
            Ok(bytes) if !bytes.is_empty() => {
                let torn = !bytes.ends_with(b"\n");
                let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
                let last = lines.len() - usize::from(!torn) - 1;
                let parse = |l: &[u8]| serde_json::from_slice::<Line>(l).ok();
                match lines.first().and_then(|l| parse(l)).and_then(|l| l.started_unix) {
                    Some(s) => started = Some(s),
                    None => {
                        return Err(format!(
                            "{shown} is not a rollout state file (its first line is no state header): refusing to overwrite it; give a new --state, or the one an earlier rollout wrote"
                        ));
                    }
                }
                for (i, line) in lines.iter().enumerate().skip(1) {
                    // A blank line holds no device: nothing is lost by passing over it.
                    if line.is_empty() {
                        continue;
                    }
                    match parse(line) {
                        Some(Line {
                            id: Some(id),
                            outcome: Some(o),
                            ..
                        }) => {
                            outcomes.insert(id, o);
                        }
                        _ if i == last && torn => notes.torn_last_line = true,
                        _ => notes.corrupt_lines.push(i + 1),
                    }
                }
                if !notes.corrupt_lines.is_empty() && !accept_corrupt {
                    return Err(format!(
                        "{shown}: {} corrupt line(s) (line {}): their devices would be triggered again; repair the file, or rerun with --accept-corrupt-state to go on without them",
                        notes.corrupt_lines.len(),
                        line_list(&notes.corrupt_lines)
                    ));
                }
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        let mut state = State {
            path: path.to_owned(),
            started_unix: started.unwrap_or_else(now_unix),
            outcomes,
            file: None,
            _lock: Some(lock),
        };
        state.compact()?;
        Ok((state, notes))
    }

    /// What a report says of the notes (empty when there is nothing to say).
    pub fn describe(notes: &StateNotes, path: &Path) -> Vec<String> {
        let mut out = Vec::new();
        if notes.torn_last_line {
            out.push(format!(
                "{}: ignored a torn last line (a run stopped while writing it; that device is tried again)",
                path.display()
            ));
        }
        if !notes.corrupt_lines.is_empty() {
            out.push(format!(
                "{}: skipped {} corrupt line(s) (line {}); their devices are tried again",
                path.display(),
                notes.corrupt_lines.len(),
                line_list(&notes.corrupt_lines)
            ));
        }
        out
    }

    /// Rewrites the file from memory (write a temporary file named after the state file, then rename over
    /// the old one), and keeps it open for appending.
    fn compact(&mut self) -> Result<(), String> {
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        let tmp = sibling(&self.path, ".tmp");
        {
            let mut w = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(err)?);
            let header = Line {
                started_unix: Some(self.started_unix),
                id: None,
                outcome: None,
            };
            writeln!(w, "{}", serde_json::to_string(&header).unwrap_or_default()).map_err(err)?;
            let mut ids: Vec<(&String, &Outcome)> = self.outcomes.iter().collect();
            ids.sort();
            for (id, o) in ids {
                let line = Line {
                    started_unix: None,
                    id: Some(id.clone()),
                    outcome: Some(*o),
                };
                writeln!(w, "{}", serde_json::to_string(&line).unwrap_or_default()).map_err(err)?;
            }
            w.flush().map_err(err)?;
            w.get_ref().sync_all().map_err(err)?;
        }
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&self.path).map_err(err)?);
        Ok(())
    }

    /// Records an outcome: one line, written whole.
    pub fn record(&mut self, id: &str, outcome: Outcome) -> Result<(), String> {
        self.outcomes.insert(id.to_owned(), outcome);
        let line = Line {
            started_unix: None,
            id: Some(id.to_owned()),
            outcome: Some(outcome),
        };
        let mut text = serde_json::to_string(&line).unwrap_or_default();
        text.push('\n');
        match self.file.as_mut() {
            Some(f) => f
                .write_all(text.as_bytes())
                .map_err(|e| format!("{}: {e}", self.path.display())),
            None => Ok(()),
        }
    }

    /// Rewrites the file compacted (at the end of a run).
    pub fn finish(&mut self) -> Result<(), String> {
        self.compact()
    }
}

/// Counts per outcome, and what is left.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Triggered.
    pub triggered: u64,
    /// Offline.
    pub offline: u64,
    /// Failed.
    pub failed: u64,
    /// Not found.
    pub not_found: u64,
    /// Skipped.
    pub skipped: u64,
    /// Not yet final (offline, failed, skipped, or not reached): a rerun tries them again.
    pub remaining: u64,
    /// Hosts that refused the credentials (401, 403) and were not called further.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stopped: Vec<String>,
    /// What the operator should know that did not stop anything (Retry-After values over the cap).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

impl Summary {
    /// The counts of a schedule's devices in a state.
    pub fn of(entries: &[Entry], state: &State) -> Summary {
        let mut s = Summary::default();
        for e in entries {
            match state.outcomes.get(&e.registration_id) {
                Some(Outcome::Triggered) => s.triggered += 1,
                Some(Outcome::Offline) => s.offline += 1,
                Some(Outcome::Failed) => s.failed += 1,
                Some(Outcome::NotFound) => s.not_found += 1,
                Some(Outcome::Skipped) => s.skipped += 1,
                None => {}
            }
        }
        s.remaining = entries.len() as u64 - s.triggered - s.not_found;
        s
    }
}

/// The trigger call for a device, on the hub it leaves.
pub fn trigger_call(e: &Entry, trigger: &Trigger, settings: &Settings) -> Call {
    let device = percent_encoding::utf8_percent_encode(&e.device_id, percent_encoding::NON_ALPHANUMERIC).to_string();
    let payload = json!({ "toHub": e.to_hub, "fromHub": e.from_hub, "wave": e.wave });
    match trigger {
        Trigger::Method(name) => Call {
            method: "POST",
            host: e.from_hub.clone(),
            path: format!("/twins/{device}/methods?api-version={IOTHUB_API_VERSION}"),
            body: Some(
                json!({
                    "methodName": name,
                    "responseTimeoutInSeconds": settings.method_timeout_s,
                    "payload": payload,
                })
                .to_string(),
            ),
            headers: vec![("Content-Type", "application/json".to_owned())],
        },
        Trigger::Desired(path) => {
            let mut value = payload;
            for key in path.iter().rev() {
                let mut m = Map::new();
                m.insert(key.clone(), value);
                value = Value::Object(m);
            }
            Call {
                method: "PATCH",
                host: e.from_hub.clone(),
                path: format!("/twins/{device}?api-version={IOTHUB_API_VERSION}"),
                body: Some(json!({ "properties": { "desired": value } }).to_string()),
                headers: vec![
                    ("Content-Type", "application/json".to_owned()),
                    ("If-Match", "*".to_owned()),
                ],
            }
        }
    }
}

/// What to do after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Done, with this outcome.
    Done(Outcome),
    /// Try again after this long.
    Retry(Duration),
}

/// The rules: what an answer means for a device that has been tried `tries` times.
pub fn classify(reply: &Result<Reply, String>, tries: u32, settings: &Settings, jitter: f64) -> Next {
    let backoff = || {
        if tries >= settings.max_tries {
            Next::Done(Outcome::Failed)
        } else {
            // 5 s, 10 s, 20 s, … and up to a quarter more, so devices that failed together spread out; at
            // most MAX_BACKOFF however many tries are allowed (2^tries overflows a Duration early).
            let exp = i32::try_from(tries.saturating_sub(1)).unwrap_or(i32::MAX).min(64);
            let secs = settings.backoff.as_secs_f64() * 2f64.powi(exp) * (1.0 + 0.25 * jitter.clamp(0.0, 1.0));
            Next::Retry(Duration::try_from_secs_f64(secs).map_or(MAX_BACKOFF, |d| d.min(MAX_BACKOFF)))
        }
    };
    match reply {
        Err(_) => backoff(),
        Ok(r) => match r.status {
            200 | 204 => Next::Done(Outcome::Triggered),
            429 => match r.retry_after {
                Some(s) if tries < settings.max_tries.max(1).saturating_mul(4) => {
                    Next::Retry(Duration::from_secs(s.max(1)).min(settings.max_retry_after.max(Duration::from_secs(1))))
                }
                Some(_) => Next::Done(Outcome::Failed),
                None => backoff(),
            },
            404 if error_code(&r.body) == Some(404_103) => Next::Done(Outcome::Offline),
            // IoT Hub gave up waiting for the device's method answer: the device is not there.
            504 if error_code(&r.body) == Some(504_101) => Next::Done(Outcome::Offline),
            404 => Next::Done(Outcome::NotFound),
            500..=599 => backoff(),
            _ => Next::Done(Outcome::Failed),
        },
    }
}

/// IoT Hub's numeric error code: `errorCode` at the top, or inside the `Message` JSON text.
pub fn error_code(body: &str) -> Option<u64> {
    let v: Value = serde_json::from_str(body).ok()?;
    let direct = |v: &Value| {
        v.get("errorCode")
            .or_else(|| v.get("ErrorCode"))
            .and_then(Value::as_u64)
    };
    direct(&v).or_else(|| {
        let inner: Value = serde_json::from_str(v.get("Message")?.as_str()?).ok()?;
        direct(&inner)
    })
}

/// One unit of work in a hub's queue, earliest first.
#[derive(Debug, PartialEq, Eq)]
struct Job {
    due: Instant,
    index: usize,
    tries: u32,
}

impl Ord for Job {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.due.cmp(&self.due).then_with(|| other.index.cmp(&self.index))
    }
}

impl PartialOrd for Job {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// How a host's queue ended, beside the outcomes.
#[derive(Debug, Default)]
struct Drained {
    /// Why the host was not called further (it refused the credentials).
    stopped: Option<String>,
    /// `Retry-After` values over the cap: how many, and the largest asked for.
    capped: Option<(u64, u64)>,
}

impl Drained {
    /// The note on capped `Retry-After` values, if any.
    fn capped_note(&self, host: &str, settings: &Settings) -> Option<String> {
        let (n, largest) = self.capped?;
        Some(format!(
            "{host} asked to wait up to {largest} s (Retry-After) {n} time(s): waited {} s each time, the cap (--max-retry-after)",
            settings.max_retry_after.as_secs()
        ))
    }
}

/// Works through a queue of calls for one service host: never before a job is due, never more than the
/// rate, retries as [`classify`] says. `record` is told each final outcome.
fn drain(
    jobs: Vec<(usize, Instant)>,
    make: &dyn Fn(usize) -> Call,
    auth: &Credentials,
    transport: &dyn Transport,
    settings: &Settings,
    record: &dyn Fn(usize, Outcome, Option<&Reply>),
) -> Drained {
    let mut end = Drained::default();
    let mut queue: BinaryHeap<Job> = jobs
        .into_iter()
        .map(|(index, due)| Job { due, index, tries: 0 })
        .collect();
    let spacing = Duration::from_secs_f64(1.0 / settings.rate_per_s.max(0.001));
    let mut next_slot = Instant::now();
    let mut seq: u64 = 0;
    while let Some(mut job) = queue.pop() {
        let at = job.due.max(next_slot);
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        next_slot = Instant::now() + spacing;
        job.tries += 1;
        let call = make(job.index);
        let expiry = now_unix() as u64 + 3600;
        let reply = transport.send(&call, &auth.token(expiry));
        seq = seq.wrapping_add(1);
        let jitter = crate::hashing::unit_interval(crate::hashing::mix64(seq ^ (job.index as u64) << 20));
        let status = reply.as_ref().map_or(0, |r| r.status);
        if let Ok(Reply {
            status: 429,
            retry_after: Some(asked),
            ..
        }) = &reply
            && *asked > settings.max_retry_after.as_secs()
        {
            let (n, largest) = end.capped.get_or_insert((0, 0));
            *n += 1;
            *largest = (*largest).max(*asked);
        }
        match classify(&reply, job.tries, settings, jitter) {
            Next::Done(o) => record(job.index, o, reply.as_ref().ok()),
            Next::Retry(after) => {
                // A 429 throttles the whole host, not one device: nothing goes to it before Retry-After.
                if status == 429 {
                    next_slot = next_slot.max(Instant::now() + after);
                }
                queue.push(Job {
                    due: Instant::now() + after,
                    ..job
                })
            }
        }
        // Wrong or expired credentials would fail every device the same way: stop this host.
        if matches!(status, 401 | 403) {
            end.stopped = Some(format!(
                "{} refused the credentials ({status}): stopped calling it; check its connection string",
                call.host
            ));
            return end;
        }
    }
    end
}

/// Triggers every device of the schedule that is not final yet, each on the hub it leaves, one thread per
/// hub. Devices whose hub has no credentials are `skipped`.
pub fn rollout(
    entries: &[Entry],
    hubs: &[Credentials],
    trigger: &Trigger,
    settings: &Settings,
    state: &mut State,
    transport: &dyn Transport,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<Summary, String> {
    // Not-before times count from the first run's start. A rerun long after it would find every remaining
    // device due at once, all hubs together: the timeline is shifted so the earliest remaining device is
    // due now and the rest keep the plan's spacing.
    let elapsed = (now_unix() - state.started_unix).max(0.0) as u64;
    let remaining = |e: &&Entry| !state.outcomes.get(&e.registration_id).is_some_and(|o| o.is_final());
    let earliest = entries
        .iter()
        .filter(remaining)
        .map(|e| e.not_before_s)
        .min()
        .unwrap_or(0);
    let offset = elapsed.min(earliest);
    let now = Instant::now();
    let mut per_hub: BTreeMap<&str, Vec<(usize, Instant)>> = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if !remaining(&e) {
            continue;
        }
        if !hubs.iter().any(|h| h.host == e.from_hub) {
            skipped.push(i);
            continue;
        }
        per_hub
            .entry(e.from_hub.as_str())
            .or_default()
            .push((i, now + Duration::from_secs(e.not_before_s - offset)));
    }
    for i in skipped {
        state.record(&entries[i].registration_id, Outcome::Skipped)?;
    }
    let total: u64 = per_hub.values().map(|v| v.len() as u64).sum();
    let shared = Mutex::new((std::mem::replace(state, State::detached(state)), None::<String>, 0u64));
    let stopped: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let notes: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (host, jobs) in per_hub {
            let Some(auth) = hubs.iter().find(|h| h.host == host) else {
                continue;
            };
            let (shared, stopped, notes) = (&shared, &stopped, &notes);
            scope.spawn(move || {
                let make = |i: usize| trigger_call(&entries[i], trigger, settings);
                let record = |i: usize, o: Outcome, _: Option<&Reply>| {
                    let mut guard = shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    let (st, err, done) = &mut *guard;
                    if let Err(e) = st.record(&entries[i].registration_id, o) {
                        *err = Some(e);
                    }
                    *done += 1;
                    progress(*done, total);
                };
                let end = drain(jobs, &make, auth, transport, settings, &record);
                if let Ok(mut s) = stopped.lock() {
                    s.extend(end.stopped.clone());
                }
                if let (Some(note), Ok(mut n)) = (end.capped_note(host, settings), notes.lock()) {
                    n.push(note);
                }
            });
        }
    });
    let (done, err, _) = shared.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    *state = done;
    if let Some(e) = err {
        return Err(e);
    }
    state.finish()?;
    let mut summary = Summary::of(entries, state);
    summary.stopped = stopped.into_inner().unwrap_or_default();
    summary.notes = notes.into_inner().unwrap_or_default();
    summary.notes.sort();
    Ok(summary)
}

impl State {
    /// A placeholder while the real state is shared with the workers.
    fn detached(from: &State) -> State {
        State {
            path: from.path.clone(),
            started_unix: from.started_unix,
            outcomes: HashMap::new(),
            file: None,
            _lock: None,
        }
    }
}

/// Where a device landed, by DPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// On the hub the plan moves it to.
    Landed,
    /// Still on the hub it leaves.
    Pending,
    /// On another hub: the policy and the plan disagree.
    Elsewhere,
    /// DPS has no registration (404) or did not answer.
    Unknown,
}

impl Verdict {
    /// The name in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Landed => "landed",
            Verdict::Pending => "pending",
            Verdict::Elsewhere => "elsewhere",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One device's registration state, as DPS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landing {
    /// The verdict.
    pub verdict: Verdict,
    /// `assignedHub`.
    pub assigned_hub: String,
    /// `status`.
    pub status: String,
    /// `substatus`.
    pub substatus: String,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Where each device of the schedule is, in its order.
    pub landings: Vec<Landing>,
    /// Why DPS was not asked further (it refused the credentials).
    pub stopped: Option<String>,
    /// What the operator should know that did not stop anything (Retry-After values over the cap).
    pub notes: Vec<String>,
}

/// Asks DPS where every device of the schedule is, at most `rate` lookups a second, with the same retry
/// rules. The lookups count against the DPS quota.
pub fn verify(entries: &[Entry], dps: &Credentials, settings: &Settings, transport: &dyn Transport) -> Verified {
    let results: Mutex<Vec<Option<Landing>>> = Mutex::new(vec![None; entries.len()]);
    let now = Instant::now();
    let jobs: Vec<(usize, Instant)> = (0..entries.len()).map(|i| (i, now)).collect();
    let make = |i: usize| Call {
        method: "GET",
        host: dps.host.clone(),
        path: format!(
            "/registrations/{}?api-version={DPS_API_VERSION}",
            percent_encoding::utf8_percent_encode(&entries[i].registration_id, percent_encoding::NON_ALPHANUMERIC)
        ),
        body: None,
        headers: Vec::new(),
    };
    let record = |i: usize, o: Outcome, reply: Option<&Reply>| {
        let landing = landing(&entries[i], o, reply);
        if let Ok(mut r) = results.lock() {
            r[i] = Some(landing);
        }
    };
    let end = drain(jobs, &make, dps, transport, settings, &record);
    let notes = end.capped_note(&dps.host, settings).into_iter().collect();
    let landings = results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|l| {
            l.unwrap_or(Landing {
                verdict: Verdict::Unknown,
                assigned_hub: String::new(),
                status: String::new(),
                substatus: String::new(),
            })
        })
        .collect();
    Verified {
        landings,
        stopped: end.stopped,
        notes,
    }
}

fn landing(e: &Entry, o: Outcome, reply: Option<&Reply>) -> Landing {
    let v: Value = reply
        .filter(|_| o == Outcome::Triggered)
        .and_then(|r| serde_json::from_str(&r.body).ok())
        .unwrap_or(Value::Null);
    let field = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let assigned_hub = field("assignedHub");
    let verdict = if o != Outcome::Triggered || assigned_hub.is_empty() {
        Verdict::Unknown
    } else if assigned_hub.eq_ignore_ascii_case(&e.to_hub) {
        Verdict::Landed
    } else if assigned_hub.eq_ignore_ascii_case(&e.from_hub) {
        Verdict::Pending
    } else {
        Verdict::Elsewhere
    };
    Landing {
        verdict,
        assigned_hub,
        status: field("status"),
        substatus: field("substatus"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::default()
    }

    fn reply(status: u16, retry_after: Option<u64>, body: &str) -> Result<Reply, String> {
        Ok(Reply {
            status,
            retry_after,
            body: body.to_owned(),
        })
    }

    #[test]
    fn answers_map_to_outcomes_and_retries_as_the_guidance_says() {
        let s = settings();
        assert_eq!(
            classify(&reply(200, None, "{}"), 1, &s, 0.0),
            Next::Done(Outcome::Triggered)
        );
        assert_eq!(
            classify(&reply(204, None, ""), 1, &s, 0.0),
            Next::Done(Outcome::Triggered)
        );
        assert_eq!(
            classify(&reply(429, Some(7), ""), 1, &s, 0.0),
            Next::Retry(Duration::from_secs(7)),
            "never before Retry-After"
        );
        assert_eq!(
            classify(&reply(429, None, ""), 1, &s, 0.0),
            Next::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            classify(&reply(503, None, ""), 1, &s, 0.0),
            Next::Retry(Duration::from_secs(5))
        );
        assert_eq!(
            classify(&reply(503, None, ""), 3, &s, 0.0),
            Next::Retry(Duration::from_secs(20))
        );
        assert_eq!(classify(&reply(503, None, ""), 5, &s, 0.0), Next::Done(Outcome::Failed));
        assert_eq!(
            classify(&Err("refused".into()), 1, &s, 1.0),
            Next::Retry(Duration::from_secs_f64(6.25))
        );
        let offline = r#"{"Message":"{\"errorCode\":404103,\"message\":\"The operation failed because the requested device isn't online\"}","ExceptionMessage":""}"#;
        assert_eq!(
            classify(&reply(404, None, offline), 1, &s, 0.0),
            Next::Done(Outcome::Offline)
        );
        assert_eq!(
            classify(&reply(404, None, r#"{"errorCode":404001}"#), 1, &s, 0.0),
            Next::Done(Outcome::NotFound)
        );
        assert_eq!(classify(&reply(400, None, ""), 1, &s, 0.0), Next::Done(Outcome::Failed));
        assert_eq!(
            classify(&reply(504, None, r#"{"errorCode":504101}"#), 1, &s, 0.0),
            Next::Done(Outcome::Offline),
            "the device did not answer its method in time"
        );
        assert_eq!(classify(&reply(401, None, ""), 1, &s, 0.0), Next::Done(Outcome::Failed));
    }

    #[test]
    fn trigger_calls_follow_the_rest_api() {
        let e = Entry {
            registration_id: "dev-1".into(),
            from_hub: "a.azure-devices.net".into(),
            to_hub: "b.azure-devices.net".into(),
            wave: 2,
            not_before_s: 0,
            device_id: "dev 1".into(),
        };
        let m = trigger_call(&e, &"method:reprovision".parse().expect("trigger"), &settings());
        assert_eq!(
            (m.method, m.path.as_str()),
            ("POST", "/twins/dev%201/methods?api-version=2021-04-12")
        );
        let body: Value = serde_json::from_str(m.body.as_deref().expect("body")).expect("json");
        assert_eq!(body["methodName"], "reprovision");
        assert_eq!(body["payload"]["toHub"], "b.azure-devices.net");
        let d = trigger_call(&e, &"desired:ops.reprovision".parse().expect("trigger"), &settings());
        assert_eq!(
            (d.method, d.path.as_str()),
            ("PATCH", "/twins/dev%201?api-version=2021-04-12")
        );
        assert!(d.headers.contains(&("If-Match", "*".to_owned())));
        let body: Value = serde_json::from_str(d.body.as_deref().expect("body")).expect("json");
        assert_eq!(
            body["properties"]["desired"]["ops"]["reprovision"]["toHub"],
            "b.azure-devices.net"
        );
        assert!("desired:".parse::<Trigger>().is_err() && "push:x".parse::<Trigger>().is_err());
    }

    fn temp_state(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dps-rollout-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("state.jsonl")
    }

    #[test]
    fn the_state_survives_a_torn_last_line_and_keeps_its_start() {
        let p = temp_state("torn");
        let (mut s, _) = State::open(&p, false).expect("opens");
        let started = s.started_unix;
        s.record("a", Outcome::Offline).expect("records");
        s.record("a", Outcome::Triggered).expect("records");
        s.record("b", Outcome::Failed).expect("records");
        drop(s);
        let mut text = std::fs::read_to_string(&p).expect("state");
        text.push_str("{\"id\":\"c\",\"outc");
        std::fs::write(&p, text).expect("torn");
        let (s, notes) = State::open(&p, false).expect("reopens");
        // serde_json reads an f64 back to within one unit in the last place.
        assert!((s.started_unix - started).abs() < 1e-6, "{} {started}", s.started_unix);
        assert_eq!(s.outcomes.get("a"), Some(&Outcome::Triggered));
        assert_eq!(s.outcomes.get("b"), Some(&Outcome::Failed));
        assert_eq!(s.outcomes.get("c"), None);
        assert!(notes.torn_last_line && notes.corrupt_lines.is_empty(), "{notes:?}");
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[test]
    fn a_state_file_is_locked_for_the_run_and_its_temporary_name_is_its_own() {
        let p = temp_state("lock");
        let (first, _) = State::open(&p, false).expect("opens");
        let second = State::open(&p, false).map(|_| ()).expect_err("locked");
        assert!(second.contains("in use by another rollout"), "{second}");
        drop(first);
        assert!(State::open(&p, false).is_ok(), "released when the run ends");
        // `NAME.a` and `NAME.b` used to share `NAME.tmp`.
        let (a, b) = (p.with_file_name("s.a"), p.with_file_name("s.b"));
        assert_ne!(sibling(&a, ".tmp"), sibling(&b, ".tmp"));
        assert_eq!(
            sibling(&a, ".tmp").file_name().and_then(|n| n.to_str()),
            Some("s.a.tmp")
        );
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[test]
    fn a_file_that_is_no_state_file_is_never_adopted() {
        let p = temp_state("foreign");
        for foreign in [
            "registration_id,from_hub,to_hub,wave,not_before_s\nd,a,b,1,0\n",
            "my notes\n",
            "{\"id\":\"a\",\"outcome\":\"triggered\"}\n",
        ] {
            std::fs::write(&p, foreign).expect("write");
            let e = State::open(&p, true).map(|_| ()).expect_err("refused");
            assert!(e.contains("is not a rollout state file"), "{e}");
            assert_eq!(std::fs::read_to_string(&p).expect("kept"), foreign, "left as it was");
        }
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[test]
    fn corrupt_lines_in_the_middle_stop_the_run_unless_accepted() {
        let p = temp_state("corrupt");
        let header = format!("{{\"started_unix\":{}}}\n", now_unix());
        let text = format!(
            "{header}{{\"id\":\"a\",\"outcome\":\"triggered\"}}\ngarbage\n{{\"id\":\"b\",\"outcome\":\"triggered\"}}\n{{\"id\":\"c\"\n\n{{\"id\":\"d\",\"outcome\":\"offline\"}}\n"
        );
        std::fs::write(&p, &text).expect("write");
        let e = State::open(&p, false).map(|_| ()).expect_err("refused");
        assert!(e.contains("2 corrupt line(s) (line 3, 5)"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).expect("kept"), text, "left as it was");
        let (s, notes) = State::open(&p, true).expect("accepted");
        assert_eq!(notes.corrupt_lines, vec![3, 5]);
        assert_eq!(s.outcomes.len(), 3);
        assert!(State::describe(&notes, &p)[0].contains("skipped 2 corrupt line(s) (line 3, 5)"));
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }

    #[test]
    fn numbers_from_peers_and_schedules_are_bounded() {
        let s = settings();
        // Retry-After beyond any clock: capped, no panic.
        let now = SystemTime::now();
        assert_eq!(retry_after("18446744073709551615", now), Some(u64::MAX));
        assert_eq!(retry_after("99999999999999999999999", now), Some(u64::MAX));
        assert_eq!(retry_after(" 7 ", now), Some(7));
        assert_eq!(retry_after("soon", now), None);
        assert_eq!(retry_after("-3", now), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert!(matches!(retry_after(&later, now), Some(119..=120)), "{later}");
        assert_eq!(retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(0));
        for asked in [u64::MAX, 9_999_999_999] {
            assert_eq!(
                classify(&reply(429, Some(asked), ""), 1, &s, 0.0),
                Next::Retry(Duration::from_secs(DEFAULT_MAX_RETRY_AFTER_S))
            );
        }
        // Back-off with a huge try limit: at most MAX_BACKOFF, no overflow.
        let many = Settings {
            max_tries: u32::MAX,
            ..settings()
        };
        for tries in [30, 1_100, u32::MAX - 1] {
            assert_eq!(
                classify(&reply(503, None, ""), tries, &many, 1.0),
                Next::Retry(MAX_BACKOFF)
            );
        }
        assert_eq!(
            classify(&reply(429, Some(3), ""), u32::MAX - 1, &many, 0.0),
            Next::Retry(Duration::from_secs(3))
        );
    }

    #[test]
    fn a_schedule_value_out_of_range_is_a_located_error_and_duplicates_are_counted() {
        let p = temp_state("schedule").with_file_name("schedule.csv");
        let head = "registration_id,from_hub,to_hub,wave,not_before_s\n";
        std::fs::write(&p, format!("{head}a,h1,h2,1,0\nb,h1,h2,1,18446744073709551615\n")).expect("write");
        let e = read_schedule(&p).expect_err("refused");
        assert!(e.contains("row 3: not_before_s `18446744073709551615`"), "{e}");
        std::fs::write(&p, format!("{head}a,h1,h2,1,99999999999999999999999\n")).expect("write");
        assert!(read_schedule(&p).expect_err("refused").contains("row 2: not_before_s"));
        std::fs::write(
            &p,
            format!("{head}a,h1,h2,1,0\nb,h1,h2,1,5\na,h1,h3,2,9\na,h1,h2,1,0\n"),
        )
        .expect("write");
        let s = read_schedule(&p).expect("reads");
        assert_eq!(s.duplicates, 2);
        assert_eq!(
            s.entries
                .iter()
                .map(|e| (e.registration_id.as_str(), e.to_hub.as_str()))
                .collect::<Vec<_>>(),
            vec![("a", "h2"), ("b", "h2")],
            "the first row of a device is kept"
        );
        let _ = std::fs::remove_dir_all(p.parent().expect("dir"));
    }
}
