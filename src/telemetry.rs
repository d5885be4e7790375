//! Telemetry: log set-up, the Prometheus [`Metrics`], and the typed [`events`] that both log and count.
//!
//! Logs go to standard output through tracing, filtered by `RUST_LOG` (default `info`), gathered in one
//! buffer and written in batches by a background thread ([`sink`]) so a slow terminal or pipe never stalls
//! a request. Standard output, because the Azure
//! Functions host logs a custom handler's stdout lines at Information and every stderr line at Error
//! (`UseStdErrorStreamForErrorsOnly` in azure-functions-host's `WorkerProcess`): standard error is kept for
//! the one line of a fatal start-up error. The format is JSON lines when standard output is not a
//! terminal (a file, a pipe, Docker, Kubernetes, the Functions host), readable lines on a terminal, with
//! colour only on a terminal and never with `NO_COLOR` set.

pub mod events;
pub(crate) mod json;
mod metrics;
pub mod sink;

pub use metrics::Metrics;

use std::sync::OnceLock;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use sink::{Sink, SinkGuard};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// JSON lines when standard output is not a terminal, readable lines on a terminal.
    #[default]
    Auto,
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The format `Auto` stands for, given whether standard output is a terminal.
    pub fn resolve(self, stdout_is_terminal: bool) -> LogFormat {
        match self {
            LogFormat::Auto if stdout_is_terminal => LogFormat::Pretty,
            LogFormat::Auto => LogFormat::Json,
            other => other,
        }
    }
}

/// Keeps the background log writer alive; logs written before it drops are flushed.
pub struct LogGuard {
    _writer: Option<SinkGuard>,
}

/// The log buffer of the installed JSON subscriber: decision lines are written into it directly, in the
/// same format (see [`events::Prepared`]). None before [`init`], with another format, or in tests that
/// install their own subscriber.
static JSON_SINK: OnceLock<Sink> = OnceLock::new();

/// The JSON log buffer, when JSON logging is installed.
pub(crate) fn json_sink() -> Option<&'static Sink> {
    JSON_SINK.get()
}

/// Log lines dropped so far because standard output did not keep up.
pub fn dropped_log_lines() -> u64 {
    JSON_SINK.get().map_or(0, Sink::dropped)
}

/// Installs the global subscriber (a second call leaves the first in place).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let colour = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // Without a thread for the writer (none could be spawned), log synchronously.
    let spawned = Sink::spawn(std::io::stdout()).ok();
    let writer = match &spawned {
        Some((sink, _)) => BoxMakeWriter::new(sink.clone()),
        None => BoxMakeWriter::new(std::io::stdout),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let json = format.resolve(terminal) == LogFormat::Json;
    let installed = if json {
        builder.event_format(json::JsonLines).try_init()
    } else {
        builder.with_target(false).with_ansi(colour).try_init()
    };
    let (sink, guard) = spawned.unzip();
    if let (Ok(()), true, Some(sink)) = (&installed, json, sink) {
        let _ = JSON_SINK.set(sink);
    }
    LogGuard {
        _writer: installed.ok().and(guard),
    }
}
