//! `lockstep-fleet metrics`: the fleet's metrics for Prometheus.
//!
//! At each scrape the fleet opens an admin session to every enrolled,
//! unrevoked node (pinned to its id, the same session as `bundle push`),
//! sends the operator-signed `Metrics` command, parses each node's
//! exposition strictly (`lockstep_metrics::parse`), labels every sample
//! with `node="<node id>"`, merges them (one HELP and TYPE per family) and
//! adds `lockstep_fleet_node_up{node}`: 1 for a node that answered with
//! metrics the fleet could read, 0 for one that did not (unreachable,
//! refused, too slow, malformed). One node's failure never fails the
//! scrape, and each node has `FLEET_METRICS_NODE_TIMEOUT_MS`.
//!
//! The metrics are served by the fleet on a local HTTP port, so no port
//! opens on the appliance: `GET /metrics` on a std `TcpListener`, plain
//! HTTP/1.1, one request per connection, served one connection at a time,
//! the request bounded in size (`FLEET_METRICS_HTTP_REQUEST_BYTES`) and in
//! time (`FLEET_METRICS_HTTP_TIMEOUT_MS`). There is no authentication on
//! that port: `lockstep-fleet` binds only loopback addresses unless told
//! `--allow-remote` (docs/operations.md, "Metrics").

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use lockstep_identity::{NodeId, SigningKey};
use lockstep_limits::{
    FLEET_METRICS_HTTP_REQUEST_BYTES, FLEET_METRICS_HTTP_TIMEOUT_MS, FLEET_METRICS_NODE_TIMEOUT_MS,
};
use lockstep_metrics::{Family, Kind, Merged, Sample};
use lockstep_protocol::admin::AdminAction;

use crate::inventory::NodeRecord;
use crate::session::Session;

/// The fleet's own family: whether each node's metrics were read.
pub const NODE_UP: &str = "lockstep_fleet_node_up";

/// The content type of the text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One scrape of the fleet: the merged exposition, and why each node that
/// is down is down (node id, one line).
pub struct Scrape {
    pub text: String,
    pub down: Vec<(String, String)>,
}

/// Reads every node's metrics (at most `FLEET_PUSH_PARALLELISM` at once,
/// each within `timeout`) and merges them, in inventory order.
pub fn scrape(nodes: &[NodeRecord], key: &SigningKey, timeout: Duration) -> Scrape {
    let results = crate::fanout::each(nodes, |node| fetch(node, key, timeout), |_, _| ());
    let mut merged = Merged::new();
    let mut up = Vec::with_capacity(nodes.len());
    let mut down = Vec::new();
    for (i, result) in results.into_iter().enumerate() {
        let id = &nodes[i].node_id;
        let result = result.and_then(|families| {
            merged
                .add_node(id, families)
                .map_err(|e| format!("its metrics cannot be merged: {e}"))
        });
        up.push(Sample {
            name: NODE_UP.into(),
            labels: vec![("node".into(), id.clone())],
            value: if result.is_ok() { 1.0 } else { 0.0 },
        });
        if let Err(why) = result {
            down.push((id.clone(), why));
        }
    }
    // No node sends a lockstep_fleet_* family (the merge refuses it), so
    // this cannot conflict.
    let _ = merged.add_fleet(Family {
        name: NODE_UP.into(),
        help: "1 if the fleet read the node's metrics at this scrape, 0 if the node was unreachable, refused, too slow or sent metrics the fleet could not read.".into(),
        kind: Kind::Gauge,
        samples: up,
    });
    Scrape {
        text: merged.encode(),
        down,
    }
}

/// One node's families: a pinned admin session, the signed `Metrics`
/// command, the strictly parsed reply, all within `timeout`.
pub fn fetch(
    node: &NodeRecord,
    key: &SigningKey,
    timeout: Duration,
) -> Result<Vec<Family>, String> {
    let addr: SocketAddr = node
        .address
        .parse()
        .map_err(|_| format!("inventory address {:?} is not ADDR:PORT", node.address))?;
    let id =
        NodeId::parse(&node.node_id).map_err(|e| format!("inventory node id is not a key: {e}"))?;
    let read = async {
        let session = Session::open(addr, Some(&id))
            .await
            .map_err(|e| e.to_string())?;
        let command = session.sign(key, AdminAction::Metrics, None);
        let reply = session
            .send(command, &[])
            .await
            .map_err(|e| e.to_string())?;
        reply
            .metrics
            .ok_or_else(|| "the node answered without metrics (an older node?)".to_string())
    };
    let text = smol::block_on(smol::future::or(read, async {
        smol::Timer::after(timeout).await;
        Err(format!("no metrics within {} ms", timeout.as_millis()))
    }))?;
    lockstep_metrics::parse(&text).map_err(|e| format!("unreadable metrics: {e}"))
}

/// What makes one scrape's body; `Err` is answered 503 with its line (the
/// fleet itself cannot scrape: Prometheus's `up` for the fleet turns 0).
pub type Scraper<'a> = &'a dyn Fn() -> Result<String, String>;

/// Serves `GET /metrics` on `listener` for ever, one connection at a time;
/// `metrics` makes the body of each scrape. A connection's failure is
/// logged and the next one served.
pub fn serve(listener: &TcpListener, metrics: Scraper) -> ! {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if let Err(e) = serve_one(stream, metrics) {
                    eprintln!("lockstep-fleet metrics: {peer}: {e}");
                }
            }
            // Out of file descriptors and the like: wait, do not spin.
            Err(e) => {
                eprintln!("lockstep-fleet metrics: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn serve_one(mut stream: TcpStream, metrics: Scraper) -> std::io::Result<()> {
    let limit = Duration::from_millis(FLEET_METRICS_HTTP_TIMEOUT_MS);
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let request = read_request(&mut stream)?;
    let response = respond(&request, metrics);
    stream.write_all(&response)?;
    stream.flush()
}

/// The request's head (up to its blank line), at most
/// `FLEET_METRICS_HTTP_REQUEST_BYTES`; more is returned cut, and then
/// refused by [`respond`].
fn read_request(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while request.len() <= FLEET_METRICS_HTTP_REQUEST_BYTES {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        request.extend_from_slice(&buf[..n]);
        if request.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    Ok(request)
}

/// The whole HTTP response to one request's head.
pub fn respond(request: &[u8], metrics: Scraper) -> Vec<u8> {
    let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if request.len() > FLEET_METRICS_HTTP_REQUEST_BYTES {
            response(
                431,
                "Request Header Fields Too Large",
                "request too large\n",
            )
        } else {
            response(400, "Bad Request", "an HTTP/1.1 request was expected\n")
        };
    };
    if end > FLEET_METRICS_HTTP_REQUEST_BYTES {
        return response(
            431,
            "Request Header Fields Too Large",
            "request too large\n",
        );
    }
    let head = String::from_utf8_lossy(&request[..end]);
    let line = head.lines().next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return response(400, "Bad Request", "an HTTP/1.1 request was expected\n");
    };
    if !version.starts_with("HTTP/1.") {
        return response(400, "Bad Request", "an HTTP/1.1 request was expected\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if path != "/metrics" {
        return response(404, "Not Found", "only /metrics is served here\n");
    }
    if method != "GET" {
        return response(405, "Method Not Allowed", "GET /metrics\n");
    }
    let body = match metrics() {
        Ok(body) => body,
        Err(e) => return response(503, "Service Unavailable", &format!("{e}\n")),
    };
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

fn response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The per-node timeout of a scrape.
pub fn node_timeout() -> Duration {
    Duration::from_millis(FLEET_METRICS_NODE_TIMEOUT_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(response: &[u8]) -> String {
        let text = String::from_utf8_lossy(response);
        text.lines().next().unwrap_or_default().to_string()
    }

    #[test]
    fn only_get_metrics_is_answered_with_metrics() {
        let body = || Ok("# HELP a x\n# TYPE a gauge\na 1\n".to_string());
        let ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &body);
        let text = String::from_utf8(ok).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains(&format!("Content-Type: {CONTENT_TYPE}\r\n")));
        assert!(text.contains("Content-Length: 30\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n# HELP a x\n# TYPE a gauge\na 1\n"));
        // Query parameters are ignored.
        let ok = respond(b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", &body);
        assert_eq!(status(&ok), "HTTP/1.1 200 OK");

        let never = || -> Result<String, String> { panic!("no scrape for a refused request") };
        for (request, code) in [
            (&b"GET / HTTP/1.1\r\n\r\n"[..], "404"),
            (b"GET /metricsx HTTP/1.1\r\n\r\n", "404"),
            (b"POST /metrics HTTP/1.1\r\n\r\n", "405"),
            (b"GET /metrics\r\n\r\n", "400"),
            (b"GET /metrics SPDY/3\r\n\r\n", "400"),
            (b"GET /metrics HTTP/1.1\r\n", "400"),
            (b"", "400"),
        ] {
            let r = respond(request, &never);
            assert!(
                status(&r).starts_with(&format!("HTTP/1.1 {code} ")),
                "{:?}: {}",
                String::from_utf8_lossy(request),
                status(&r)
            );
        }
        let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        big.resize(FLEET_METRICS_HTTP_REQUEST_BYTES + 10, b'a');
        assert!(status(&respond(&big, &never)).starts_with("HTTP/1.1 431 "));
        big.extend_from_slice(b"\r\n\r\n");
        assert!(status(&respond(&big, &never)).starts_with("HTTP/1.1 431 "));
        let broken = || Err("inventory: locked".to_string());
        let r = respond(b"GET /metrics HTTP/1.1\r\n\r\n", &broken);
        assert!(status(&r).starts_with("HTTP/1.1 503 "));
        assert!(String::from_utf8_lossy(&r).ends_with("inventory: locked\n"));
    }

    #[test]
    fn a_node_that_cannot_be_reached_is_down_and_the_scrape_goes_on() {
        let key = SigningKey::generate();
        let node = |address: &str, node_id: String| NodeRecord {
            node_id,
            address: address.into(),
            device_fingerprint: String::new(),
            device: String::new(),
            bundle_id: String::new(),
            bundle_version: 0,
            image_version: String::new(),
            certified: false,
            certification_report_sha256: None,
            key_protection: lockstep_identity::KeyProtection::File,
            enrolled_at: String::new(),
            revoked_at: None,
            attestation_sha256: None,
            attested_release: None,
            slot: None,
            image_variant: None,
            update_floor: None,
            rolled_back_from: None,
            last_update: None,
            last_update_version: None,
            last_update_at: None,
        };
        let id = SigningKey::generate().public().to_base64();
        // Nothing listens on a port just released; no key for the other.
        let port = {
            let l = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let nodes = [
            node(&format!("127.0.0.1:{port}"), id.clone()),
            node("not an address", "n2".into()),
        ];
        let s = scrape(&nodes, &key, Duration::from_millis(500));
        assert_eq!(s.down.len(), 2);
        assert!(s
            .text
            .contains(&format!("lockstep_fleet_node_up{{node=\"{id}\"}} 0\n")));
        assert!(s.text.contains("lockstep_fleet_node_up{node=\"n2\"} 0\n"));
        assert!(lockstep_metrics::parse(&s.text).is_ok());
    }
}
