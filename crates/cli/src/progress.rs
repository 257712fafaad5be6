//! Progress and logs, on stderr only. On a terminal: indicatif bars, one
//! per blob in flight and a total with bytes, rate and ETA, fed by the
//! copy engine's events, with log lines printed above them (never through
//! them). Elsewhere (CI): a plain line every few seconds. Every transfer
//! ends with a one-line summary.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orca::{CopyReport, Digest, Event, Progress};

use crate::output::{Ctx, size};

/// Sets up `tracing` on stderr at the level `-v`/`-q` ask for; on a
/// terminal, returns the bar area that log lines are printed above.
/// `debug` adds orca's own debug lines (each HTTP exchange) and nothing of
/// the libraries under it. Colour only on a terminal, and not with
/// `NO_COLOR` set.
pub(crate) fn init_logging(verbose: u8, quiet: bool, debug: bool) -> Option<MultiProgress> {
    use std::io::IsTerminal;
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let multi = std::io::stderr()
        .is_terminal()
        .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(8)));
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::ERROR,
        (false, 0) => tracing::Level::WARN,
        (false, 1) => tracing::Level::INFO,
        (false, 2) => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let colour = multi.is_some() && std::env::var_os("NO_COLOR").is_none();
    let writer = LogWriter(multi.clone());
    let shown = move |meta: &tracing::Metadata<'_>| {
        *meta.level() <= level || (debug && meta.target().starts_with("orca"))
    };
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_target(false)
                .with_ansi(colour)
                .with_writer(move || writer.clone())
                .with_filter(tracing_subscriber::filter::filter_fn(shown)),
        )
        .try_init();
    multi
}

/// Writes log lines above the bars when there are bars, else to stderr.
#[derive(Clone)]
struct LogWriter(Option<MultiProgress>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &self.0 {
            Some(multi) => {
                let text = String::from_utf8_lossy(buf);
                multi.println(text.trim_end_matches('\n'))?;
                Ok(buf.len())
            }
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The progress display of one copy.
pub(crate) struct Display {
    started: Instant,
    state: Mutex<State>,
    bars: Option<Bars>,
}

struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
}

#[derive(Default)]
struct State {
    /// Blobs transferred, and how many of their bytes.
    finished: u64,
    finished_bytes: u64,
    planned: u64,
    done: HashMap<Digest, u64>,
    moved: u64,
    blobs: HashMap<Digest, ProgressBar>,
    last_line: Option<Instant>,
}

/// How often a plain total line is printed when stderr is no terminal
/// (besides a line per blob as it starts and ends).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

impl Display {
    /// A display for `ctx`: bars on a terminal, lines elsewhere, nothing
    /// when progress is off.
    pub(crate) fn new(ctx: &Ctx) -> Option<Self> {
        if !ctx.progress {
            return None;
        }
        let bars = match (&ctx.multi, ctx.tty) {
            (Some(multi), true) => {
                let total = multi.add(ProgressBar::new(0));
                total.set_style(
                    // The bar takes what the terminal's width leaves.
                    ProgressStyle::with_template(
                        "{prefix:>8} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                total.set_prefix("total");
                // Redrawn when no bytes come too: the rate and ETA decay
                // instead of freezing at their last values.
                total.enable_steady_tick(Duration::from_millis(250));
                Some(Bars {
                    multi: multi.clone(),
                    total,
                })
            }
            _ => None,
        };
        // Plain lines start after the first interval: a short copy gets
        // only its summary.
        let state = State {
            last_line: Some(Instant::now()),
            ..State::default()
        };
        Some(Display {
            started: Instant::now(),
            state: Mutex::new(state),
            bars,
        })
    }

    fn blob_style() -> ProgressStyle {
        ProgressStyle::with_template("{prefix:>8} [{wide_bar}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ")
    }

    /// A one-line summary of transfers outside a copy (files pushed or
    /// pulled): `verb` N files, bytes, time, rate.
    pub(crate) fn summary(&self, verb: &str, elapsed: Duration) -> String {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let seconds = elapsed.as_secs_f64().max(0.001);
        format!(
            "{verb} {} file(s), {} in {:.1}s ({}/s)",
            state.finished,
            size(state.finished_bytes),
            seconds,
            size((state.finished_bytes as f64 / seconds) as u64)
        )
    }

    /// A line for one blob when there are no bars (CI logs).
    fn line(&self, what: &str, descriptor: &orca::Descriptor) {
        if self.bars.is_none() {
            eprintln!(
                "{what} {} ({})",
                short(&descriptor.digest),
                size(descriptor.size)
            );
        }
    }

    /// Clears the bars once the copy ended.
    pub(crate) fn finish(&self) {
        if let Some(bars) = &self.bars {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            for bar in state.blobs.values() {
                bar.finish_and_clear();
            }
            bars.total.finish_and_clear();
            let _ = bars.multi.clear();
        }
    }
}

impl Progress for Display {
    fn event(&self, event: &Event) {
        match event {
            Event::Advanced { .. } => {}
            other => tracing::debug!("{other:?}"),
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            Event::Planned(totals) => {
                // Several copies (a sync) add up.
                state.planned += totals.bytes;
                if let Some(bars) = &self.bars {
                    bars.total.set_length(state.planned);
                }
            }
            Event::Started(descriptor) => {
                self.line("started", descriptor);
                if let Some(bars) = &self.bars {
                    let bar = bars
                        .multi
                        .insert_before(&bars.total, ProgressBar::new(descriptor.size));
                    bar.set_style(Self::blob_style());
                    bar.set_prefix(descriptor.digest.hex()[..8].to_owned());
                    state.blobs.insert(descriptor.digest.clone(), bar);
                }
            }
            Event::Advanced { digest, done, .. } => {
                let before = state.done.insert(digest.clone(), *done).unwrap_or(0);
                state.moved += done.saturating_sub(before);
                if let Some(bar) = state.blobs.get(digest) {
                    bar.set_position(*done);
                }
                if let Some(bars) = &self.bars {
                    bars.total.set_position(state.moved);
                } else {
                    let now = Instant::now();
                    if state.last_line.is_none_or(|last| now - last >= PLAIN_EVERY) {
                        state.last_line = Some(now);
                        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
                        eprintln!(
                            "copying: {} of {} ({}/s)",
                            size(state.moved),
                            size(state.planned),
                            size((state.moved as f64 / elapsed) as u64)
                        );
                    }
                }
            }
            Event::Copied(descriptor)
            | Event::Mounted(descriptor)
            | Event::Present(descriptor)
            | Event::External(descriptor) => {
                let what = match event {
                    Event::Copied(_) => {
                        state.finished += 1;
                        state.finished_bytes += descriptor.size;
                        "done"
                    }
                    Event::Mounted(_) => "mounted",
                    Event::Present(_) => "present",
                    _ => "external",
                };
                self.line(what, descriptor);
                if let Some(bar) = state.blobs.remove(&descriptor.digest) {
                    bar.finish_and_clear();
                }
            }
            _ => {}
        }
    }
}

/// A digest as lines name it: its algorithm and the first 12 hex digits.
fn short(digest: &Digest) -> String {
    let hex = digest.hex();
    format!("{}:{}", digest.algorithm(), &hex[..hex.len().min(12)])
}

/// The one-line summary of a copy.
pub(crate) fn summary(report: &CopyReport, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(0.001);
    format!(
        "copied {} (present {}, mounted {}, resumed {}), {} in {:.1}s ({}/s)",
        report.copied,
        report.present,
        report.mounted,
        report.resumed,
        size(report.bytes),
        seconds,
        size((report.bytes as f64 / seconds) as u64)
    )
}
