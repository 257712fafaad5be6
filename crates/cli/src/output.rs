//! What commands share: the context (open options, output format,
//! progress settings), printing results on stdout so that a closed pipe
//! is no error, the usage error (exit status 2) and the interruption
//! (exit status 130).

use std::io::Write;

use crate::cli::Format;

/// A mistake in what the user typed: exit status 2.
#[derive(Debug)]
pub(crate) struct Usage(pub(crate) String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A command stopped by a signal (Ctrl-C, `SIGTERM`): exit status 130.
/// Says what was cleaned up and what was kept for a re-run.
#[derive(Debug)]
pub(crate) struct Interrupted(pub(crate) String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The settings of one run.
pub(crate) struct Ctx {
    pub(crate) open: orca::OpenOptions,
    pub(crate) format: Format,
    pub(crate) quiet: bool,
    pub(crate) progress: bool,
    pub(crate) tty: bool,
    pub(crate) multi: Option<indicatif::MultiProgress>,
    /// `--username`, when given (its password may still be to ask).
    pub(crate) username: Option<String>,
}

impl Ctx {
    /// Prints a result: `text` for people, `json` for scripts.
    pub(crate) fn emit(&self, text: &str, json: &serde_json::Value) -> anyhow::Result<()> {
        let line = match self.format {
            Format::Text if text.is_empty() => return Ok(()),
            Format::Text => format!("{text}\n"),
            Format::Json => format!("{}\n", serde_json::to_string_pretty(json)?),
        };
        to_stdout(line.as_bytes())
    }

    /// A line for people on stderr (not in JSON mode or when quiet).
    pub(crate) fn note(&self, line: &str) {
        if self.quiet {
            return;
        }
        match &self.multi {
            Some(multi) => {
                let _ = multi.println(line);
            }
            None => eprintln!("{line}"),
        }
    }
}

/// Stdout's reader went away (`orca … | head`): not a failure.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Writes to stdout. A closed pipe becomes [`StdoutClosed`] — only a
/// write to stdout can be that; a broken connection to a server (also
/// `EPIPE`) stays the failure it is.
pub(crate) fn to_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::BrokenPipe => anyhow::Error::new(StdoutClosed),
            _ => anyhow::Error::new(e).context("writing to stdout"),
        })
}

/// Whether the failure is stdout's reader going away.
pub(crate) fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|cause| cause.downcast_ref::<StdoutClosed>().is_some())
}

/// A descriptor as JSON: media type, digest and size always present.
pub(crate) fn descriptor_json(d: &orca::Descriptor) -> serde_json::Value {
    let mut value = serde_json::json!({
        "mediaType": d.media_type.as_str(),
        "digest": d.digest.to_string(),
        "size": d.size,
    });
    if let Some(artifact_type) = &d.artifact_type {
        value["artifactType"] = artifact_type.as_str().into();
    }
    if let Some(platform) = &d.platform {
        value["platform"] = platform.to_string().into();
    }
    if !d.annotations.is_empty() {
        value["annotations"] = serde_json::to_value(&d.annotations).unwrap_or_default();
    }
    value
}

/// Bytes for people: `12.3 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
