//! Small statistics: nearest-rank percentiles of one run's samples, and the
//! median and spread (min–max) of one figure over several runs.

use serde::Serialize;

/// Latency percentiles of one run, in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of latencies given in nanoseconds (sorted in place).
    pub fn of_ns(samples: &mut [i64]) -> Self {
        samples.sort_unstable();
        let ms = |p: f64| nearest_rank(samples, p) as f64 / 1e6;
        Self {
            p50: ms(50.0),
            p90: ms(90.0),
            p99: ms(99.0),
            max: samples.last().copied().unwrap_or(0) as f64 / 1e6,
        }
    }
}

/// Each percentile of several runs as a [`Spread`].
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct PercentileSpread {
    pub p50: Spread,
    pub p90: Spread,
    pub p99: Spread,
    pub max: Spread,
}

impl PercentileSpread {
    /// The spread of each percentile over `runs`.
    pub fn of<'a>(runs: impl IntoIterator<Item = &'a Percentiles>) -> Self {
        let runs: Vec<&Percentiles> = runs.into_iter().collect();
        let spread =
            |f: fn(&Percentiles) -> f64| Spread::of(&runs.iter().map(|p| f(p)).collect::<Vec<_>>());
        Self {
            p50: spread(|p| p.p50),
            p90: spread(|p| p.p90),
            p99: spread(|p| p.p99),
            max: spread(|p| p.max),
        }
    }

    /// The p50, p90, p99 and max cells of a table row.
    pub fn cells(&self) -> [String; 4] {
        [
            self.p50.show(2),
            self.p90.show(2),
            self.p99.show(2),
            self.max.show(1),
        ]
    }
}

/// The nearest-rank percentile of sorted values (0 when there are none).
pub fn nearest_rank(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A figure over several runs.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// The median (mean of the middle two for an even count) and range.
    pub fn of(values: &[f64]) -> Self {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return Self::default();
        }
        sorted.sort_by(|a, b| a.total_cmp(b));
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }

    /// `median (min–max)` with `decimals` digits; just the median for one run.
    pub fn show(&self, decimals: usize) -> String {
        let f = |v: f64| format_number(v, decimals);
        if (self.max - self.min).abs() < f64::EPSILON {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

/// A number with thousands separators for large values.
pub fn format_number(value: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return "-".into();
    }
    if value.abs() < 10_000.0 {
        return format!("{value:.decimals$}");
    }
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0 {
        out.insert(0, '-');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut ns: Vec<i64> = (1..=100).map(|v| v * 1_000_000).collect();
        let p = Percentiles::of_ns(&mut ns);
        assert_eq!((p.p50, p.p90, p.p99, p.max), (50.0, 90.0, 99.0, 100.0));
        assert_eq!(nearest_rank(&[], 50.0), 0);
    }

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(&[3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[1.0, 2.0]).median, 1.5);
        assert_eq!(format_number(1234567.0, 0), "1,234,567");
        assert_eq!(Spread::of(&[2.0]).show(1), "2.0");
    }
}
