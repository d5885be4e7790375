//! Where log lines go: one buffer in memory, drained to standard output in batches by a background
//! thread. A request appends its line under a short lock (no allocation once the buffer has grown, no
//! system call, no channel message per line); the writer thread wakes when the first line of a batch
//! arrives, waits [`BATCH_WINDOW`] for more (or until [`BATCH_BYTES`] are waiting, so the two buffers stay
//! small enough to stay in the CPU's cache under load), and writes them all with one `write`. So lines
//! reach stdout at most about 10 ms after they were logged, in the order they were logged, and a slow
//! reader of stdout (a full pipe) never stalls a request: past [`MAX_PENDING`] bytes waiting, lines are
//! dropped and counted ([`Sink::dropped`], exported as `dps_allocator_log_lines_dropped_total`).
//!
//! Measured (docs/performance.md): the tracing-appender channel it replaces cost an allocation and a
//! channel message per line and a system call per burst; the decision line is written here directly.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

/// How long the writer thread gathers lines after the first of a batch.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// Bytes waiting that end a batch early (under load: about a thousand writes a second at most).
pub const BATCH_BYTES: usize = 64 * 1024;
/// Bytes waiting to be written past which new lines are dropped (and counted).
pub const MAX_PENDING: usize = 16 * 1024 * 1024;

struct Shared {
    pending: Mutex<Vec<u8>>,
    /// The writer thread is parked waiting for a first line.
    idle: AtomicBool,
    closed: AtomicBool,
    dropped: AtomicU64,
    writer: OnceLock<Thread>,
}

/// The shared log buffer; clones share it.
#[derive(Clone)]
pub struct Sink {
    shared: Arc<Shared>,
}

/// Stops the writer thread when dropped, after it has written every line logged before.
pub struct SinkGuard {
    sink: Sink,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    /// A sink draining into `out` on a background thread named `log-writer`.
    pub fn spawn(out: impl Write + Send + 'static) -> std::io::Result<(Sink, SinkGuard)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Vec::with_capacity(64 * 1024)),
            idle: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            writer: OnceLock::new(),
        });
        let sink = Sink { shared };
        let drainer = sink.clone();
        let thread = thread::Builder::new()
            .name("log-writer".to_owned())
            .spawn(move || drainer.drain(out))?;
        let _ = sink.shared.writer.set(thread.thread().clone());
        Ok((
            sink.clone(),
            SinkGuard {
                sink,
                thread: Some(thread),
            },
        ))
    }

    /// Appends one whole line, written by `line` straight into the buffer. Dropped (and counted) when
    /// too much is already waiting.
    pub fn append(&self, line: impl FnOnce(&mut Vec<u8>)) {
        let mut pending = self.lock();
        if pending.len() >= MAX_PENDING {
            drop(pending);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let before = pending.len();
        line(&mut pending);
        let full = before < BATCH_BYTES && pending.len() >= BATCH_BYTES;
        drop(pending);
        if (before == 0 && self.shared.idle.swap(false, Ordering::AcqRel)) || full {
            self.wake();
        }
    }

    /// Lines dropped because the reader of standard output did not keep up.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        // A panic while appending leaves at worst a partial line; logging goes on.
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wake(&self) {
        if let Some(t) = self.shared.writer.get() {
            t.unpark();
        }
    }

    fn drain(&self, mut out: impl Write) {
        let mut batch = Vec::with_capacity(64 * 1024);
        loop {
            {
                let mut pending = self.lock();
                std::mem::swap(&mut *pending, &mut batch);
            }
            if !batch.is_empty() {
                // A failed write (stdout closed) loses this batch; there is nowhere else to report it.
                let _ = out.write_all(&batch).and_then(|()| out.flush());
                batch.clear();
                if batch.capacity() > 1024 * 1024 {
                    batch.shrink_to(64 * 1024);
                }
            } else if self.shared.closed.load(Ordering::Acquire) {
                let _ = out.flush();
                return;
            } else {
                self.shared.idle.store(true, Ordering::Release);
                // A line appended before `idle` was set did not wake us: look again before sleeping.
                if self.lock().is_empty() {
                    thread::park_timeout(Duration::from_secs(1));
                }
                self.shared.idle.store(false, Ordering::Release);
            }
            // Gather the next batch: until BATCH_BYTES are waiting (`append` wakes us) or BATCH_WINDOW
            // has passed (an early wake-up only makes a smaller batch).
            if !self.shared.closed.load(Ordering::Acquire) {
                thread::park_timeout(BATCH_WINDOW);
            }
        }
    }
}

impl Drop for SinkGuard {
    fn drop(&mut self) {
        self.sink.shared.closed.store(true, Ordering::Release);
        self.sink.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `io::Write` for tracing-subscriber: each formatted event arrives as one `write_all`, appended whole.
pub struct SinkWriter<'a>(pub &'a Sink);

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.append(|pending| pending.extend_from_slice(buf));
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>, Arc<AtomicU64>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.1.fetch_add(1, Ordering::Relaxed);
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_whole_in_order_and_in_few_writes() {
        let out = Out::default();
        let (sink, guard) = Sink::spawn(out.clone()).expect("spawn");
        for i in 0..10_000 {
            sink.append(|b| b.extend_from_slice(format!("line {i}\n").as_bytes()));
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(i, l)| *l == format!("line {i}")));
        assert!(out.1.load(Ordering::Relaxed) < 100, "one write per batch, not per line");
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn an_idle_writer_wakes_for_a_line() {
        let out = Out::default();
        let (sink, _guard) = Sink::spawn(out.clone()).expect("spawn");
        thread::sleep(Duration::from_millis(50)); // the writer is parked
        sink.append(|b| b.extend_from_slice(b"late\n"));
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while out.0.lock().expect("lock").is_empty() {
            assert!(std::time::Instant::now() < deadline, "the line was never written");
            thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*out.0.lock().expect("lock"), b"late\n");
    }

    #[test]
    fn a_stalled_reader_costs_dropped_lines_not_memory() {
        struct Stalled(Arc<Mutex<()>>);
        impl Write for Stalled {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                drop(self.0.lock().expect("lock"));
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let held = gate.lock().expect("lock");
        let (sink, guard) = Sink::spawn(Stalled(gate.clone())).expect("spawn");
        let line = vec![b'x'; 1023];
        for _ in 0..(2 * MAX_PENDING / 1024) {
            sink.append(|b| {
                b.extend_from_slice(&line);
                b.push(b'\n')
            });
        }
        assert!(sink.dropped() > 0);
        assert!(sink.lock().len() <= MAX_PENDING + 1024);
        drop(held);
        drop(guard);
    }
}
