//! The fleet's parser of a node's exposition: strict and bounded. It
//! accepts exactly what [`encode`](crate::encode) writes (every family a
//! `# HELP` line, a `# TYPE` line, then its samples; no blank lines, other
//! comments or timestamps; every line ending in a newline) and refuses
//! anything else with a typed error, so a broken or hostile node costs the
//! fleet at most `MAX_METRICS_BYTES` and never reaches its output.

use std::collections::HashSet;

use lockstep_limits::{
    MAX_METRICS_BYTES, MAX_METRICS_LABELS, MAX_METRICS_LINES, MAX_METRICS_LINE_BYTES,
};

use crate::exposition::{is_label_name, is_metric_name, Family, Kind, Sample};

/// Why an exposition was refused. Lines count from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Over `MAX_METRICS_BYTES`.
    TooLarge { bytes: usize },
    /// Over `MAX_METRICS_LINES`.
    TooManyLines,
    /// A line over `MAX_METRICS_LINE_BYTES`.
    LineTooLong { line: usize },
    /// The text does not end with a newline (it was cut).
    Unterminated,
    /// A line that is not what the encoder writes there.
    Syntax { line: usize, what: &'static str },
    /// A family or series seen twice.
    Duplicate { line: usize, what: &'static str },
    /// A sample with more than `MAX_METRICS_LABELS` labels.
    TooManyLabels { line: usize },
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::TooLarge { bytes } => write!(
                f,
                "metrics of {bytes} bytes; at most {MAX_METRICS_BYTES} are read"
            ),
            ParseError::TooManyLines => {
                write!(f, "metrics of more than {MAX_METRICS_LINES} lines")
            }
            ParseError::LineTooLong { line } => write!(
                f,
                "metrics line {line} is over {MAX_METRICS_LINE_BYTES} bytes"
            ),
            ParseError::Unterminated => write!(f, "metrics text does not end with a newline"),
            ParseError::Syntax { line, what } => write!(f, "metrics line {line}: {what}"),
            ParseError::Duplicate { line, what } => {
                write!(f, "metrics line {line}: {what} seen twice")
            }
            ParseError::TooManyLabels { line } => write!(
                f,
                "metrics line {line}: more than {MAX_METRICS_LABELS} labels"
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses an exposition into its families, in order.
pub fn parse(text: &str) -> Result<Vec<Family>, ParseError> {
    if text.len() > MAX_METRICS_BYTES {
        return Err(ParseError::TooLarge { bytes: text.len() });
    }
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let Some(body) = text.strip_suffix('\n') else {
        return Err(ParseError::Unterminated);
    };
    let mut families: Vec<Family> = Vec::new();
    let mut names = HashSet::new();
    let mut series = HashSet::new();
    let mut lines = body.split('\n').enumerate().map(|(i, l)| (i + 1, l));
    let mut count = 0usize;
    let mut next = || -> Result<Option<(usize, &str)>, ParseError> {
        let Some((n, l)) = lines.next() else {
            return Ok(None);
        };
        count += 1;
        if count > MAX_METRICS_LINES {
            return Err(ParseError::TooManyLines);
        }
        if l.len() > MAX_METRICS_LINE_BYTES {
            return Err(ParseError::LineTooLong { line: n });
        }
        Ok(Some((n, l)))
    };
    while let Some((n, line)) = next()? {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let syntax = |what| ParseError::Syntax { line: n, what };
            let (name, help) = rest
                .split_once(' ')
                .ok_or(syntax("a HELP line is `# HELP name text`"))?;
            if !is_metric_name(name) {
                return Err(syntax("not a metric name"));
            }
            if !names.insert(name.to_string()) {
                return Err(ParseError::Duplicate {
                    line: n,
                    what: "the family",
                });
            }
            let help = unescape_help(help).ok_or(syntax("a bad escape in the help text"))?;
            let (tn, type_line) = next()?.ok_or(ParseError::Syntax {
                line: n + 1,
                what: "a HELP line is followed by its TYPE line",
            })?;
            let kind = type_line
                .strip_prefix("# TYPE ")
                .and_then(|r| r.split_once(' '))
                .filter(|(tname, _)| *tname == name)
                .and_then(|(_, k)| Kind::from_name(k))
                .ok_or(ParseError::Syntax {
                    line: tn,
                    what: "a HELP line is followed by `# TYPE name counter|gauge|histogram`",
                })?;
            families.push(Family {
                name: name.to_string(),
                help,
                kind,
                samples: Vec::new(),
            });
            continue;
        }
        let Some(family) = families.last_mut() else {
            return Err(ParseError::Syntax {
                line: n,
                what: "a sample before any family's HELP and TYPE",
            });
        };
        let (key, sample) = parse_sample(n, line)?;
        if !family.kind.admits(&family.name, &sample.name) {
            return Err(ParseError::Syntax {
                line: n,
                what: "a sample that is not of the family above it",
            });
        }
        if !series.insert(key.to_string()) {
            return Err(ParseError::Duplicate {
                line: n,
                what: "the series",
            });
        }
        family.samples.push(sample);
    }
    Ok(families)
}

fn unescape_help(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next()? {
                '\\' => out.push('\\'),
                'n' => out.push('\n'),
                _ => return None,
            }
        } else {
            out.push(c);
        }
    }
    Some(out)
}

/// One sample line: its series key (everything before the value) and the
/// sample.
fn parse_sample(n: usize, line: &str) -> Result<(&str, Sample), ParseError> {
    let syntax = |what| ParseError::Syntax { line: n, what };
    let name_end = line
        .find(['{', ' '])
        .ok_or(syntax("a sample is `name{labels} value`"))?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(syntax("not a metric name"));
    }
    let mut rest = &line[name_end..];
    let mut labels: Vec<(String, String)> = Vec::new();
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            let (label, after) = r
                .split_once("=\"")
                .ok_or(syntax("a label is `name=\"value\"`"))?;
            if !is_label_name(label) {
                return Err(syntax("not a label name"));
            }
            if labels.iter().any(|(l, _)| l == label) {
                return Err(ParseError::Duplicate {
                    line: n,
                    what: "a label",
                });
            }
            if labels.len() == MAX_METRICS_LABELS {
                return Err(ParseError::TooManyLabels { line: n });
            }
            let (value, after) = unescape_label_value(after)
                .ok_or(syntax("a label value is cut or badly escaped"))?;
            labels.push((label.to_string(), value));
            if let Some(a) = after.strip_prefix(',') {
                r = a;
            } else if let Some(a) = after.strip_prefix('}') {
                rest = a;
                break;
            } else {
                return Err(syntax("labels are separated by `,` and closed by `}`"));
            }
        }
        if labels.is_empty() {
            return Err(syntax("empty braces"));
        }
    }
    let value = rest
        .strip_prefix(' ')
        .ok_or(syntax("a single space before the value"))?;
    let key = &line[..line.len() - value.len() - 1];
    let value =
        parse_value(value).ok_or(syntax("a value is a decimal number, +Inf, -Inf or NaN"))?;
    Ok((
        key,
        Sample {
            name: name.to_string(),
            labels,
            value,
        },
    ))
}

/// A label value up to its closing quote: the value and what follows the
/// quote.
fn unescape_label_value(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => out.push('\\'),
                '"' => out.push('"'),
                'n' => out.push('\n'),
                _ => return None,
            },
            c => out.push(c),
        }
    }
    None
}

/// `-?[0-9]+(\.[0-9]+)?`, `+Inf`, `-Inf` or `NaN`: what `format_value`
/// writes, and nothing Rust's float parser would also take (`inf`, `1e5`).
fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => return Some(f64::INFINITY),
        "-Inf" => return Some(f64::NEG_INFINITY),
        "NaN" => return Some(f64::NAN),
        _ => {}
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    let (whole, fraction) = match digits.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (digits, None),
    };
    let all_digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    if !all_digits(whole) || fraction.is_some_and(|f| !all_digits(f)) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::encode;
    use proptest::prelude::*;

    const GOOD: &str = "# HELP a_total Things.\n# TYPE a_total counter\na_total{x=\"1\"} 2\n\
                        # HELP h Latency.\n# TYPE h histogram\nh_bucket{le=\"0.5\"} 1\n\
                        h_bucket{le=\"+Inf\"} 2\nh_sum 0.75\nh_count 2\n";

    #[test]
    fn what_the_encoder_writes_is_read() {
        let f = parse(GOOD).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].kind, Kind::Counter);
        assert_eq!(f[1].samples.len(), 4);
        assert_eq!(f[1].samples[2].value, 0.75);
        assert_eq!(encode(&f), GOOD);
        assert_eq!(parse("").unwrap(), vec![]);
    }

    #[test]
    fn anything_else_is_refused_with_its_line() {
        let syntax = |text: &str, line: usize| match parse(text) {
            Err(ParseError::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
            other => panic!("{text:?}: {other:?}"),
        };
        let head = "# HELP a x\n# TYPE a gauge\n";
        syntax("a 1\n", 1);
        syntax("# HELP a x\n", 2);
        syntax("# HELP a x\n# TYPE b gauge\n", 2);
        syntax("# HELP a x\n# TYPE a summary\n", 2);
        syntax("# HELP 1a x\n", 1);
        syntax("# HELP a x\\t\n# TYPE a gauge\n", 1);
        syntax(&format!("{head}b 1\n"), 3);
        syntax(&format!("{head}a  1\n"), 3);
        syntax(&format!("{head}a 1 1700000000\n"), 3);
        syntax(&format!("{head}a inf\n"), 3);
        syntax(&format!("{head}a 1e5\n"), 3);
        syntax(&format!("{head}a .5\n"), 3);
        syntax(&format!("{head}a{{}} 1\n"), 3);
        syntax(&format!("{head}a{{x=\"1\"1\n"), 3);
        syntax(&format!("{head}a{{x=\"1 1\n"), 3);
        syntax(&format!("{head}a{{x=\"\\q\"}} 1\n"), 3);
        syntax(&format!("{head}a{{__x=\"1\"}} 1\n"), 3);
        syntax(&format!("{head}\n"), 3);
        syntax(&format!("{head}# a comment\n"), 3);
        assert_eq!(parse("# HELP a x"), Err(ParseError::Unterminated));
        assert_eq!(
            parse(&format!("{head}{head}")),
            Err(ParseError::Duplicate {
                line: 3,
                what: "the family"
            })
        );
        assert_eq!(
            parse(&format!("{head}a{{x=\"1\"}} 1\na{{x=\"1\"}} 2\n")),
            Err(ParseError::Duplicate {
                line: 4,
                what: "the series"
            })
        );
        assert!(matches!(
            parse(&format!("{head}a{{x=\"1\",x=\"2\"}} 1\n")),
            Err(ParseError::Duplicate { line: 3, .. })
        ));
    }

    #[test]
    fn bounds_are_enforced() {
        let big = "#".repeat(MAX_METRICS_BYTES + 1);
        assert!(matches!(parse(&big), Err(ParseError::TooLarge { .. })));
        let long = format!("# HELP a {}\n", "x".repeat(MAX_METRICS_LINE_BYTES));
        assert_eq!(parse(&long), Err(ParseError::LineTooLong { line: 1 }));
        let mut many = String::from("# HELP a x\n# TYPE a gauge\n");
        for i in 0..MAX_METRICS_LINES {
            many.push_str(&format!("a{{i=\"{i}\"}} 1\n"));
        }
        assert_eq!(parse(&many), Err(ParseError::TooManyLines));
        let labels: Vec<String> = (0..=MAX_METRICS_LABELS)
            .map(|i| format!("l{i}=\"v\""))
            .collect();
        let wide = format!("# HELP a x\n# TYPE a gauge\na{{{}}} 1\n", labels.join(","));
        assert_eq!(parse(&wide), Err(ParseError::TooManyLabels { line: 3 }));
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}"
    }

    fn label() -> impl Strategy<Value = (String, String)> {
        (
            "[a-zA-Z][a-zA-Z0-9_]{0,10}",
            // Any text, escapes and non-ASCII included.
            "(\\PC|[\"\\\\\n]){0,16}",
        )
    }

    fn value() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<u32>().prop_map(f64::from),
            (-1e12f64..1e12),
            (0.0f64..1e-3),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            any::<f64>().prop_filter("not NaN", |v| !v.is_nan()),
        ]
    }

    fn family() -> impl Strategy<Value = Family> {
        (
            name(),
            "(\\PC|[\\\\\n]){0,40}",
            prop_oneof![
                Just(Kind::Counter),
                Just(Kind::Gauge),
                Just(Kind::Histogram)
            ],
            proptest::collection::vec(
                (
                    prop_oneof![Just(""), Just("_bucket"), Just("_sum"), Just("_count")],
                    proptest::collection::btree_map(
                        "[a-zA-Z][a-zA-Z0-9_]{0,10}",
                        label().prop_map(|(_, v)| v),
                        0..4,
                    ),
                    value(),
                ),
                0..6,
            ),
        )
            .prop_map(|(name, help, kind, samples)| {
                let mut seen = HashSet::new();
                let samples = samples
                    .into_iter()
                    .map(|(suffix, labels, value)| {
                        let suffix = match kind {
                            Kind::Histogram if suffix.is_empty() => "_sum",
                            Kind::Histogram => suffix,
                            _ => "",
                        };
                        Sample {
                            name: format!("{name}{suffix}"),
                            labels: labels.into_iter().collect(),
                            value,
                        }
                    })
                    // One line per series.
                    .filter(|s| seen.insert(format!("{}{:?}", s.name, s.labels)))
                    .collect();
                Family {
                    name,
                    help,
                    kind,
                    samples,
                }
            })
    }

    proptest! {
        #[test]
        fn encode_then_parse_round_trips(families in proptest::collection::vec(family(), 0..6)) {
            // Family names are unique in an exposition; a histogram's
            // series names must not collide with another family's.
            let mut names = HashSet::new();
            let families: Vec<Family> = families
                .into_iter()
                .filter(|f| {
                    ["", "_bucket", "_sum", "_count"]
                        .iter()
                        .all(|s| names.insert(format!("{}{s}", f.name)))
                })
                .collect();
            let text = encode(&families);
            prop_assert_eq!(parse(&text).unwrap(), families);
        }

        #[test]
        fn arbitrary_text_never_panics(text in "(\\PC|[\n\"\\\\{}=,# ]){0,200}") {
            // The fuzz target's invariant: what parses, encodes canonically.
            if let Ok(families) = parse(&text) {
                let again = encode(&families);
                prop_assert_eq!(encode(&parse(&again).unwrap()), again);
            }
        }

        #[test]
        fn near_miss_expositions_never_panic(
            lines in proptest::collection::vec(
                prop_oneof![
                    Just("# HELP a x".to_string()),
                    Just("# TYPE a gauge".to_string()),
                    Just("# TYPE a histogram".to_string()),
                    "a(_bucket|_sum|_count)?(\\{[a-z]{1,2}=\"[a-z\\\\\"]{0,3}\"(,[a-z]=\"1\")?\\})? (-?[0-9]{1,3}(\\.[0-9]{0,2})?|\\+Inf|NaN)",
                ],
                0..12,
            )
        ) {
            let text = lines.join("\n") + "\n";
            if let Ok(families) = parse(&text) {
                let again = encode(&families);
                prop_assert_eq!(encode(&parse(&again).unwrap()), again);
            }
        }
    }
}
