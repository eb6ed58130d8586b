//! The fleet inventory: by default one SQLite file
//! (`FLEET/inventory.sqlite3`); with `--db postgres://…` a PostgreSQL
//! database. The same migrations and the same SQL statements run on both
//! ([`db`] hides the difference).
//!
//! Concurrency: readers never block the writer (SQLite's WAL journal,
//! PostgreSQL's snapshots); every write is one transaction that takes the
//! inventory's writer lock up front (SQLite's `BEGIN IMMEDIATE`, a
//! PostgreSQL advisory lock), so two invocations never deadlock upgrading
//! read locks; and a second `lockstep-fleet` waits for the first
//! (`INVENTORY_BUSY_TIMEOUT_MS`) instead of failing. Schema changes are
//! numbered migrations applied in one transaction, recorded in SQLite's
//! `user_version` or PostgreSQL's one-row `schema_version` table.

mod db;

use std::path::{Path, PathBuf};

use lockstep_identity::KeyProtection;
use serde::Serialize;

use db::{vals, Db, DbError, Row, Tx};

/// File name of the inventory inside the fleet directory.
pub const INVENTORY_FILE: &str = "inventory.sqlite3";

/// Migration N (1-based) brings the schema from version N-1 to N. Append
/// only: a shipped migration is never edited. Plain SQL that PostgreSQL
/// also accepts, but for SQLite's `INTEGER PRIMARY KEY` of migrations 2
/// and 6, which PostgreSQL gets as an identity column
/// ([`db::migration_for_postgres`]); new migrations use no SQLite-only
/// syntax.
const MIGRATIONS: &[&str] = &[
    // 1: nodes and bundle releases.
    "CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        address TEXT NOT NULL,
        device_fingerprint TEXT NOT NULL,
        device TEXT NOT NULL,
        bundle_id TEXT NOT NULL,
        bundle_version BIGINT NOT NULL,
        image_version TEXT NOT NULL,
        certified BOOLEAN NOT NULL,
        certification_report_sha256 TEXT,
        enrolled_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE releases (
        version BIGINT PRIMARY KEY,
        bundle_id TEXT NOT NULL,
        dir TEXT NOT NULL,
        signed_at TEXT NOT NULL
    );",
    // 2: what was done to which node, for the operator's audit.
    "CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        node_id TEXT NOT NULL,
        at TEXT NOT NULL,
        what TEXT NOT NULL
    );",
    // 3: how each node's device key is protected; every node enrolled
    // before this had a file key.
    "ALTER TABLE nodes ADD COLUMN key_protection TEXT NOT NULL DEFAULT 'file';",
    // 4: the node's verified attestation (null for a file-key node
    // enrolled with --allow-file-key, and for nodes enrolled before).
    "ALTER TABLE nodes ADD COLUMN attestation_sha256 TEXT;
    ALTER TABLE nodes ADD COLUMN attested_release TEXT;",
    // 5: A/B image updates: the slot each node reports (null for nodes
    // enrolled before, and for nodes that are not A/B images), the last
    // image update's outcome, and every signed update version.
    "ALTER TABLE nodes ADD COLUMN slot TEXT;
    ALTER TABLE nodes ADD COLUMN image_variant TEXT;
    ALTER TABLE nodes ADD COLUMN update_floor BIGINT;
    ALTER TABLE nodes ADD COLUMN rolled_back_from TEXT;
    ALTER TABLE nodes ADD COLUMN last_update TEXT;
    ALTER TABLE nodes ADD COLUMN last_update_version BIGINT;
    ALTER TABLE nodes ADD COLUMN last_update_at TEXT;
    CREATE TABLE image_updates (
        version BIGINT PRIMARY KEY,
        name TEXT NOT NULL,
        image_version TEXT NOT NULL,
        target TEXT NOT NULL,
        dir TEXT NOT NULL,
        signed_at TEXT NOT NULL
    );",
    // 6: the on-chain registry (`chain deploy`; the newest row is the
    // fleet's) and each node's registration on a registry (`chain
    // register`, `chain revoke`; times are block timestamps, unix seconds).
    "CREATE TABLE chain_registries (
        id INTEGER PRIMARY KEY,
        rpc_url TEXT NOT NULL,
        chain_id BIGINT NOT NULL,
        address TEXT NOT NULL,
        deploy_tx TEXT NOT NULL,
        deployed_at TEXT NOT NULL
    );
    CREATE TABLE chain_nodes (
        node_id TEXT NOT NULL,
        registry TEXT NOT NULL,
        chain_address TEXT NOT NULL,
        registered_tx TEXT NOT NULL,
        registered_at BIGINT NOT NULL,
        revoked_tx TEXT,
        revoked_at BIGINT,
        PRIMARY KEY (node_id, registry)
    );",
];

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error(
        "inventory {at}: {source}; if another lockstep-fleet is running, wait for it and retry"
    )]
    Sql { at: String, source: DbError },
    #[error("cannot connect to PostgreSQL at {at}: {message} (is the server running, and does the database exist and belong to that user?)")]
    Connect { at: String, message: String },
    #[error("inventory {at} has schema version {found}, newer than this lockstep-fleet knows ({known}); upgrade lockstep-fleet")]
    TooNew { at: String, found: i64, known: i64 },
    #[error(
        "no inventory at {0}: run `lockstep-fleet init --dir FLEET` first, or pass the right --dir"
    )]
    Missing(PathBuf),
    #[error("no inventory in the PostgreSQL database {0}: run `lockstep-fleet init --db URL` first, or pass the right --db")]
    MissingPostgres(String),
    #[error("--db {url}: {why}")]
    BadUrl { url: String, why: String },
    #[error("no node {0} in the inventory: see `lockstep-fleet list`")]
    UnknownNode(String),
    #[error("{0} matches several nodes; give the full node id")]
    Ambiguous(String),
}

impl InventoryError {
    /// Whether the error is the caller's (a wrong --dir or --db, an
    /// unknown node: exit 2) rather than the machine's or the database's.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            InventoryError::TooNew { .. }
                | InventoryError::Missing(_)
                | InventoryError::MissingPostgres(_)
                | InventoryError::BadUrl { .. }
                | InventoryError::UnknownNode(_)
                | InventoryError::Ambiguous(_)
        )
    }
}

/// Where the inventory lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `inventory.sqlite3` in the fleet directory (the default).
    Sqlite,
    /// A PostgreSQL database (an empty one the user owns, for `init`).
    Postgres(Box<postgres::Config>),
}

impl Backend {
    /// The backend `--db URL` names: none is SQLite in the fleet
    /// directory; `postgres://` or `postgresql://` is PostgreSQL, over a
    /// loopback address or a unix socket and without TLS (for now).
    pub fn parse(url: Option<&str>) -> Result<Backend, InventoryError> {
        let Some(url) = url else {
            return Ok(Backend::Sqlite);
        };
        // Never repeat a password back.
        let shown = |url: &str| match url.parse::<postgres::Config>() {
            Ok(c) if c.get_password().is_some() => db::describe_postgres(&c),
            _ => url.to_string(),
        };
        let bad = |why: String| InventoryError::BadUrl {
            url: shown(url),
            why,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(bad(
                "not a database URL lockstep-fleet knows: give postgres://USER@HOST:PORT/DBNAME \
                 (or leave --db out for the SQLite file in the fleet directory)"
                    .into(),
            ));
        }
        let config: postgres::Config = url
            .parse()
            .map_err(|e: postgres::Error| bad(db::pg_message(&e)))?;
        db::check_postgres_url(&config).map_err(bad)?;
        Ok(Backend::Postgres(Box::new(config)))
    }
}

/// One enrolled node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRecord {
    pub node_id: String,
    pub address: String,
    pub device_fingerprint: String,
    pub device: String,
    pub bundle_id: String,
    pub bundle_version: u64,
    pub image_version: String,
    pub certified: bool,
    pub certification_report_sha256: Option<String>,
    /// "tpm-sealed" or "file", as the node stated at enrolment.
    pub key_protection: KeyProtection,
    pub enrolled_at: String,
    pub revoked_at: Option<String>,
    /// SHA-256 (hex) of the verified attestation (lockstep-attest's
    /// digest); null if the node was enrolled without one.
    pub attestation_sha256: Option<String>,
    /// The accepted image release its PCR 11 matched.
    pub attested_release: Option<String>,
    /// The A/B slot (`a` or `b`) the node last reported running from;
    /// null for a node that is not an A/B image (or enrolled before).
    pub slot: Option<String>,
    /// The image variant the node reported with its slot.
    pub image_variant: Option<String>,
    /// The node's update floor (highest update version it accepted).
    pub update_floor: Option<u64>,
    /// The image version the node last returned from because it did not
    /// come up healthy, as it reported.
    pub rolled_back_from: Option<String>,
    /// The outcome of the last `image push` to this node: `healthy`,
    /// `rolled-back` or `timed-out`.
    pub last_update: Option<String>,
    /// The update version of that push.
    pub last_update_version: Option<u64>,
    pub last_update_at: Option<String>,
}

impl NodeRecord {
    /// Takes the slot fields from what a node reports.
    pub fn set_slot(&mut self, slot: Option<&lockstep_protocol::admin::SlotInfo>) {
        self.slot = slot.map(|s| s.slot.clone());
        self.image_variant = slot.map(|s| s.variant.clone());
        self.update_floor = slot.map(|s| s.update_floor);
        self.rolled_back_from = slot.and_then(|s| s.rolled_back_from.clone());
    }
}

/// A signed image update (`image push`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImageUpdate {
    pub version: u64,
    pub name: String,
    pub image_version: String,
    pub target: String,
    /// Where `update.json` and its signature were saved.
    pub dir: String,
    pub signed_at: String,
}

/// What an image push learnt about a node: its state as it reported it
/// after the push (if it answered), and the outcome.
pub struct ImageState<'a> {
    pub image_version: Option<&'a str>,
    pub slot: Option<&'a lockstep_protocol::admin::SlotInfo>,
    /// `healthy`, `rolled-back` or `timed-out`.
    pub outcome: &'a str,
    pub version: u64,
}

/// A registry the fleet deployed (`chain deploy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainRegistry {
    pub rpc_url: String,
    pub chain_id: u64,
    /// The registry's address (EIP-55).
    pub address: String,
    /// The deployment's transaction hash (0x hex).
    pub deploy_tx: String,
    pub deployed_at: String,
}

/// A node's registration on a registry (`chain register`/`chain revoke`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainNode {
    pub node_id: String,
    /// The registry's address (EIP-55).
    pub registry: String,
    /// The node's chain address (EIP-55).
    pub chain_address: String,
    pub registered_tx: String,
    /// Block timestamp (unix seconds).
    pub registered_at: u64,
    pub revoked_tx: Option<String>,
    pub revoked_at: Option<u64>,
}

/// A signed bundle release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: u64,
    pub bundle_id: String,
    pub dir: String,
    pub signed_at: String,
}

pub struct Inventory {
    db: Db,
    /// Where the inventory is, for messages: the SQLite file, or
    /// PostgreSQL's `user@host:port/dbname`.
    at: String,
}

impl Inventory {
    /// Creates (or opens and migrates) the SQLite inventory in `dir`.
    pub fn create(dir: &Path) -> Result<Inventory, InventoryError> {
        Inventory::create_in(dir, &Backend::Sqlite)
    }

    /// Opens the existing SQLite inventory in `dir`, migrating it if it
    /// is older.
    pub fn open(dir: &Path) -> Result<Inventory, InventoryError> {
        Inventory::open_in(dir, &Backend::Sqlite)
    }

    /// [`Inventory::create`] on `backend` (the fleet directory `dir` holds
    /// the SQLite file; a PostgreSQL inventory needs no file there).
    pub fn create_in(dir: &Path, backend: &Backend) -> Result<Inventory, InventoryError> {
        Inventory::connect(dir, backend, true, MIGRATIONS.len())
    }

    /// [`Inventory::open`] on `backend`.
    pub fn open_in(dir: &Path, backend: &Backend) -> Result<Inventory, InventoryError> {
        Inventory::connect(dir, backend, false, MIGRATIONS.len())
    }

    /// Connects and migrates up to schema version `target` (below
    /// `MIGRATIONS.len()` only in tests of old inventories).
    fn connect(
        dir: &Path,
        backend: &Backend,
        create: bool,
        target: usize,
    ) -> Result<Inventory, InventoryError> {
        let (db, at) = match backend {
            Backend::Sqlite => {
                let path = dir.join(INVENTORY_FILE);
                if !create && !path.exists() {
                    return Err(InventoryError::Missing(path));
                }
                let at = path.display().to_string();
                let db = Db::open_sqlite(&path).map_err(|source| InventoryError::Sql {
                    at: at.clone(),
                    source,
                })?;
                (db, at)
            }
            Backend::Postgres(config) => {
                let at = db::describe_postgres(config);
                let db =
                    Db::connect_postgres(config).map_err(|source| InventoryError::Connect {
                        at: at.clone(),
                        message: db::pg_message(&source),
                    })?;
                (db, at)
            }
        };
        let mut inv = Inventory { db, at };
        inv.migrate(create, target)?;
        Ok(inv)
    }

    fn sql(&self) -> impl Fn(DbError) -> InventoryError + '_ {
        |source| InventoryError::Sql {
            at: self.at.clone(),
            source,
        }
    }

    /// Applies every migration newer than the inventory's schema version,
    /// in one write transaction (two processes migrating at once: the
    /// second waits, then finds nothing to do).
    fn migrate(&mut self, create: bool, target: usize) -> Result<(), InventoryError> {
        let at = self.at.clone();
        let known = MIGRATIONS.len() as i64;
        let outcome = self.db.write(|tx| {
            let Some(version) = tx.schema_version(create)? else {
                return Ok(Err(InventoryError::MissingPostgres(at.clone())));
            };
            if version > known {
                return Ok(Err(InventoryError::TooNew {
                    at: at.clone(),
                    found: version,
                    known,
                }));
            }
            if version < target as i64 {
                for m in &MIGRATIONS[version as usize..target] {
                    tx.migrate(m)?;
                }
                tx.set_schema_version(target as i64)?;
            }
            Ok(Ok(()))
        });
        outcome.map_err(self.sql())?
    }

    /// The schema version (SQLite's `user_version`, PostgreSQL's
    /// `schema_version` table).
    pub fn schema_version(&self) -> Result<i64, InventoryError> {
        Ok(self.db.schema_version().map_err(self.sql())?.unwrap_or(0))
    }

    fn write(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<(), DbError>,
    ) -> Result<(), InventoryError> {
        let at = self.at.clone();
        self.db
            .write(f)
            .map_err(|source| InventoryError::Sql { at, source })
    }

    /// Records (or re-records, un-revoking nothing) an enrolled node.
    pub fn upsert_node(&mut self, n: &NodeRecord) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO nodes (node_id, address, device_fingerprint, device, bundle_id,
                    bundle_version, image_version, certified, certification_report_sha256,
                    enrolled_at, revoked_at, key_protection, attestation_sha256, attested_release,
                    slot, image_variant, update_floor, rolled_back_from)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, $11, $12, $13,
                    $14, $15, $16, $17)
                 ON CONFLICT (node_id) DO UPDATE SET address = excluded.address,
                    device_fingerprint = excluded.device_fingerprint, device = excluded.device,
                    bundle_id = excluded.bundle_id, bundle_version = excluded.bundle_version,
                    image_version = excluded.image_version, certified = excluded.certified,
                    certification_report_sha256 = excluded.certification_report_sha256,
                    key_protection = excluded.key_protection,
                    attestation_sha256 = excluded.attestation_sha256,
                    attested_release = excluded.attested_release,
                    slot = excluded.slot, image_variant = excluded.image_variant,
                    update_floor = excluded.update_floor,
                    rolled_back_from = excluded.rolled_back_from",
                vals![
                    &n.node_id,
                    &n.address,
                    &n.device_fingerprint,
                    &n.device,
                    &n.bundle_id,
                    n.bundle_version as i64,
                    &n.image_version,
                    n.certified,
                    n.certification_report_sha256.as_deref(),
                    &n.enrolled_at,
                    n.key_protection.as_str(),
                    n.attestation_sha256.as_deref(),
                    n.attested_release.as_deref(),
                    n.slot.as_deref(),
                    n.image_variant.as_deref(),
                    n.update_floor.map(|v| v as i64),
                    n.rolled_back_from.as_deref(),
                ],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, 'enrolled')",
                vals![&n.node_id, &n.enrolled_at],
            )?;
            Ok(())
        })
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, InventoryError> {
        self.db
            .query(
                &format!("SELECT {NODE_COLUMNS} FROM nodes ORDER BY enrolled_at, node_id"),
                &[],
            )
            .and_then(|rows| rows.iter().map(row_to_node).collect())
            .map_err(self.sql())
    }

    /// A node by full id, by address, or by a unique prefix of its id.
    pub fn find(&self, which: &str) -> Result<NodeRecord, InventoryError> {
        let nodes = self.nodes()?;
        if let Some(n) = nodes
            .iter()
            .find(|n| n.node_id == which || n.address == which)
        {
            return Ok(n.clone());
        }
        let mut matches = nodes.iter().filter(|n| n.node_id.starts_with(which));
        match (matches.next(), matches.next()) {
            (Some(n), None) if !which.is_empty() => Ok(n.clone()),
            (Some(_), Some(_)) => Err(InventoryError::Ambiguous(which.to_string())),
            _ => Err(InventoryError::UnknownNode(which.to_string())),
        }
    }

    /// Looks a node up by exact id.
    pub fn get(&self, node_id: &str) -> Result<Option<NodeRecord>, InventoryError> {
        self.db
            .query_opt(
                &format!("SELECT {NODE_COLUMNS} FROM nodes WHERE node_id = $1"),
                vals![node_id],
            )
            .and_then(|row| row.as_ref().map(row_to_node).transpose())
            .map_err(self.sql())
    }

    /// Marks a node revoked (idempotent: the first revocation time stays).
    pub fn revoke(&mut self, node_id: &str, at: &str) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE nodes SET revoked_at = COALESCE(revoked_at, $1) WHERE node_id = $2",
                vals![at, node_id],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, 'revoked')",
                vals![node_id, at],
            )?;
            Ok(())
        })
    }

    /// Records a node's bundle after a successful push, with its
    /// certification for that bundle (a report names the bundle it
    /// certifies, so a new bundle usually leaves the node uncertified).
    pub fn set_bundle(
        &mut self,
        node_id: &str,
        reply: &lockstep_protocol::admin::AdminReply,
        at: &str,
    ) -> Result<(), InventoryError> {
        let (bundle_id, version) = (reply.bundle_id.as_str(), reply.bundle_version);
        self.write(|tx| {
            tx.execute(
                "UPDATE nodes SET bundle_id = $1, bundle_version = $2, certified = $3,
                 certification_report_sha256 = $4 WHERE node_id = $5",
                vals![
                    bundle_id,
                    version as i64,
                    reply.certified,
                    reply.certification_report_sha256.as_deref(),
                    node_id,
                ],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, $3)",
                vals![node_id, at, format!("bundle {bundle_id} release {version}")],
            )?;
            Ok(())
        })
    }

    /// Records what a node reported after an image push (its image
    /// version and slot) and the push's outcome.
    pub fn set_image(
        &mut self,
        node_id: &str,
        state: &ImageState<'_>,
        at: &str,
    ) -> Result<(), InventoryError> {
        let slot = state.slot;
        self.write(|tx| {
            if let Some(image_version) = state.image_version {
                tx.execute(
                    "UPDATE nodes SET image_version = $1, slot = $2, image_variant = $3,
                     update_floor = $4, rolled_back_from = $5 WHERE node_id = $6",
                    vals![
                        image_version,
                        slot.map(|s| s.slot.as_str()),
                        slot.map(|s| s.variant.as_str()),
                        slot.map(|s| s.update_floor as i64),
                        slot.and_then(|s| s.rolled_back_from.as_deref()),
                        node_id,
                    ],
                )?;
            }
            tx.execute(
                "UPDATE nodes SET last_update = $1, last_update_version = $2,
                 last_update_at = $3 WHERE node_id = $4",
                vals![state.outcome, state.version as i64, at, node_id],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, $3)",
                vals![
                    node_id,
                    at,
                    format!("image update {}: {}", state.version, state.outcome)
                ],
            )?;
            Ok(())
        })
    }

    /// The highest image update version signed so far, if any.
    pub fn last_update_version(&self) -> Result<Option<u64>, InventoryError> {
        self.max_version("SELECT MAX(version) FROM image_updates")
    }

    fn max_version(&self, sql: &str) -> Result<Option<u64>, InventoryError> {
        match self.db.query_opt(sql, &[]).map_err(self.sql())? {
            Some(row) => row.opt_u64(0).map_err(self.sql()),
            None => Ok(None),
        }
    }

    pub fn add_image_update(&mut self, u: &ImageUpdate) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO image_updates (version, name, image_version, target, dir, signed_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (version) DO UPDATE SET name = excluded.name,
                    image_version = excluded.image_version, target = excluded.target,
                    dir = excluded.dir, signed_at = excluded.signed_at",
                vals![
                    u.version as i64,
                    &u.name,
                    &u.image_version,
                    &u.target,
                    &u.dir,
                    &u.signed_at
                ],
            )?;
            Ok(())
        })
    }

    /// The next release version: one above every version signed so far.
    pub fn next_release_version(&self) -> Result<u64, InventoryError> {
        Ok(self
            .max_version("SELECT MAX(version) FROM releases")?
            .map_or(1, |v| v + 1))
    }

    pub fn add_release(&mut self, r: &Release) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO releases (version, bundle_id, dir, signed_at)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (version) DO UPDATE SET bundle_id = excluded.bundle_id,
                    dir = excluded.dir, signed_at = excluded.signed_at",
                vals![r.version as i64, &r.bundle_id, &r.dir, &r.signed_at],
            )?;
            Ok(())
        })
    }

    pub fn latest_release(&self) -> Result<Option<Release>, InventoryError> {
        self.db
            .query_opt(
                "SELECT version, bundle_id, dir, signed_at FROM releases
                 ORDER BY version DESC LIMIT 1",
                &[],
            )
            .and_then(|row| {
                row.map(|r| {
                    Ok(Release {
                        version: r.u64(0)?,
                        bundle_id: r.text(1)?,
                        dir: r.text(2)?,
                        signed_at: r.text(3)?,
                    })
                })
                .transpose()
            })
            .map_err(self.sql())
    }

    /// Records a registry the fleet deployed; it becomes the fleet's.
    pub fn add_chain_registry(&mut self, r: &ChainRegistry) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chain_registries (rpc_url, chain_id, address, deploy_tx, deployed_at)
                 VALUES ($1, $2, $3, $4, $5)",
                vals![
                    &r.rpc_url,
                    r.chain_id as i64,
                    &r.address,
                    &r.deploy_tx,
                    &r.deployed_at
                ],
            )?;
            Ok(())
        })
    }

    /// The fleet's registry: the last one deployed.
    pub fn chain_registry(&self) -> Result<Option<ChainRegistry>, InventoryError> {
        self.db
            .query_opt(
                "SELECT rpc_url, chain_id, address, deploy_tx, deployed_at
                 FROM chain_registries ORDER BY id DESC LIMIT 1",
                &[],
            )
            .and_then(|row| {
                row.map(|r| {
                    Ok(ChainRegistry {
                        rpc_url: r.text(0)?,
                        chain_id: r.u64(1)?,
                        address: r.text(2)?,
                        deploy_tx: r.text(3)?,
                        deployed_at: r.text(4)?,
                    })
                })
                .transpose()
            })
            .map_err(self.sql())
    }

    /// Records a node's registration on a registry.
    pub fn set_chain_registered(&mut self, n: &ChainNode, at: &str) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chain_nodes (node_id, registry, chain_address, registered_tx,
                    registered_at, revoked_tx, revoked_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (node_id, registry) DO UPDATE SET
                    chain_address = excluded.chain_address,
                    registered_tx = excluded.registered_tx,
                    registered_at = excluded.registered_at,
                    revoked_tx = excluded.revoked_tx, revoked_at = excluded.revoked_at",
                vals![
                    &n.node_id,
                    &n.registry,
                    &n.chain_address,
                    &n.registered_tx,
                    n.registered_at as i64,
                    n.revoked_tx.as_deref(),
                    n.revoked_at.map(|v| v as i64),
                ],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, $3)",
                vals![
                    &n.node_id,
                    at,
                    format!(
                        "registered on chain registry {} as {} (tx {})",
                        n.registry, n.chain_address, n.registered_tx
                    )
                ],
            )?;
            Ok(())
        })
    }

    /// Records a node's revocation on a registry.
    pub fn set_chain_revoked(
        &mut self,
        node_id: &str,
        registry: &str,
        revoked_tx: &str,
        revoked_at: u64,
        at: &str,
    ) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE chain_nodes SET revoked_tx = $1, revoked_at = $2
                 WHERE node_id = $3 AND registry = $4",
                vals![revoked_tx, revoked_at as i64, node_id, registry],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES ($1, $2, $3)",
                vals![
                    node_id,
                    at,
                    format!("revoked on chain registry {registry} (tx {revoked_tx})")
                ],
            )?;
            Ok(())
        })
    }

    /// A node's registration on `registry`, if the fleet recorded one.
    pub fn chain_node(
        &self,
        node_id: &str,
        registry: &str,
    ) -> Result<Option<ChainNode>, InventoryError> {
        self.db
            .query_opt(
                "SELECT node_id, registry, chain_address, registered_tx, registered_at,
                    revoked_tx, revoked_at
                 FROM chain_nodes WHERE node_id = $1 AND registry = $2",
                vals![node_id, registry],
            )
            .and_then(|row| {
                row.map(|r| {
                    Ok(ChainNode {
                        node_id: r.text(0)?,
                        registry: r.text(1)?,
                        chain_address: r.text(2)?,
                        registered_tx: r.text(3)?,
                        registered_at: r.u64(4)?,
                        revoked_tx: r.opt_text(5)?,
                        revoked_at: r.opt_u64(6)?,
                    })
                })
                .transpose()
            })
            .map_err(self.sql())
    }
}

/// The columns [`row_to_node`] reads, in its order.
const NODE_COLUMNS: &str = "node_id, address, device_fingerprint, device, bundle_id,
    bundle_version, image_version, certified, certification_report_sha256, enrolled_at,
    revoked_at, key_protection, attestation_sha256, attested_release, slot, image_variant,
    update_floor, rolled_back_from, last_update, last_update_version, last_update_at";

fn row_to_node(r: &Row) -> Result<NodeRecord, DbError> {
    Ok(NodeRecord {
        node_id: r.text(0)?,
        address: r.text(1)?,
        device_fingerprint: r.text(2)?,
        device: r.text(3)?,
        bundle_id: r.text(4)?,
        bundle_version: r.u64(5)?,
        image_version: r.text(6)?,
        certified: r.bool(7)?,
        certification_report_sha256: r.opt_text(8)?,
        enrolled_at: r.text(9)?,
        revoked_at: r.opt_text(10)?,
        key_protection: r.text(11)?.parse().map_err(|e: String| DbError::Column {
            index: 11,
            expected: "a key protection (tpm-sealed or file)",
            found: e,
        })?,
        attestation_sha256: r.opt_text(12)?,
        attested_release: r.opt_text(13)?,
        slot: r.opt_text(14)?,
        image_variant: r.opt_text(15)?,
        update_floor: r.opt_u64(16)?,
        rolled_back_from: r.opt_text(17)?,
        last_update: r.opt_text(18)?,
        last_update_version: r.opt_u64(19)?,
        last_update_at: r.opt_text(20)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each test below runs on both databases: `NAME::sqlite` and
    /// `NAME::postgres` (a fresh database on the test server).
    macro_rules! on_both {
        ($($name:ident),* $(,)?) => {$(
            mod $name {
                #[test]
                fn sqlite() {
                    super::$name(&super::Place::sqlite());
                }

                #[test]
                fn postgres() {
                    super::$name(&super::Place::postgres());
                }
            }
        )*};
    }

    on_both!(
        migrates_once_and_round_trips_nodes,
        a_newer_schema_is_refused,
        release_versions_count_up,
        concurrent_writers_all_land,
        inventories_from_before_image_updates_load_and_record_them,
        chain_registries_and_registrations_round_trip,
        nodes_enrolled_before_key_protection_are_file_keys,
    );

    /// Where a test's inventory is: a fleet directory and a backend.
    struct Place {
        dir: tempfile::TempDir,
        backend: Backend,
    }

    impl Place {
        fn sqlite() -> Place {
            Place {
                dir: tempfile::tempdir().unwrap(),
                backend: Backend::Sqlite,
            }
        }

        fn postgres() -> Place {
            let url = crate::pg_test_server::database_url();
            Place {
                dir: tempfile::tempdir().unwrap(),
                backend: Backend::parse(Some(&url)).unwrap(),
            }
        }

        fn create(&self) -> Inventory {
            Inventory::create_in(self.dir.path(), &self.backend).unwrap()
        }

        fn open(&self) -> Result<Inventory, InventoryError> {
            Inventory::open_in(self.dir.path(), &self.backend)
        }

        /// An inventory as a lockstep-fleet from before migration
        /// `version + 1` left it, with `rows` inserted.
        fn old(&self, version: usize, rows: &[&str]) {
            let mut inv =
                Inventory::connect(self.dir.path(), &self.backend, true, version).unwrap();
            assert_eq!(inv.schema_version().unwrap(), version as i64);
            inv.write(|tx| {
                for r in rows {
                    tx.execute(r, &[])?;
                }
                Ok(())
            })
            .unwrap();
        }
    }

    fn node(id: &str) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            address: format!("10.0.0.{}:4433", id.len()),
            device_fingerprint: "f".repeat(64),
            device: "cpu".into(),
            bundle_id: "b".repeat(64),
            bundle_version: 0,
            image_version: "dev".into(),
            certified: false,
            certification_report_sha256: None,
            key_protection: KeyProtection::TpmSealed,
            enrolled_at: "2026-01-01T00:00:00Z".into(),
            revoked_at: None,
            attestation_sha256: Some("a".repeat(64)),
            attested_release: Some("lockstep-1".into()),
            slot: None,
            image_variant: None,
            update_floor: None,
            rolled_back_from: None,
            last_update: None,
            last_update_version: None,
            last_update_at: None,
        }
    }

    fn migrates_once_and_round_trips_nodes(at: &Place) {
        let mut inv = at.create();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        inv.upsert_node(&node("RWQabc")).unwrap();
        drop(inv);
        let mut inv = at.open().unwrap();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(inv.find("RWQa").unwrap().node_id, "RWQabc");
        inv.revoke("RWQabc", "2026-02-01T00:00:00Z").unwrap();
        inv.revoke("RWQabc", "2026-03-01T00:00:00Z").unwrap();
        assert_eq!(
            inv.get("RWQabc").unwrap().unwrap().revoked_at.as_deref(),
            Some("2026-02-01T00:00:00Z")
        );
        assert!(matches!(
            inv.find("nope"),
            Err(InventoryError::UnknownNode(_))
        ));
    }

    fn a_newer_schema_is_refused(at: &Place) {
        at.create().write(|tx| tx.set_schema_version(99)).unwrap();
        let refused = at.open();
        assert!(
            matches!(refused, Err(InventoryError::TooNew { found: 99, .. })),
            "{:?}",
            refused.err()
        );
        assert!(refused.err().unwrap().is_usage());
    }

    fn release_versions_count_up(at: &Place) {
        let mut inv = at.create();
        assert_eq!(inv.next_release_version().unwrap(), 1);
        inv.add_release(&Release {
            version: 4,
            bundle_id: "x".into(),
            dir: "/b".into(),
            signed_at: "t".into(),
        })
        .unwrap();
        assert_eq!(inv.next_release_version().unwrap(), 5);
        assert_eq!(inv.latest_release().unwrap().unwrap().version, 4);
        // Signing a version again replaces its record.
        inv.add_release(&Release {
            version: 4,
            bundle_id: "y".into(),
            dir: "/c".into(),
            signed_at: "t2".into(),
        })
        .unwrap();
        assert_eq!(inv.latest_release().unwrap().unwrap().bundle_id, "y");
        assert_eq!(inv.next_release_version().unwrap(), 5);
    }

    /// Several threads, each with its own connection (as separate
    /// processes would have), writing at once: every write lands.
    fn concurrent_writers_all_land(at: &Place) {
        drop(at.create());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = at.dir.path().to_path_buf();
                let backend = at.backend.clone();
                std::thread::spawn(move || {
                    let mut inv = Inventory::open_in(&dir, &backend).unwrap();
                    for i in 0..25 {
                        inv.upsert_node(&node(&format!("RWQ-{t}-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let inv = at.open().unwrap();
        assert_eq!(inv.nodes().unwrap().len(), 200);
    }

    fn inventories_from_before_image_updates_load_and_record_them(at: &Place) {
        at.old(
            4,
            &[
                "INSERT INTO nodes VALUES ('RWQold', 'a', 'f', 'cpu', 'b', 0, 'dev', FALSE, NULL,
               't', NULL, 'file', NULL, NULL)",
            ],
        );
        let mut inv = at.open().unwrap();
        let old = inv.get("RWQold").unwrap().unwrap();
        assert_eq!(
            (old.slot, old.update_floor, old.last_update),
            (None, None, None)
        );
        assert_eq!(inv.last_update_version().unwrap(), None);
        let slot = lockstep_protocol::admin::SlotInfo {
            slot: "b".into(),
            variant: "lavapipe".into(),
            update_floor: 3,
            rolled_back_from: None,
            other_version: Some("dev".into()),
        };
        inv.set_image(
            "RWQold",
            &ImageState {
                image_version: Some("0.2.0"),
                slot: Some(&slot),
                outcome: "healthy",
                version: 3,
            },
            "t2",
        )
        .unwrap();
        inv.add_image_update(&ImageUpdate {
            version: 3,
            name: "lockstep-0.2.0".into(),
            image_version: "0.2.0".into(),
            target: "lavapipe".into(),
            dir: "/f/updates/3".into(),
            signed_at: "t2".into(),
        })
        .unwrap();
        let n = inv.get("RWQold").unwrap().unwrap();
        assert_eq!(n.image_version, "0.2.0");
        assert_eq!(n.slot.as_deref(), Some("b"));
        assert_eq!(n.update_floor, Some(3));
        assert_eq!(n.last_update.as_deref(), Some("healthy"));
        assert_eq!(n.last_update_version, Some(3));
        assert_eq!(inv.last_update_version().unwrap(), Some(3));
        // A timeout records the outcome and keeps what the node last said.
        inv.set_image(
            "RWQold",
            &ImageState {
                image_version: None,
                slot: None,
                outcome: "timed-out",
                version: 4,
            },
            "t3",
        )
        .unwrap();
        let n = inv.get("RWQold").unwrap().unwrap();
        assert_eq!(
            (n.slot.as_deref(), n.last_update.as_deref()),
            (Some("b"), Some("timed-out"))
        );
    }

    fn chain_registries_and_registrations_round_trip(at: &Place) {
        // An inventory from before the chain (schema 5).
        at.old(5, &[]);
        let mut inv = at.open().unwrap();
        inv.upsert_node(&node("RWQabc")).unwrap();
        assert_eq!(inv.chain_registry().unwrap(), None);
        let registry = |address: &str| ChainRegistry {
            rpc_url: "http://127.0.0.1:8545".into(),
            chain_id: 1337,
            address: address.into(),
            deploy_tx: "0xaa".into(),
            deployed_at: "2026-01-01T00:00:00Z".into(),
        };
        inv.add_chain_registry(&registry("0x01")).unwrap();
        inv.add_chain_registry(&registry("0x02")).unwrap();
        assert_eq!(inv.chain_registry().unwrap(), Some(registry("0x02")));
        let registered = ChainNode {
            node_id: "RWQabc".into(),
            registry: "0x02".into(),
            chain_address: "0x03".into(),
            registered_tx: "0xbb".into(),
            registered_at: 1_700_000_000,
            revoked_tx: None,
            revoked_at: None,
        };
        inv.set_chain_registered(&registered, "t").unwrap();
        assert_eq!(
            inv.chain_node("RWQabc", "0x02").unwrap().as_ref(),
            Some(&registered)
        );
        assert_eq!(inv.chain_node("RWQabc", "0x01").unwrap(), None);
        inv.set_chain_revoked("RWQabc", "0x02", "0xcc", 1_700_000_100, "t2")
            .unwrap();
        let revoked = inv.chain_node("RWQabc", "0x02").unwrap().unwrap();
        assert_eq!(
            (revoked.revoked_tx.as_deref(), revoked.revoked_at),
            (Some("0xcc"), Some(1_700_000_100))
        );
    }

    fn nodes_enrolled_before_key_protection_are_file_keys(at: &Place) {
        at.old(
            2,
            &[
                "INSERT INTO nodes VALUES ('RWQold', 'a', 'f', 'cpu', 'b', 0, 'dev', FALSE, NULL, 't', NULL)",
                "INSERT INTO events (node_id, at, what) VALUES ('RWQold', 't', 'enrolled')",
            ],
        );
        let mut inv = at.open().unwrap();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(inv.nodes().unwrap()[0].key_protection, KeyProtection::File);
        inv.upsert_node(&node("RWQnew")).unwrap();
        assert_eq!(
            inv.get("RWQnew").unwrap().unwrap().key_protection,
            KeyProtection::TpmSealed
        );
    }

    /// A file written before PostgreSQL support (schema in SQLite's
    /// `user_version`, booleans as 0/1) opens unchanged: no
    /// `schema_version` table appears in it.
    #[test]
    fn an_sqlite_file_from_before_postgres_opens_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INVENTORY_FILE);
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            for m in MIGRATIONS {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", MIGRATIONS.len() as i64)
                .unwrap();
            conn.execute(
                "INSERT INTO nodes (node_id, address, device_fingerprint, device, bundle_id,
                    bundle_version, image_version, certified, enrolled_at)
                 VALUES ('RWQold', 'a', 'f', 'cpu', 'b', 7, 'dev', 1, 't')",
                [],
            )
            .unwrap();
        }
        let inv = Inventory::open(dir.path()).unwrap();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        let old = inv.get("RWQold").unwrap().unwrap();
        assert_eq!((old.certified, old.bundle_version), (true, 7));
        drop(inv);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(tables, 0);
    }

    #[test]
    fn db_urls_are_checked() {
        assert!(matches!(Backend::parse(None), Ok(Backend::Sqlite)));
        assert!(matches!(
            Backend::parse(Some("postgresql://u@127.0.0.1:5432/fleet")),
            Ok(Backend::Postgres(_))
        ));
        for bad in [
            "mysql://u@127.0.0.1/fleet",
            "inventory.sqlite3",
            "postgres://u@10.1.2.3/fleet",
            "postgres://u@127.0.0.1/fleet?sslmode=require",
            "postgres://u@127.0.0.1:notaport/fleet",
        ] {
            let e = Backend::parse(Some(bad)).unwrap_err();
            assert!(e.is_usage(), "{bad}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
        let e = Backend::parse(Some("postgres://u:hunter2@db.example/fleet")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
}
