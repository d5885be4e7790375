//! Hot reload: the active policy revision and how it changes.
//!
//! [`PolicyStore`] holds the active revision behind an `ArcSwapOption`: a request loads it once and keeps
//! that `Arc` to the end, so it sees exactly one revision. A reload compiles the whole directory off the
//! request path (on the reloader thread) and publishes it with one atomic swap; a revision that fails
//! validation is never activated, the last good one keeps serving, and the failure is kept for `/status`.
//! [`spawn`] starts the reloader thread, fed by a directory watcher (debounced; editors that save by
//! rename and Kubernetes ConfigMaps that swap a `..data` symlink both show up as events in the watched
//! directory) and by SIGHUP (see `cli::serve`).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwapOption;
use serde::Serialize;

use crate::policy::{self, PolicyErrors, Revision};
use crate::telemetry::Metrics;

/// The directory to use when none is given.
pub const DEFAULT_POLICY_DIR: &str = "policies";

/// How long the watcher waits for the directory to go quiet before reloading.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// The longest a reload waits after the first change of a burst, even while changes go on: a directory
/// that never goes quiet (a sync tool, a generator rewriting files) still reloads about once a second.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// How often the directory is re-read when no file watcher could be started.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);

/// Errors a failed attempt keeps for `/status` and the log: a directory with thousands of mistakes must
/// not make every `/status` answer and every log burst megabytes long.
pub const KEPT_ERRORS: usize = 100;

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Where a policy comes from: a directory, or the embedded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicySource {
    /// A directory.
    Dir(PathBuf),
    /// The policy compiled into the binary.
    Embedded,
}

impl PolicySource {
    /// The given directory, else `./policies` when present, else the embedded default.
    pub fn resolve(dir: Option<PathBuf>) -> Self {
        match dir {
            Some(d) => PolicySource::Dir(d),
            None if Path::new(DEFAULT_POLICY_DIR).is_dir() => PolicySource::Dir(PathBuf::from(DEFAULT_POLICY_DIR)),
            None => PolicySource::Embedded,
        }
    }

    /// Checks that a directory source is a directory: a path that does not exist is a mistake in a path
    /// (exit 2 at start-up), not a policy that fails to load (which `serve` waits out answering 503).
    pub fn check_exists(&self) -> Result<(), String> {
        match self {
            PolicySource::Dir(d) if !d.exists() => Err(format!("policy directory `{}` does not exist", d.display())),
            PolicySource::Dir(d) if !d.is_dir() => {
                Err(format!("policy directory `{}` is not a directory", d.display()))
            }
            _ => Ok(()),
        }
    }

    /// Loads and compiles the policy.
    pub fn load(&self) -> Result<Revision, PolicyErrors> {
        match self {
            PolicySource::Dir(d) => policy::load_dir(d),
            PolicySource::Embedded => policy::embedded_default(),
        }
    }

    /// How to name the source to people.
    pub fn describe(&self) -> String {
        match self {
            PolicySource::Dir(d) => d.display().to_string(),
            PolicySource::Embedded => "the embedded default policy".to_owned(),
        }
    }
}

/// What started a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// Start-up.
    Startup,
    /// A change in the watched directory.
    Watch,
    /// The periodic re-read when no watcher runs.
    Poll,
    /// SIGHUP.
    Signal,
}

/// The result of one reload attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// A new revision is active.
    Activated,
    /// The directory compiles to the revision already active.
    Unchanged,
    /// The directory does not compile; the previous revision (if any) keeps serving.
    Failed,
}

impl ReloadResult {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadResult::Activated => "activated",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Failed => "failed",
        }
    }
}

/// One reload attempt, as `/status` shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// When, in seconds since the Unix epoch.
    pub at_unix: f64,
    /// What started it.
    pub trigger: Trigger,
    /// The result.
    pub result: ReloadResult,
    /// The revision the directory compiled to, when it compiled.
    pub revision: Option<String>,
    /// The first [`KEPT_ERRORS`] errors, `file:line:col: message`, when it failed.
    pub errors: Vec<String>,
    /// How many more errors there were (`dps-allocator check` prints them all).
    #[serde(skip_serializing_if = "is_zero")]
    pub errors_omitted: usize,
    /// How long the load and compile took, in milliseconds.
    pub duration_ms: f64,
}

/// One reload attempt: logged (a failure with every error) and counted. `serving`: the revision active
/// after it, if any; `was_failing`: whether the attempt before it failed, so that the first good one
/// after a failure says the policy is healthy again (an `unchanged` one too: putting the good file back
/// compiles to the revision that kept serving).
pub fn log_attempt(attempt: &Attempt, source: &str, m: &Metrics, serving: Option<&str>, was_failing: bool) {
    m.reloads.with_label_values(&[attempt.result.as_str()]).inc();
    let revision = attempt.revision.as_deref().unwrap_or("");
    match attempt.result {
        ReloadResult::Activated => {
            m.set_revision(revision, attempt.at_unix);
            tracing::info!(target: "policy", revision, source, trigger = ?attempt.trigger, duration_ms = attempt.duration_ms, "policy revision activated");
        }
        ReloadResult::Unchanged => {
            tracing::debug!(target: "policy", revision, source, trigger = ?attempt.trigger, "policy unchanged");
        }
        ReloadResult::Failed => {
            for e in &attempt.errors {
                tracing::error!(target: "policy", source, error = %e, "policy error");
            }
            let errors = attempt.errors.len() + attempt.errors_omitted;
            match serving {
                Some(serving) => tracing::error!(
                    target: "policy",
                    source,
                    trigger = ?attempt.trigger,
                    errors,
                    errors_omitted = attempt.errors_omitted,
                    serving,
                    "policy reload failed; the previous revision keeps serving"
                ),
                None => tracing::error!(
                    target: "policy",
                    source,
                    trigger = ?attempt.trigger,
                    errors,
                    errors_omitted = attempt.errors_omitted,
                    "policy load failed; no revision is serving: every request is answered 503 not_ready until a valid policy loads"
                ),
            }
        }
    }
    if was_failing && attempt.result != ReloadResult::Failed {
        tracing::info!(target: "policy", revision, source, "policy healthy again: the directory loads");
    }
}

/// The active revision and the reload history `/status` reports.
pub struct PolicyStore {
    source: PolicySource,
    active: ArcSwapOption<Revision>,
    status: Mutex<StoreStatus>,
}

/// What `/status` reports about the policy.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct StoreStatus {
    /// When the active revision was activated, in seconds since the Unix epoch.
    pub loaded_at_unix: Option<f64>,
    /// The last reload attempt.
    pub last_attempt: Option<Attempt>,
    /// The last attempt that failed, kept after later successes for diagnosis.
    pub last_failure: Option<Attempt>,
}

impl PolicyStore {
    /// A store with nothing loaded yet.
    pub fn new(source: PolicySource) -> Self {
        PolicyStore {
            source,
            active: ArcSwapOption::empty(),
            status: Mutex::new(StoreStatus::default()),
        }
    }

    /// A store serving one revision (tests, offline commands).
    pub fn with_revision(source: PolicySource, rev: Revision) -> Self {
        let store = Self::new(source);
        store.active.store(Some(Arc::new(rev)));
        store.lock().loaded_at_unix = Some(now_unix());
        store
    }

    /// Where the policy comes from.
    pub fn source(&self) -> &PolicySource {
        &self.source
    }

    /// The active revision, held for as long as the caller needs it.
    pub fn active(&self) -> Option<Arc<Revision>> {
        self.active.load_full()
    }

    /// A snapshot of the reload status.
    pub fn status(&self) -> StoreStatus {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreStatus> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loads the source, activates it when it compiles to a new revision, and records the attempt.
    pub fn reload(&self, trigger: Trigger) -> Attempt {
        let started = std::time::Instant::now();
        // The compiler catches its own panics; this catches any other (reading the directory, hashing),
        // so a reload always ends as an attempt on record and the reloader lives on.
        let loaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.source.load())).unwrap_or_else(|_| {
                Err(PolicyErrors::single(format!(
                    "{}: internal error while loading the policy; please report it",
                    self.source.describe()
                )))
            });
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let at_unix = now_unix();
        let attempt = match loaded {
            Ok(rev) => {
                let id = rev.id.clone();
                let same = self.active.load().as_ref().is_some_and(|a| a.id == id);
                let result = if same {
                    ReloadResult::Unchanged
                } else {
                    ReloadResult::Activated
                };
                if !same {
                    self.active.store(Some(Arc::new(rev)));
                    self.lock().loaded_at_unix = Some(at_unix);
                }
                Attempt {
                    at_unix,
                    trigger,
                    result,
                    revision: Some(id),
                    errors: Vec::new(),
                    errors_omitted: 0,
                    duration_ms,
                }
            }
            Err(errors) => Attempt {
                at_unix,
                trigger,
                result: ReloadResult::Failed,
                revision: None,
                errors: errors.0.iter().take(KEPT_ERRORS).map(ToString::to_string).collect(),
                errors_omitted: errors.0.len().saturating_sub(KEPT_ERRORS),
                duration_ms,
            },
        };
        let mut status = self.lock();
        if attempt.result == ReloadResult::Failed {
            status.last_failure = Some(attempt.clone());
        }
        status.last_attempt = Some(attempt.clone());
        attempt
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_unix() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The handle that keeps the reloader running; dropping it stops the directory watcher.
pub struct Reloader {
    tx: Sender<Trigger>,
    _watcher: Option<notify::RecommendedWatcher>,
}

impl Reloader {
    /// Asks for a reload (SIGHUP uses this).
    pub fn trigger(&self, trigger: Trigger) {
        let _ = self.tx.send(trigger);
    }
}

/// Starts the reloader thread. `on_reload` runs after every attempt (the service logs, counts and clears
/// its decision cache there). With `watch` and a directory source, a file watcher feeds it; if no watcher
/// can be started the directory is re-read every [`POLL_INTERVAL`].
pub fn spawn(
    source: &PolicySource,
    watch: bool,
    on_reload: impl Fn(Trigger) + Send + 'static,
) -> std::io::Result<Reloader> {
    let (tx, rx) = mpsc::channel::<Trigger>();
    let mut poll = None;
    let watcher = match (watch, source) {
        (true, PolicySource::Dir(dir)) => match watch_dir(dir, tx.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the policy directory; polling it instead");
                poll = Some(POLL_INTERVAL);
                None
            }
        },
        _ => None,
    };
    std::thread::Builder::new()
        .name("policy-reloader".into())
        .spawn(move || {
            loop {
                let trigger = match poll {
                    Some(every) => match rx.recv_timeout(every) {
                        Ok(t) => t,
                        Err(RecvTimeoutError::Timeout) => Trigger::Poll,
                        Err(RecvTimeoutError::Disconnected) => return,
                    },
                    None => match rx.recv() {
                        Ok(t) => t,
                        Err(_) => return,
                    },
                };
                // Debounce: an editor's save or a ConfigMap swap is several events; reload once it is quiet,
                // or once MAX_DEBOUNCE has passed since the first of them.
                let mut trigger = trigger;
                let first = std::time::Instant::now();
                loop {
                    let wait = DEBOUNCE.min(MAX_DEBOUNCE.saturating_sub(first.elapsed()));
                    if wait.is_zero() {
                        break;
                    }
                    match rx.recv_timeout(wait) {
                        Ok(Trigger::Signal) => trigger = Trigger::Signal,
                        Ok(_) => {}
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                // A reload that fails in any way, a panic included, is on record (`PolicyStore::reload`);
                // nothing it does may stop this thread, or later changes and SIGHUPs would be ignored.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| on_reload(trigger))).is_err() {
                    tracing::error!(target: "policy", "policy reload failed unexpectedly; the next change or SIGHUP tries again");
                }
            }
        })?;
    Ok(Reloader { tx, _watcher: watcher })
}

fn watch_dir(dir: &Path, tx: Sender<Trigger>) -> notify::Result<notify::RecommendedWatcher> {
    use notify::{EventKind, RecursiveMode, Watcher};
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads and metadata changes do not change the policy.
        let relevant = match event {
            Ok(e) => !matches!(e.kind, EventKind::Access(_)),
            Err(_) => true,
        };
        if relevant {
            let _ = tx.send(Trigger::Watch);
        }
    })?;
    // Recursive: fence files (`location.within`) may live in subdirectories such as `fences/`. A change
    // under `tests/` reloads to the same revision (unchanged), which costs one compile.
    watcher.watch(dir, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("dps-reload-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    }

    #[test]
    fn a_failing_revision_never_replaces_the_active_one() {
        let d = dir("keep");
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"a\"\n").expect("write");
        let store = PolicyStore::new(PolicySource::Dir(d.clone()));
        assert!(store.active().is_none());
        assert_eq!(store.reload(Trigger::Startup).result, ReloadResult::Activated);
        let good = store.active().expect("active").id.clone();
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"a\"\nstrategy = \"nope\"\n").expect("write");
        let failed = store.reload(Trigger::Watch);
        assert_eq!(failed.result, ReloadResult::Failed);
        assert!(failed.errors[0].contains("p.toml:3:12"), "{:?}", failed.errors);
        assert_eq!(failed.errors_omitted, 0);
        assert_eq!(store.active().expect("still active").id, good);
        assert_eq!(
            store.status().last_failure.map(|f| f.result),
            Some(ReloadResult::Failed)
        );
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"a\"\n").expect("write");
        assert_eq!(store.reload(Trigger::Signal).result, ReloadResult::Unchanged);
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"b\"\n").expect("write");
        assert_eq!(store.reload(Trigger::Signal).result, ReloadResult::Activated);
        assert_ne!(store.active().expect("active").id, good);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_request_keeps_the_revision_it_started_with() {
        let d = dir("hold");
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"a\"\n").expect("write");
        let store = PolicyStore::new(PolicySource::Dir(d.clone()));
        store.reload(Trigger::Startup);
        let held = store.active().expect("active");
        std::fs::write(d.join("p.toml"), "[[rule]]\nname = \"b\"\n").expect("write");
        store.reload(Trigger::Watch);
        assert_eq!(held.rules[0].name, "a", "the held revision is immutable");
        assert_eq!(store.active().expect("active").rules[0].name, "b");
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_failed_attempt_keeps_the_first_errors_and_counts_the_rest() {
        let d = dir("many");
        let rules: String = (0..250)
            .map(|i| format!("[[rule]]\nname = \"r{i}\"\nstrategy = \"nope\"\n"))
            .collect();
        std::fs::write(d.join("p.toml"), rules).expect("write");
        let store = PolicyStore::new(PolicySource::Dir(d.clone()));
        let failed = store.reload(Trigger::Startup);
        assert_eq!(failed.result, ReloadResult::Failed);
        assert_eq!(failed.errors.len(), KEPT_ERRORS);
        assert_eq!(failed.errors_omitted, 150);
        let json = serde_json::to_value(store.status()).expect("json");
        assert_eq!(json["last_failure"]["errors_omitted"], 150);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_directory_that_never_goes_quiet_still_reloads_about_every_second() {
        let reloads = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = reloads.clone();
        let reloader = spawn(&PolicySource::Embedded, false, move |_| {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        })
        .expect("reloader");
        // Ten changes a second for 2.6 s: never 250 ms of quiet.
        for _ in 0..26 {
            reloader.trigger(Trigger::Watch);
            std::thread::sleep(Duration::from_millis(100));
        }
        let during = reloads.load(std::sync::atomic::Ordering::SeqCst);
        assert!(during >= 2, "{during} reloads during 2.6 s of continuous change");
    }
}
