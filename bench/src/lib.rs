//! Small timing helpers shared by the benchmark binaries. Benchmarks print
//! numbers; they never assert on them.

use std::time::{Duration, Instant};

/// Run `f` `n` times and return the sorted durations.
pub fn sample(n: usize, mut f: impl FnMut()) -> Vec<Duration> {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v
}

/// The median of sorted samples.
pub fn median(v: &[Duration]) -> Duration {
    v[v.len() / 2]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `kiln/peer` as a ratio string.
pub fn ratio(kiln: Duration, peer: Duration) -> String {
    format!("{:.2}x", kiln.as_secs_f64() / peer.as_secs_f64())
}

/// A bridge with no engine behind it: every call fails fast, so a
/// frontend's start cost can be timed on its own.
pub struct NullBridge;

impl kiln::frontend::Bridge for NullBridge {
    fn solve(&mut self, _: Vec<u8>, _: bool) -> Result<String, kiln::frontend::FrontendError> {
        Err(kiln::frontend::FrontendError::new(
            "no engine in this benchmark",
        ))
    }
    fn read_file(
        &mut self,
        _: &str,
        _: &str,
        _: u64,
        _: Option<u64>,
    ) -> Result<Vec<u8>, kiln::frontend::FrontendError> {
        Err(kiln::frontend::FrontendError::new("no engine"))
    }
    fn read_dir(
        &mut self,
        _: &str,
        _: &str,
        _: Option<&str>,
    ) -> Result<Vec<kiln::frontend::FileStat>, kiln::frontend::FrontendError> {
        Ok(Vec::new())
    }
    fn stat_file(
        &mut self,
        _: &str,
        _: &str,
    ) -> Result<kiln::frontend::FileStat, kiln::frontend::FrontendError> {
        Err(kiln::frontend::FrontendError::new("no engine"))
    }
    fn resolve_image_config(
        &mut self,
        _: &str,
        _: Option<(&str, &str, Option<&str>)>,
        _: &str,
    ) -> Result<kiln::frontend::ImageConfig, kiln::frontend::FrontendError> {
        Err(kiln::frontend::FrontendError::new("no registry"))
    }
    fn warn(&mut self, _: kiln::frontend::Warning) {}
    fn log(&mut self, _: &str) {}
}
