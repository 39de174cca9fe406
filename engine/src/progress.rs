//! BuildKit-style progress output: `plain`, `tty` and `rawjson`.
//!
//! plain prints `#N name`, then `#N CACHED`, `#N DONE 0.1s` or
//! `#N ERROR: cause`; vertices are numbered in the order they first report.
//! tty prints the same lines and keeps a live footer below them: one line
//! per running vertex with its elapsed time, redrawn ten times a second
//! and cut to the terminal's width.
//! rawjson prints one JSON object per event, shaped like BuildKit's
//! `SolveStatus` (`vertexes` / `logs`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::solver::{ProgressSink, VertexInfo};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// `#N …` lines.
    #[default]
    Plain,
    /// Plain lines plus a live footer of running vertices.
    Tty,
    /// One JSON object per line.
    RawJson,
    /// Nothing.
    Quiet,
}

impl ProgressMode {
    /// Parses `plain`, `tty`, `rawjson`, `quiet` or `auto` (tty if stderr
    /// is a terminal, plain otherwise).
    pub fn parse(s: &str) -> Option<ProgressMode> {
        Some(match s {
            "plain" => ProgressMode::Plain,
            "tty" => ProgressMode::Tty,
            "rawjson" => ProgressMode::RawJson,
            "quiet" | "none" => ProgressMode::Quiet,
            "auto" => {
                use std::io::IsTerminal;
                if std::io::stderr().is_terminal() {
                    ProgressMode::Tty
                } else {
                    ProgressMode::Plain
                }
            }
            _ => return None,
        })
    }
}

struct State {
    numbers: HashMap<String, usize>,
    next: usize,
    started: HashMap<String, SystemTime>,
}

/// The live footer of tty mode.
#[derive(Default)]
struct Footer {
    /// Running vertices: number → (name, start).
    running: std::collections::BTreeMap<usize, (String, Instant)>,
    /// Lines the footer takes on screen now.
    lines: usize,
    /// The redraw thread runs.
    ticking: bool,
}

struct Inner {
    mode: ProgressMode,
    out: Mutex<Box<dyn Write + Send>>,
    state: Mutex<State>,
    footer: Mutex<Footer>,
}

/// Columns of the terminal on stderr (80 when it is not one).
fn term_width() -> usize {
    // SAFETY: TIOCGWINSZ writes a winsize into the zeroed struct we pass.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(2, libc::TIOCGWINSZ, &mut ws) == 0 && ws.ws_col > 0 {
            ws.ws_col as usize
        } else {
            80
        }
    }
}

/// `line` cut to `width` characters.
fn cut(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// A progress writer shared by every solve of a session.
#[derive(Clone)]
pub struct Progress {
    inner: Arc<Inner>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new(ProgressMode::Quiet)
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress")
            .field("mode", &self.inner.mode)
            .finish()
    }
}

/// A buffer that progress can write into (for tests and embedding).
#[derive(Clone, Default)]
pub struct SharedBuf(pub Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    /// The text written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Progress {
    /// Progress to stderr.
    pub fn new(mode: ProgressMode) -> Progress {
        Progress::with_writer(mode, Box::new(std::io::stderr()))
    }

    /// Progress to any writer.
    pub fn with_writer(mode: ProgressMode, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            inner: Arc::new(Inner {
                mode,
                out: Mutex::new(out),
                state: Mutex::new(State {
                    numbers: HashMap::new(),
                    next: 1,
                    started: HashMap::new(),
                }),
                footer: Mutex::new(Footer::default()),
            }),
        }
    }

    /// Progress into a buffer, returned alongside.
    pub fn capture(mode: ProgressMode) -> (Progress, SharedBuf) {
        let buf = SharedBuf::default();
        (Progress::with_writer(mode, Box::new(buf.clone())), buf)
    }

    /// The output mode.
    pub fn mode(&self) -> ProgressMode {
        self.inner.mode
    }

    fn number(&self, digest: &str) -> (usize, bool) {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&n) = st.numbers.get(digest) {
            return (n, false);
        }
        let n = st.next;
        st.next += 1;
        st.numbers.insert(digest.to_owned(), n);
        (n, true)
    }

    fn write(&self, s: &str) {
        if self.inner.mode == ProgressMode::Tty {
            let mut f = self.inner.footer.lock().unwrap_or_else(|p| p.into_inner());
            self.redraw(&mut f, s);
            return;
        }
        let mut out = self.inner.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(s.as_bytes());
        let _ = out.flush();
    }

    /// tty: erases the footer, prints `text`, draws the footer again.
    fn redraw(&self, f: &mut Footer, text: &str) {
        let mut buf = String::new();
        if f.lines > 0 {
            // Up to the footer's first line, then clear to the end.
            buf.push_str(&format!("\x1b[{}A\r\x1b[J", f.lines));
        }
        buf.push_str(text);
        let width = term_width();
        f.lines = 0;
        for (n, (name, t)) in &f.running {
            let name = name.replace(['\n', '\r'], " ");
            let line = format!("#{n} {name}  {:.1}s", t.elapsed().as_secs_f64());
            buf.push_str(&cut(&line, width.saturating_sub(1)));
            buf.push('\n');
            f.lines += 1;
        }
        let mut out = self.inner.out.lock().unwrap_or_else(|p| p.into_inner());
        let _ = out.write_all(buf.as_bytes());
        let _ = out.flush();
    }

    /// tty: a vertex started or finished; keeps the redraw thread going
    /// while anything runs.
    fn footer_update(&self, n: usize, running: Option<&str>) {
        let mut f = self.inner.footer.lock().unwrap_or_else(|p| p.into_inner());
        match running {
            Some(name) => {
                f.running.insert(n, (name.to_owned(), Instant::now()));
            }
            None => {
                f.running.remove(&n);
            }
        }
        if f.ticking || f.running.is_empty() {
            return;
        }
        f.ticking = true;
        let weak = Arc::downgrade(&self.inner);
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(std::time::Duration::from_millis(100));
                let Some(inner) = weak.upgrade() else { return };
                let p = Progress { inner };
                let mut f = p.inner.footer.lock().unwrap_or_else(|e| e.into_inner());
                if f.running.is_empty() {
                    f.ticking = false;
                    return;
                }
                p.redraw(&mut f, "");
            }
        });
    }

    fn json_vertex(
        &self,
        v: &VertexInfo,
        cached: bool,
        started: Option<SystemTime>,
        completed: Option<SystemTime>,
        error: Option<&str>,
    ) {
        let mut o = serde_json::Map::new();
        o.insert("digest".into(), v.digest.clone().into());
        o.insert("inputs".into(), v.inputs.clone().into());
        o.insert("name".into(), v.name.clone().into());
        if cached {
            o.insert("cached".into(), true.into());
        }
        if let Some(t) = started {
            o.insert("started".into(), rfc3339(t).into());
        }
        if let Some(t) = completed {
            o.insert("completed".into(), rfc3339(t).into());
        }
        if let Some(e) = error {
            o.insert("error".into(), e.into());
        }
        let line = serde_json::json!({ "vertexes": [serde_json::Value::Object(o)] });
        self.write(&format!("{line}\n"));
    }

    /// A free-form message not tied to a vertex (warnings, exporter steps).
    pub fn message(&self, msg: &str) {
        match self.inner.mode {
            ProgressMode::Quiet => {}
            ProgressMode::RawJson => {
                let line = serde_json::json!({ "warnings": [{ "short": msg }] });
                self.write(&format!("{line}\n"));
            }
            _ => self.write(&format!("{msg}\n")),
        }
    }
}

impl ProgressSink for Progress {
    fn cached(&self, v: &VertexInfo) {
        let (n, _) = self.number(&v.digest);
        match self.inner.mode {
            ProgressMode::Quiet => {}
            ProgressMode::RawJson => {
                let now = SystemTime::now();
                self.json_vertex(v, true, Some(now), Some(now), None);
            }
            _ => self.write(&format!("#{n} {}\n#{n} CACHED\n\n", v.name)),
        }
    }

    fn started(&self, v: &VertexInfo) {
        let (n, _) = self.number(&v.digest);
        let now = SystemTime::now();
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .started
            .insert(v.digest.clone(), now);
        match self.inner.mode {
            ProgressMode::Quiet => {}
            ProgressMode::RawJson => self.json_vertex(v, false, Some(now), None, None),
            ProgressMode::Tty => {
                self.footer_update(n, Some(&v.name));
                self.write(&format!("#{n} {}\n", v.name));
            }
            ProgressMode::Plain => self.write(&format!("#{n} {}\n", v.name)),
        }
    }

    fn completed(&self, v: &VertexInfo, started: Instant, error: Option<&str>) {
        let (n, _) = self.number(&v.digest);
        let secs = started.elapsed().as_secs_f64();
        if self.inner.mode == ProgressMode::Tty {
            self.footer_update(n, None);
        }
        match self.inner.mode {
            ProgressMode::Quiet => {}
            ProgressMode::RawJson => {
                let st = self
                    .inner
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .started
                    .get(&v.digest)
                    .copied();
                self.json_vertex(v, false, st, Some(SystemTime::now()), error);
            }
            _ => match error {
                None => self.write(&format!("#{n} DONE {secs:.1}s\n\n")),
                Some(e) => self.write(&format!("#{n} ERROR: {e}\n\n")),
            },
        }
    }

    fn log(&self, v: &VertexInfo, line: &str) {
        let (n, _) = self.number(&v.digest);
        match self.inner.mode {
            ProgressMode::Quiet => {}
            ProgressMode::RawJson => {
                let j = serde_json::json!({ "logs": [{ "vertex": v.digest, "stream": 2, "msg": line }] });
                self.write(&format!("{j}\n"));
            }
            _ => {
                for l in line.lines() {
                    self.write(&format!("#{n} {l}\n"));
                }
            }
        }
    }
}

/// Formats a time as RFC 3339 UTC with nanoseconds.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_json_lines() {
        let (p, buf) = Progress::capture(ProgressMode::Plain);
        let v = VertexInfo {
            digest: "sha256:a".into(),
            name: "[1/2] COPY . .".into(),
            inputs: vec![],
        };
        let w = VertexInfo {
            digest: "sha256:b".into(),
            name: "mkdir".into(),
            inputs: vec![],
        };
        p.cached(&v);
        p.started(&w);
        p.completed(&w, Instant::now(), Some("boom"));
        let t = buf.text();
        assert!(t.contains("#1 [1/2] COPY . .\n#1 CACHED"), "{t}");
        assert!(t.contains("#2 mkdir\n#2 ERROR: boom"), "{t}");
        let (p, buf) = Progress::capture(ProgressMode::RawJson);
        p.cached(&v);
        let j: serde_json::Value =
            serde_json::from_str(buf.text().lines().next().unwrap()).unwrap();
        assert_eq!(j["vertexes"][0]["cached"], true);
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
    }

    #[test]
    fn tty_keeps_a_footer_of_running_vertices() {
        let (p, buf) = Progress::capture(ProgressMode::Tty);
        let v = VertexInfo {
            digest: "sha256:a".into(),
            name: "[1/1] RUN make".into(),
            inputs: vec![],
        };
        p.started(&v);
        p.log(&v, "compiling");
        let t = buf.text();
        // The log line is printed above the footer, which is redrawn.
        assert!(t.contains("#1 compiling\n#1 [1/1] RUN make  0."), "{t:?}");
        assert!(t.contains("\x1b[1A\r\x1b[J"), "{t:?}");
        p.completed(&v, Instant::now(), None);
        let t = buf.text();
        assert!(t.ends_with("#1 DONE 0.0s\n\n"), "{t:?}");
        assert_eq!(cut("abcdef", 4), "abc…");
    }
}
