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
