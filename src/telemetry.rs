//! Telemetry: log set-up, the Prometheus [`Metrics`], and the typed [`events`] that both log and count.
//!
//! Logs go to standard error through tracing, pretty or JSON, filtered by `RUST_LOG` (default `info`),
//! written by a background thread so a slow terminal or pipe never stalls a request.

pub mod events;
pub(crate) mod json;
mod metrics;

pub use metrics::Metrics;

use tracing_subscriber::EnvFilter;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Keeps the background log writer alive; logs written before it drops are flushed.
pub struct LogGuard {
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Installs the global subscriber (a second call leaves the first in place).
pub fn init(format: LogFormat) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The writer thread drains lines into a buffer and flushes when the queue is empty: one write per
    // burst rather than per line.
    let (writer, guard) =
        tracing_appender::non_blocking(std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr()));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    let installed = match format {
        LogFormat::Pretty => builder.with_target(false).try_init(),
        LogFormat::Json => builder.event_format(json::JsonLines).try_init(),
    };
    LogGuard {
        _writer: installed.ok().map(|()| guard),
    }
}
