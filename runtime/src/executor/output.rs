//! Where a container's stdout and stderr go, and the bounded tail kept for
//! error messages.

use std::collections::VecDeque;

/// Which stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    /// The process' stdout.
    Stdout,
    /// The process' stderr.
    Stderr,
}

/// Receives output as it arrives. Called from the thread that called
/// [`Executor::run`](super::Executor::run), in arrival order per stream.
pub trait OutputSink: Send {
    /// One chunk of output (not necessarily whole lines).
    fn write(&mut self, stream: StreamKind, data: &[u8]);
}

/// Drops all output.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardOutput;

impl OutputSink for DiscardOutput {
    fn write(&mut self, _: StreamKind, _: &[u8]) {}
}

/// Keeps everything (for tests and small commands).
#[derive(Debug, Default, Clone)]
pub struct CapturedOutput {
    /// All of stdout.
    pub stdout: Vec<u8>,
    /// All of stderr.
    pub stderr: Vec<u8>,
}

impl CapturedOutput {
    /// stdout as (lossy) text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as (lossy) text.
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl OutputSink for CapturedOutput {
    fn write(&mut self, stream: StreamKind, data: &[u8]) {
        match stream {
            StreamKind::Stdout => self.stdout.extend_from_slice(data),
            StreamKind::Stderr => self.stderr.extend_from_slice(data),
        }
    }
}

/// The last `cap` bytes of combined output.
#[derive(Debug)]
pub(crate) struct Tail {
    buf: VecDeque<u8>,
    cap: usize,
}

impl Tail {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            buf: VecDeque::with_capacity(cap.min(64 * 1024)),
            cap,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.cap {
            &data[data.len() - self.cap..]
        } else {
            data
        };
        let overflow = (self.buf.len() + data.len()).saturating_sub(self.cap);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    /// The last `lines` lines, lossily decoded.
    pub(crate) fn last_lines(&self, lines: usize) -> String {
        let (a, b) = self.buf.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        let text = String::from_utf8_lossy(&all);
        let trimmed = text.trim_end_matches('\n');
        let kept: Vec<&str> = trimmed.rsplit('\n').take(lines).collect();
        let mut out: Vec<&str> = kept.into_iter().rev().collect();
        if out.len() == 1 && out[0].is_empty() {
            out.clear();
        }
        out.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_bytes_and_lines() {
        let mut t = Tail::new(16);
        t.push(b"line one\nline two\n");
        t.push(b"three\n");
        assert_eq!(t.last_lines(2), "line two\nthree");
        let mut t = Tail::new(1024);
        t.push(b"a\nb\nc\nd\n");
        assert_eq!(t.last_lines(3), "b\nc\nd");
        assert_eq!(Tail::new(8).last_lines(3), "");
    }
}
