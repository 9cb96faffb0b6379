//! What the benchmarks share: deterministic text, percentiles, bench directories, and a
//! store filled with episodes.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ww_host::memory::{CreateEpisode, Memory, Outcome, format_time, now_ms};
use ww_host::plugins::Request;

/// A small deterministic generator (xorshift), so every run stores the same text.
pub struct Words(pub u64);

impl Words {
    /// The next raw value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A pronounceable word from a vocabulary of about 3,000, frequent ones more often.
    pub fn word(&mut self) -> String {
        const ONSETS: [&str; 12] = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t"];
        const VOWELS: [&str; 5] = ["a", "e", "i", "o", "u"];
        const CODAS: [&str; 5] = ["", "n", "r", "st", "ck"];
        let rank = (self.next_u64() % 3000) * (self.next_u64() % 3000) / 3000; // skewed to low ranks
        let mut n = rank as usize;
        let mut word = String::new();
        for _ in 0..2 {
            word.push_str(ONSETS[n % 12]);
            n /= 12;
            word.push_str(VOWELS[n % 5]);
            n /= 5;
        }
        word.push_str(CODAS[n % 5]);
        word
    }

    /// `words` words joined by spaces.
    pub fn sentence(&mut self, words: usize) -> String {
        (0..words)
            .map(|_| self.word())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The `p` quantile of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A duration in milliseconds, two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `target/ww-bench/<name>`, emptied.
pub fn bench_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/ww-bench")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Stores `n` episodes of 12 words in `session` (outcomes and valences varied, event
/// times spread over 60 days); how long it took.
pub async fn fill(memory: &Memory, session: &str, n: usize, words: &mut Words) -> Duration {
    let outcomes = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Neutral,
        Outcome::Partial,
    ];
    let start = Instant::now();
    let now = now_ms();
    for i in 0..n {
        let episode = CreateEpisode {
            content: words.sentence(12),
            outcome: Some(outcomes[i % 4]),
            valence: Some((i % 11) as f64 / 10.0),
            // Spread over the last 60 days, so recency varies.
            timestamp: Some(format_time(
                now - (words.next_u64() % (60 * 86_400_000)) as i64,
            )),
            ..Default::default()
        };
        memory
            .create_episode(Request::new("bench.create"), session, episode)
            .await
            .expect("create_episode");
        if (i + 1) % 10_000 == 0 {
            eprintln!("  {} episodes stored ({:.0?})", i + 1, start.elapsed());
        }
    }
    start.elapsed()
}

/// Copies the files of `from` into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}
