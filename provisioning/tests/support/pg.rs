//! A throw-away PostgreSQL server for the inventory's tests: one per test
//! binary, started on first use, with a fresh database per test so tests
//! run in parallel (`database_url`). Shared by the unit tests
//! (src/lib.rs) and the integration tests (tests/fleet.rs).
//!
//! The server is Debian's (`/usr/lib/postgresql/VERSION/bin`, the newest;
//! `LOCKSTEP_PG_BIN` overrides the directory); `make test` installs the
//! `postgresql` package. Without it these tests fail, saying so: they do
//! not pass silently.
//!
//! `initdb` and `postgres` refuse to run as root, and tests (and CI) do:
//! as root they run as `nobody` (setpriv), in a temporary directory that
//! user owns. The server is only on loopback and its unix socket in that
//! directory, with trust authentication.
//!
//! No leftover processes: Rust never drops a static, so the server is not
//! stopped by a destructor. It runs under a small shell that reads its
//! stdin, a pipe from this process, until end of file, then stops the
//! server and removes the directory. The pipe closes when this process
//! exits however it exits (returns, panics, is killed), so the server goes
//! with it. Only a process killed during `initdb` (before the shell runs)
//! leaves its directory behind; the next test binary that starts a server
//! removes such directories (`sweep`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

struct Server {
    port: u16,
    /// The shell around `postgres`; its stdin is the pipe that keeps the
    /// server alive (see the module comment). Never waited for.
    _wrapper: Mutex<Child>,
    /// Serialises CREATE DATABASE (each copies the template database).
    admin: Mutex<postgres::Client>,
}

static SERVER: OnceLock<Server> = OnceLock::new();
static DATABASES: AtomicUsize = AtomicUsize::new(0);

/// A URL (`postgres://lockstep@127.0.0.1:PORT/test_N`) of a new, empty
/// database on this test binary's server, starting it on first use.
pub fn database_url() -> String {
    let server = SERVER.get_or_init(start);
    let name = format!("test_{}", DATABASES.fetch_add(1, Ordering::SeqCst));
    server
        .admin
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e:?}"));
    format!("postgres://lockstep@127.0.0.1:{}/{name}", server.port)
}

/// Debian's server binaries, the newest version.
fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LOCKSTEP_PG_BIN") {
        return PathBuf::from(dir);
    }
    let root = Path::new("/usr/lib/postgresql");
    let newest = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((version, bin))
        })
        .max();
    match newest {
        Some((_, bin)) => bin,
        None => panic!(
            "the PostgreSQL tests need a PostgreSQL server: no {}/*/bin/{{initdb,postgres}}; \
             install Debian's postgresql package (make test does: DEB_PACKAGES in the Makefile), \
             or set LOCKSTEP_PG_BIN to a directory holding initdb and postgres",
            root.display()
        ),
    }
}

fn command_output(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A command prefix that drops root to `nobody` (nothing when not root),
/// and chowns `dir` to that user.
fn unprivileged(dir: &Path) -> Vec<String> {
    if command_output(Command::new("id").arg("-u")) != "0" {
        return Vec::new();
    }
    let uid: u32 = command_output(Command::new("id").args(["-u", "nobody"]))
        .parse()
        .unwrap();
    let gid: u32 = command_output(Command::new("id").args(["-g", "nobody"]))
        .parse()
        .unwrap();
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).unwrap();
    vec![
        "setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
        "--".into(),
    ]
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The prefix of the servers' directories in the temporary directory;
/// the rest is the test process's id and a nonce.
const DIR_PREFIX: &str = "lockstep-pg-";

/// Removes the directories of servers whose test process is gone.
fn sweep() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Server {
    let bin = bin_dir();
    sweep();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!("{DIR_PREFIX}{}-{nanos}", std::process::id()));
    std::fs::create_dir(&dir).unwrap();
    let prefix = unprivileged(&dir);
    let run = |program: &Path| {
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(program);
                c
            }
            None => Command::new(program),
        };
        // The test's working directory may not be readable by `nobody`.
        cmd.current_dir(&dir);
        cmd
    };
    command_output(
        run(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-U", "lockstep", "--auth=trust", "--no-sync", "--no-locale"])
            .args(["-E", "UTF8"]),
    );
    let port = free_port();
    // Durability off (the data is thrown away), unless LOCKSTEP_PG_DURABLE
    // is set (the benchmark: commits as durable as SQLite's). mmap shared
    // memory: a container's /dev/shm may be tiny.
    let durability = if std::env::var_os("LOCKSTEP_PG_DURABLE").is_some() {
        ""
    } else {
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    let script = r#"
        "$0" -D "$1/data" -k "$1" -h 127.0.0.1 -p "$2" $3 \
            -c max_connections=300 -c dynamic_shared_memory_type=mmap >"$1/log" 2>&1 &
        pid=$!
        cat >/dev/null
        kill -INT "$pid"
        wait "$pid"
        rm -rf "$1"
    "#;
    let wrapper = run(Path::new("sh"))
        .args(["-c", script])
        .arg(bin.join("postgres"))
        .arg(&dir)
        .arg(port.to_string())
        .arg(durability)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting postgres: {e}"));
    let deadline = Instant::now() + READY_TIMEOUT;
    let admin = loop {
        let url = format!("host=127.0.0.1 port={port} user=lockstep dbname=postgres");
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(client) => break client,
            Err(e) if Instant::now() > deadline => {
                let mut log = String::new();
                let _ =
                    std::fs::File::open(dir.join("log")).map(|mut f| f.read_to_string(&mut log));
                panic!(
                    "PostgreSQL ({}) did not accept connections on 127.0.0.1:{port} within {:?}: {e:?}\n{log}",
                    bin.display(),
                    READY_TIMEOUT
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    Server {
        port,
        _wrapper: Mutex::new(wrapper),
        admin: Mutex::new(admin),
    }
}
