//! The Prometheus text exposition format, version 0.0.4: the data model
//! and its encoder.
//!
//! A family is written as `# HELP name text`, `# TYPE name kind`, then its
//! samples, one per line: `name{label="value",...} value`. Label values
//! escape `\`, `"` and newline; help text escapes `\` and newline. Values
//! are written as integers when they are whole (counters, gauges, bucket
//! counts), else in Rust's shortest round-trip decimal form, and `+Inf`,
//! `-Inf`, `NaN`. No timestamps: Prometheus stamps each scrape itself.
//!
//! A histogram family's samples are `name_bucket{...,le="bound"}`
//! (cumulative, the last `le="+Inf"`), `name_sum` and `name_count`.

use std::fmt::Write;

/// A family's metric type (`# TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }

    pub fn from_name(s: &str) -> Option<Kind> {
        match s {
            "counter" => Some(Kind::Counter),
            "gauge" => Some(Kind::Gauge),
            "histogram" => Some(Kind::Histogram),
            _ => None,
        }
    }

    /// Whether `sample` is a name a sample of the family `family` may
    /// have: the family's own name, or for a histogram its `_bucket`,
    /// `_sum` and `_count` series.
    pub fn admits(self, family: &str, sample: &str) -> bool {
        match self {
            Kind::Counter | Kind::Gauge => sample == family,
            Kind::Histogram => sample
                .strip_prefix(family)
                .is_some_and(|s| matches!(s, "_bucket" | "_sum" | "_count")),
        }
    }
}

/// One line of samples: its full name (with a histogram's suffix), its
/// labels in order, its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// A metric family: one HELP, one TYPE, its samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub kind: Kind,
    pub samples: Vec<Sample>,
}

/// Whether `s` is a metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
pub fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting
/// with `__` (reserved for Prometheus itself).
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    !s.starts_with("__")
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A sample value as the exposition writes it.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        // Whole numbers (every counter) without a trailing ".0"; `-0` as 0.
        format!("{}", v as i64)
    } else {
        // Rust's shortest representation that reads back to the same f64;
        // never an exponent, which Go's ParseFloat would accept anyway.
        format!("{v}")
    }
}

fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn escape_help(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Writes one sample line (with its newline) to `out`.
pub fn write_sample(out: &mut String, s: &Sample) {
    out.push_str(&s.name);
    if !s.labels.is_empty() {
        out.push('{');
        for (i, (name, value)) in s.labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(name);
            out.push_str("=\"");
            escape_label_value(out, value);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_value(s.value));
    out.push('\n');
}

/// The text exposition of `families`, in order. The caller keeps names
/// valid (the registry's are constants; the parser checks what it reads);
/// a debug build asserts it.
pub fn encode(families: &[Family]) -> String {
    let mut out = String::new();
    for f in families {
        debug_assert!(is_metric_name(&f.name), "{:?}", f.name);
        out.push_str("# HELP ");
        out.push_str(&f.name);
        out.push(' ');
        escape_help(&mut out, &f.help);
        out.push('\n');
        let _ = writeln!(out, "# TYPE {} {}", f.name, f.kind.as_str());
        for s in &f.samples {
            debug_assert!(f.kind.admits(&f.name, &s.name), "{:?}", s.name);
            debug_assert!(s.labels.iter().all(|(n, _)| is_label_name(n)));
            write_sample(&mut out, s);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            value,
        }
    }

    #[test]
    fn families_are_written_with_help_type_and_escaped_labels() {
        let text = encode(&[
            Family {
                name: "lockstep_jobs_total".into(),
                help: "Jobs run.\nBy \\ outcome.".into(),
                kind: Kind::Counter,
                samples: vec![
                    sample("lockstep_jobs_total", &[("outcome", "ok")], 3.0),
                    sample("lockstep_jobs_total", &[("outcome", "a\"b\\c\nd")], 0.0),
                ],
            },
            Family {
                name: "up".into(),
                help: String::new(),
                kind: Kind::Gauge,
                samples: vec![sample("up", &[], 1.0)],
            },
        ]);
        assert_eq!(
            text,
            "# HELP lockstep_jobs_total Jobs run.\\nBy \\\\ outcome.\n\
             # TYPE lockstep_jobs_total counter\n\
             lockstep_jobs_total{outcome=\"ok\"} 3\n\
             lockstep_jobs_total{outcome=\"a\\\"b\\\\c\\nd\"} 0\n\
             # HELP up \n\
             # TYPE up gauge\n\
             up 1\n"
        );
    }

    #[test]
    fn values_are_integers_when_whole_and_round_trip_otherwise() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-0.0), "0");
        assert_eq!(format_value(12345.0), "12345");
        assert_eq!(format_value(0.005), "0.005");
        assert_eq!(format_value(2.5), "2.5");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e20), "100000000000000000000");
        let tiny = 1.0e-7;
        assert_eq!(format_value(tiny).parse::<f64>().unwrap(), tiny);
    }

    #[test]
    fn names_follow_prometheus_rules() {
        assert!(is_metric_name("lockstep_jobs_total"));
        assert!(is_metric_name("a:b_c9"));
        assert!(!is_metric_name("9a"));
        assert!(!is_metric_name(""));
        assert!(!is_metric_name("a-b"));
        assert!(is_label_name("device"));
        assert!(!is_label_name("__name__"));
        assert!(!is_label_name("a:b"));
        assert!(!is_label_name("1a"));
        assert!(Kind::Histogram.admits("x", "x_bucket"));
        assert!(!Kind::Histogram.admits("x", "x"));
        assert!(!Kind::Counter.admits("x", "x_sum"));
    }
}
