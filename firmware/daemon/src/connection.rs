//! One admitted connection: the handshake, then its streams, each served
//! by `stream::handle`, until the peer goes or has held the connection with
//! no stream open for `CONNECTION_IDLE_NO_STREAM_MS_MAX`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::admission::{Peer, Slot, Source};
use crate::stream::Shared;

/// Application close code for a connection closed for holding no stream.
const CLOSE_IDLE: u32 = 1;

/// Counts a stream as open on its connection, and stamps its end.
struct OpenStream {
    open: Arc<AtomicUsize>,
    last_ms: Arc<AtomicU64>,
    since: Instant,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.last_ms
            .store(self.since.elapsed().as_millis() as u64, Ordering::Release);
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one connection; `slot` (its place in the connection budget) is
/// given back when this returns.
pub async fn serve(incoming: quinn::Incoming, slot: Slot, source: Source, shared: Arc<Shared>) {
    let _slot = slot;
    let connection = match incoming.await {
        Ok(c) => c,
        Err(e) => {
            tracing::info!(error = %e, %source, "handshake failed");
            return;
        }
    };
    let mut peer = Peer::new(source, &shared.budgets);
    // The session binding a peer fetch's proof signs (peer_serve.rs).
    let mut exporter = [0u8; 32];
    peer.exporter = connection
        .export_keying_material(&mut exporter, lockstep_protocol::FETCH_EXPORTER_LABEL, b"")
        .ok()
        .map(|()| exporter);
    let since = Instant::now();
    let open = Arc::new(AtomicUsize::new(0));
    let last_ms = Arc::new(AtomicU64::new(0));
    let idle_max = Duration::from_millis(lockstep_limits::CONNECTION_IDLE_NO_STREAM_MS_MAX);
    loop {
        let check = async {
            smol::Timer::after(idle_max / 4).await;
            None
        };
        let next = smol::future::or(async { Some(connection.accept_bi().await) }, check).await;
        match next {
            Some(Ok((send, recv))) => {
                open.fetch_add(1, Ordering::AcqRel);
                let guard = OpenStream {
                    open: open.clone(),
                    last_ms: last_ms.clone(),
                    since,
                };
                let (shared, peer) = (shared.clone(), peer.clone());
                smol::spawn(async move {
                    let _guard = guard;
                    crate::stream::handle(send, recv, shared, peer).await;
                })
                .detach();
            }
            Some(Err(_)) => return,
            None => {
                let idle_ms = (since.elapsed().as_millis() as u64)
                    .saturating_sub(last_ms.load(Ordering::Acquire));
                if open.load(Ordering::Acquire) == 0 && idle_ms >= idle_max.as_millis() as u64 {
                    tracing::debug!(%source, idle_ms, "closing a connection that holds no stream");
                    connection.close(
                        CLOSE_IDLE.into(),
                        b"idle: no stream open; reconnect when you have a request",
                    );
                    return;
                }
            }
        }
    }
}
