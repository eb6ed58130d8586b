//! `lockstep-fleet metrics` scraped by the real Prometheus server
//! (Debian's `prometheus` package), all on loopback: a node runs jobs, the
//! fleet serves the fleet's metrics, Prometheus scrapes them every second,
//! and the test reads the values back through Prometheus's query API.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fleet, fleet_bin, init, ok, start, submit};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// How long Prometheus gets to start, scrape and answer with the values.
const WAIT: Duration = Duration::from_secs(60);

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `lockstep-fleet metrics --listen 127.0.0.1:0`, and the address it
/// printed.
fn serve_metrics(fleet_dir: &Path) -> (Killed, String) {
    let mut child = Command::new(fleet_bin())
        .arg("--dir")
        .arg(fleet_dir)
        .args(["metrics", "--listen", "127.0.0.1:0"])
        .env_remove("LOCKSTEP_KEY_PASSWORD")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let guard = Killed(child);
    let url = line
        .trim()
        .strip_prefix("lockstep-fleet metrics listening on http://")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let addr = url.strip_suffix("/metrics").unwrap().to_string();
    (guard, addr)
}

/// One HTTP/1.0 GET (so the answer is never chunked): status line and body.
fn get(addr: &str, target: &str) -> std::io::Result<(String, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head.lines().next().unwrap_or_default().to_string();
    Ok((status, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The instant vector Prometheus answers to `query`: each series' labels
/// and value.
fn query(prometheus: &str, query: &str) -> Vec<(serde_json::Value, f64)> {
    let Ok((status, body)) = get(
        prometheus,
        &format!("/api/v1/query?query={}", url_encode(query)),
    ) else {
        return Vec::new();
    };
    if !status.contains(" 200 ") {
        return Vec::new();
    }
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["status"], "success", "{body}");
    answer["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let value = r["value"][1].as_str().unwrap().parse().unwrap();
            (r["metric"].clone(), value)
        })
        .collect()
}

#[test]
fn prometheus_scrapes_the_fleets_metrics() {
    assert!(
        Path::new(PROMETHEUS).exists(),
        "{PROMETHEUS} is missing: install the Debian package `prometheus` (apt-get install --no-install-recommends prometheus; `make test` installs it)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let node = start(&tmp.path().join("node"), &[]);
    let f = tmp.path().join("fleet");
    init(&f);
    ok(&fleet(&f, &["enroll", "--allow-file-key", &node.addr]));
    const JOBS: u32 = 2;
    for i in 0..JOBS {
        submit(
            &node,
            &tmp.path().join(format!("r{i}.json")),
            &tmp.path().join(format!("out{i}")),
        );
    }

    // Once, to stdout: the node's counters, labelled with its id.
    let once = ok(&fleet(&f, &["metrics", "--once"]));
    let jobs_ok = format!(
        "lockstep_jobs_total{{node=\"{}\",device=\"{}\",outcome=\"ok\"}} {JOBS}\n",
        node.key,
        "0".repeat(32)
    );
    assert!(once.contains(&jobs_ok), "{once}");
    assert!(
        once.contains(&format!(
            "lockstep_fleet_node_up{{node=\"{}\"}} 1\n",
            node.key
        )),
        "{once}"
    );

    let (_fleet_metrics, fleet_addr) = serve_metrics(&f);
    let (status, body) = get(&fleet_addr, "/metrics").unwrap();
    assert!(status.contains(" 200 "), "{status}");
    assert!(body.contains(&jobs_ok), "{body}");
    let (status, _) = get(&fleet_addr, "/").unwrap();
    assert!(status.contains(" 404 "), "{status}");

    let web = format!("127.0.0.1:{}", free_port());
    let config = tmp.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: lockstep-fleet\n    static_configs:\n      - targets: ['{fleet_addr}']\n"
        ),
    )
    .unwrap();
    let log = tmp.path().join("prometheus.log");
    let _prometheus = Killed(
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                tmp.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let log_tail = || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };

    let deadline = Instant::now() + WAIT;
    let jobs = loop {
        let found = query(&web, "lockstep_jobs_total{outcome=\"ok\"}");
        if found.iter().any(|(_, v)| *v == f64::from(JOBS)) || Instant::now() > deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(
        jobs.len(),
        1,
        "Prometheus did not report the jobs within {WAIT:?}: {jobs:?}\nprometheus log:\n{}",
        log_tail()
    );
    let (labels, value) = &jobs[0];
    assert_eq!(*value, f64::from(JOBS));
    assert_eq!(labels["node"], node.key.as_str());
    assert_eq!(labels["device"], "0".repeat(32).as_str());
    assert_eq!(labels["job"], "lockstep-fleet");

    let up = query(&web, "lockstep_fleet_node_up");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].0["node"], node.key.as_str());
    assert_eq!(up[0].1, 1.0);
}

#[test]
fn the_metrics_port_is_loopback_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("fleet");
    init(&f);
    let out = fleet(&f, &["metrics", "--listen", "0.0.0.0:0"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(err.contains("--allow-remote"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // Neither --listen nor --once: a usage error.
    assert_eq!(fleet(&f, &["metrics"]).status.code(), Some(2));
    // An empty fleet: the fleet's own family, without samples.
    let once = ok(&fleet(&f, &["metrics", "--once"]));
    let families = lockstep_metrics::parse(&once).unwrap();
    assert_eq!(families.len(), 1, "{once}");
    assert_eq!(families[0].name, "lockstep_fleet_node_up");
    assert!(families[0].samples.is_empty(), "{once}");
}
