//! Test support (feature `testing`): a local ganache chain on loopback,
//! the pinned one from `contracts/node_modules` (`make test` installs it),
//! killed when dropped. Tests that need it fail, never skip, when it is
//! missing.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::client::RpcClient;
use crate::key::ChainKey;

/// The chain id the test chains use.
pub const CHAIN_ID: u64 = 1337;

/// Ether each test account starts with (in wei, decimal).
const BALANCE_WEI: &str = "1000000000000000000000";

/// The repository's root (this crate is `firmware/chain`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The pinned ganache (`contracts/node_modules/.bin/ganache`); panics
/// with what to run when it is missing.
pub fn ganache_bin() -> PathBuf {
    let ganache = repo_root().join("contracts/node_modules/.bin/ganache");
    assert!(
        ganache.exists(),
        "{} is missing: run `make test` (or `make contracts-deps`, or `cd contracts && npm ci`) to install the pinned ganache; this test never skips",
        ganache.display()
    );
    ganache
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("a bound socket's address")
        .port()
}

/// A ganache chain on loopback, killed when dropped.
pub struct Ganache {
    child: Child,
    /// Its JSON-RPC URL (`http://127.0.0.1:PORT`).
    pub url: String,
}

impl Ganache {
    /// Starts ganache with chain id [`CHAIN_ID`], funding `accounts`, and
    /// waits (up to 60 s) until it answers `eth_chainId`.
    pub fn start(accounts: &[&ChainKey]) -> Ganache {
        let ganache = ganache_bin();
        let port = free_port();
        let mut command = Command::new(&ganache);
        command
            .args(["--chain.chainId", &CHAIN_ID.to_string()])
            .args(["--server.host", "127.0.0.1"])
            .args(["--server.port", &port.to_string()])
            .arg("--logging.quiet");
        for account in accounts {
            command.arg("--wallet.accounts").arg(format!(
                "0x{},{BALANCE_WEI}",
                hex::encode(*account.to_bytes())
            ));
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {}: {e} (is Node.js installed? run `make test`)",
                    ganache.display()
                )
            });
        let mut chain = Ganache {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let rpc = chain.rpc();
        let started = Instant::now();
        loop {
            if let Ok(id) = rpc.chain_id() {
                assert_eq!(id, CHAIN_ID);
                break;
            }
            if let Some(status) = chain.child.try_wait().expect("poll ganache") {
                panic!("ganache exited before it answered: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "ganache did not answer within 60 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        chain
    }

    /// A client for this chain.
    pub fn rpc(&self) -> RpcClient {
        RpcClient::new(&self.url).expect("ganache's URL parses")
    }

    /// Moves the chain's clock `seconds` ahead and mines a block, so the
    /// next transaction's `block.timestamp` is later.
    pub fn advance(&self, seconds: u64) {
        let rpc = self.rpc();
        rpc.call("evm_increaseTime", json!([seconds]))
            .expect("evm_increaseTime");
        rpc.call("evm_mine", json!([])).expect("evm_mine");
    }
}

impl Drop for Ganache {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
