//! The fleet inventory: one SQLite file (`FLEET/inventory.sqlite3`).
//!
//! Concurrency: WAL journal (readers never block the writer), every write
//! in a `BEGIN IMMEDIATE` transaction (the writer lock is taken up front, so
//! two invocations never deadlock upgrading read locks), and a busy timeout
//! (`INVENTORY_BUSY_TIMEOUT_MS`) so a second `lockstep-fleet` waits for the
//! first instead of failing. Schema changes are numbered migrations applied
//! in one transaction, recorded in SQLite's `user_version`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lockstep_identity::KeyProtection;
use lockstep_limits::INVENTORY_BUSY_TIMEOUT_MS;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

/// File name of the inventory inside the fleet directory.
pub const INVENTORY_FILE: &str = "inventory.sqlite3";

/// Migration N (1-based) brings the schema from version N-1 to N. Append
/// only: a shipped migration is never edited. Plain SQL that PostgreSQL
/// also accepts (docs/operations.md).
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
        "inventory {path}: {source}; if another lockstep-fleet is running, wait for it and retry"
    )]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("inventory {path} has schema version {found}, newer than this lockstep-fleet knows ({known}); upgrade lockstep-fleet")]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error(
        "no inventory at {0}: run `lockstep-fleet init --dir FLEET` first, or pass the right --dir"
    )]
    Missing(PathBuf),
    #[error("no node {0} in the inventory: see `lockstep-fleet list`")]
    UnknownNode(String),
    #[error("{0} matches several nodes; give the full node id")]
    Ambiguous(String),
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
    conn: Connection,
    path: PathBuf,
}

impl Inventory {
    /// Creates (or opens and migrates) the inventory in `dir`.
    pub fn create(dir: &Path) -> Result<Inventory, InventoryError> {
        Inventory::open_at(dir.join(INVENTORY_FILE), true)
    }

    /// Opens an existing inventory, migrating it if it is older.
    pub fn open(dir: &Path) -> Result<Inventory, InventoryError> {
        Inventory::open_at(dir.join(INVENTORY_FILE), false)
    }

    fn open_at(path: PathBuf, create: bool) -> Result<Inventory, InventoryError> {
        if !create && !path.exists() {
            return Err(InventoryError::Missing(path));
        }
        let sql = |source| InventoryError::Sql {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.busy_timeout(Duration::from_millis(INVENTORY_BUSY_TIMEOUT_MS))
            .map_err(sql)?;
        // WAL: readers see the last commit while a writer works.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        let mut inv = Inventory { conn, path };
        inv.migrate()?;
        Ok(inv)
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> InventoryError + '_ {
        |source| InventoryError::Sql {
            path: self.path.clone(),
            source,
        }
    }

    /// Applies every migration newer than the file's `user_version`, in
    /// one immediate transaction (two processes migrating at once: the
    /// second waits, then finds nothing to do).
    fn migrate(&mut self) -> Result<(), InventoryError> {
        let path = self.path.clone();
        let sql = |source| InventoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        let version: i64 = tx
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(sql)?;
        let known = MIGRATIONS.len() as i64;
        if version > known {
            return Err(InventoryError::TooNew {
                path: path.clone(),
                found: version,
                known,
            });
        }
        for m in &MIGRATIONS[version as usize..] {
            tx.execute_batch(m).map_err(sql)?;
        }
        tx.pragma_update(None, "user_version", known).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// The schema version (`PRAGMA user_version`).
    pub fn schema_version(&self) -> Result<i64, InventoryError> {
        self.conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(self.sql())
    }

    /// Records (or re-records, un-revoking nothing) an enrolled node.
    pub fn upsert_node(&mut self, n: &NodeRecord) -> Result<(), InventoryError> {
        let path = self.path.clone();
        let sql = |source| InventoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        tx.execute(
            "INSERT INTO nodes (node_id, address, device_fingerprint, device, bundle_id,
                bundle_version, image_version, certified, certification_report_sha256,
                enrolled_at, revoked_at, key_protection, attestation_sha256, attested_release,
                slot, image_variant, update_floor, rolled_back_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, ?11, ?12, ?13,
                ?14, ?15, ?16, ?17)
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
            params![
                n.node_id,
                n.address,
                n.device_fingerprint,
                n.device,
                n.bundle_id,
                n.bundle_version as i64,
                n.image_version,
                n.certified,
                n.certification_report_sha256,
                n.enrolled_at,
                n.key_protection.as_str(),
                n.attestation_sha256,
                n.attested_release,
                n.slot,
                n.image_variant,
                n.update_floor.map(|v| v as i64),
                n.rolled_back_from,
            ],
        )
        .map_err(sql)?;
        tx.execute(
            "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, 'enrolled')",
            params![n.node_id, n.enrolled_at],
        )
        .map_err(sql)?;
        tx.commit().map_err(sql)
    }

    pub fn nodes(&self) -> Result<Vec<NodeRecord>, InventoryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT node_id, address, device_fingerprint, device, bundle_id, bundle_version,
                    image_version, certified, certification_report_sha256, enrolled_at,
                    revoked_at, key_protection, attestation_sha256, attested_release,
                    slot, image_variant, update_floor, rolled_back_from, last_update,
                    last_update_version, last_update_at
                 FROM nodes ORDER BY enrolled_at, node_id",
            )
            .map_err(self.sql())?;
        let rows = stmt.query_map([], row_to_node).map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
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
        self.conn
            .query_row(
                "SELECT node_id, address, device_fingerprint, device, bundle_id, bundle_version,
                    image_version, certified, certification_report_sha256, enrolled_at,
                    revoked_at, key_protection, attestation_sha256, attested_release,
                    slot, image_variant, update_floor, rolled_back_from, last_update,
                    last_update_version, last_update_at
                 FROM nodes WHERE node_id = ?1",
                [node_id],
                row_to_node,
            )
            .optional()
            .map_err(self.sql())
    }

    /// Marks a node revoked (idempotent: the first revocation time stays).
    pub fn revoke(&mut self, node_id: &str, at: &str) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE nodes SET revoked_at = COALESCE(revoked_at, ?2) WHERE node_id = ?1",
                params![node_id, at],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, 'revoked')",
                params![node_id, at],
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
                "UPDATE nodes SET bundle_id = ?2, bundle_version = ?3, certified = ?4,
                 certification_report_sha256 = ?5 WHERE node_id = ?1",
                params![
                    node_id,
                    bundle_id,
                    version as i64,
                    reply.certified,
                    reply.certification_report_sha256
                ],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, ?3)",
                params![node_id, at, format!("bundle {bundle_id} release {version}")],
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
                    "UPDATE nodes SET image_version = ?2, slot = ?3, image_variant = ?4,
                     update_floor = ?5, rolled_back_from = ?6 WHERE node_id = ?1",
                    params![
                        node_id,
                        image_version,
                        slot.map(|s| s.slot.clone()),
                        slot.map(|s| s.variant.clone()),
                        slot.map(|s| s.update_floor as i64),
                        slot.and_then(|s| s.rolled_back_from.clone()),
                    ],
                )?;
            }
            tx.execute(
                "UPDATE nodes SET last_update = ?2, last_update_version = ?3,
                 last_update_at = ?4 WHERE node_id = ?1",
                params![node_id, state.outcome, state.version as i64, at],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, ?3)",
                params![
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
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(version) FROM image_updates", [], |r| r.get(0))
            .map_err(self.sql())?;
        Ok(max.map(|v| v as u64))
    }

    pub fn add_image_update(&mut self, u: &ImageUpdate) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO image_updates
                 (version, name, image_version, target, dir, signed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    u.version as i64,
                    u.name,
                    u.image_version,
                    u.target,
                    u.dir,
                    u.signed_at
                ],
            )?;
            Ok(())
        })
    }

    /// The next release version: one above every version signed so far.
    pub fn next_release_version(&self) -> Result<u64, InventoryError> {
        let max: Option<i64> = self
            .conn
            .query_row("SELECT MAX(version) FROM releases", [], |r| r.get(0))
            .map_err(self.sql())?;
        Ok(max.map_or(1, |v| v as u64 + 1))
    }

    pub fn add_release(&mut self, r: &Release) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO releases (version, bundle_id, dir, signed_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![r.version as i64, r.bundle_id, r.dir, r.signed_at],
            )?;
            Ok(())
        })
    }

    pub fn latest_release(&self) -> Result<Option<Release>, InventoryError> {
        self.conn
            .query_row(
                "SELECT version, bundle_id, dir, signed_at FROM releases
                 ORDER BY version DESC LIMIT 1",
                [],
                |r| {
                    Ok(Release {
                        version: r.get::<_, i64>(0)? as u64,
                        bundle_id: r.get(1)?,
                        dir: r.get(2)?,
                        signed_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql())
    }

    /// Records a registry the fleet deployed; it becomes the fleet's.
    pub fn add_chain_registry(&mut self, r: &ChainRegistry) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chain_registries (rpc_url, chain_id, address, deploy_tx, deployed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    r.rpc_url,
                    r.chain_id as i64,
                    r.address,
                    r.deploy_tx,
                    r.deployed_at
                ],
            )?;
            Ok(())
        })
    }

    /// The fleet's registry: the last one deployed.
    pub fn chain_registry(&self) -> Result<Option<ChainRegistry>, InventoryError> {
        self.conn
            .query_row(
                "SELECT rpc_url, chain_id, address, deploy_tx, deployed_at
                 FROM chain_registries ORDER BY id DESC LIMIT 1",
                [],
                |r| {
                    Ok(ChainRegistry {
                        rpc_url: r.get(0)?,
                        chain_id: r.get::<_, i64>(1)? as u64,
                        address: r.get(2)?,
                        deploy_tx: r.get(3)?,
                        deployed_at: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(self.sql())
    }

    /// Records a node's registration on a registry.
    pub fn set_chain_registered(&mut self, n: &ChainNode, at: &str) -> Result<(), InventoryError> {
        self.write(|tx| {
            tx.execute(
                "INSERT INTO chain_nodes (node_id, registry, chain_address, registered_tx,
                    registered_at, revoked_tx, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (node_id, registry) DO UPDATE SET
                    chain_address = excluded.chain_address,
                    registered_tx = excluded.registered_tx,
                    registered_at = excluded.registered_at,
                    revoked_tx = excluded.revoked_tx, revoked_at = excluded.revoked_at",
                params![
                    n.node_id,
                    n.registry,
                    n.chain_address,
                    n.registered_tx,
                    n.registered_at as i64,
                    n.revoked_tx,
                    n.revoked_at.map(|v| v as i64),
                ],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, ?3)",
                params![
                    n.node_id,
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
                "UPDATE chain_nodes SET revoked_tx = ?3, revoked_at = ?4
                 WHERE node_id = ?1 AND registry = ?2",
                params![node_id, registry, revoked_tx, revoked_at as i64],
            )?;
            tx.execute(
                "INSERT INTO events (node_id, at, what) VALUES (?1, ?2, ?3)",
                params![
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
        self.conn
            .query_row(
                "SELECT node_id, registry, chain_address, registered_tx, registered_at,
                    revoked_tx, revoked_at
                 FROM chain_nodes WHERE node_id = ?1 AND registry = ?2",
                params![node_id, registry],
                |r| {
                    Ok(ChainNode {
                        node_id: r.get(0)?,
                        registry: r.get(1)?,
                        chain_address: r.get(2)?,
                        registered_tx: r.get(3)?,
                        registered_at: r.get::<_, i64>(4)? as u64,
                        revoked_tx: r.get(5)?,
                        revoked_at: r.get::<_, Option<i64>>(6)?.map(|v| v as u64),
                    })
                },
            )
            .optional()
            .map_err(self.sql())
    }

    fn write(
        &mut self,
        f: impl FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>,
    ) -> Result<(), InventoryError> {
        let path = self.path.clone();
        let sql = |source| InventoryError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sql)?;
        f(&tx).map_err(sql)?;
        tx.commit().map_err(sql)
    }
}

fn row_to_node(r: &rusqlite::Row<'_>) -> rusqlite::Result<NodeRecord> {
    Ok(NodeRecord {
        node_id: r.get(0)?,
        address: r.get(1)?,
        device_fingerprint: r.get(2)?,
        device: r.get(3)?,
        bundle_id: r.get(4)?,
        bundle_version: r.get::<_, i64>(5)? as u64,
        image_version: r.get(6)?,
        certified: r.get(7)?,
        certification_report_sha256: r.get(8)?,
        enrolled_at: r.get(9)?,
        revoked_at: r.get(10)?,
        key_protection: r.get::<_, String>(11)?.parse().map_err(|e: String| {
            rusqlite::Error::FromSqlConversionFailure(11, rusqlite::types::Type::Text, e.into())
        })?,
        attestation_sha256: r.get(12)?,
        attested_release: r.get(13)?,
        slot: r.get(14)?,
        image_variant: r.get(15)?,
        update_floor: r.get::<_, Option<i64>>(16)?.map(|v| v as u64),
        rolled_back_from: r.get(17)?,
        last_update: r.get(18)?,
        last_update_version: r.get::<_, Option<i64>>(19)?.map(|v| v as u64),
        last_update_at: r.get(20)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn migrates_once_and_round_trips_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = Inventory::create(dir.path()).unwrap();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        inv.upsert_node(&node("RWQabc")).unwrap();
        drop(inv);
        let mut inv = Inventory::open(dir.path()).unwrap();
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

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Inventory::create(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(INVENTORY_FILE)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Inventory::open(dir.path()),
            Err(InventoryError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn release_versions_count_up() {
        let dir = tempfile::tempdir().unwrap();
        let mut inv = Inventory::create(dir.path()).unwrap();
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
    }

    /// Several threads, each with its own connection (as separate
    /// processes would have), writing at once: every write lands.
    #[test]
    fn concurrent_writers_all_land() {
        let dir = tempfile::tempdir().unwrap();
        drop(Inventory::create(dir.path()).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let dir = dir.path().to_path_buf();
                std::thread::spawn(move || {
                    let mut inv = Inventory::open(&dir).unwrap();
                    for i in 0..25 {
                        inv.upsert_node(&node(&format!("RWQ-{t}-{i}"))).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let inv = Inventory::open(dir.path()).unwrap();
        assert_eq!(inv.nodes().unwrap().len(), 200);
    }

    #[test]
    fn inventories_from_before_image_updates_load_and_record_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INVENTORY_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..4] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 4).unwrap();
            conn.execute(
                "INSERT INTO nodes VALUES ('RWQold', 'a', 'f', 'cpu', 'b', 0, 'dev', 0, NULL, 't',
                 NULL, 'file', NULL, NULL)",
                [],
            )
            .unwrap();
        }
        let mut inv = Inventory::open(dir.path()).unwrap();
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

    #[test]
    fn chain_registries_and_registrations_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INVENTORY_FILE);
        {
            // An inventory from before the chain (schema 5) with a node.
            let conn = Connection::open(&path).unwrap();
            for m in &MIGRATIONS[..5] {
                conn.execute_batch(m).unwrap();
            }
            conn.pragma_update(None, "user_version", 5).unwrap();
        }
        let mut inv = Inventory::open(dir.path()).unwrap();
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

    #[test]
    fn nodes_enrolled_before_key_protection_are_file_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(INVENTORY_FILE);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO nodes VALUES ('RWQold', 'a', 'f', 'cpu', 'b', 0, 'dev', 0, NULL, 't', NULL)",
                [],
            )
            .unwrap();
        }
        let mut inv = Inventory::open(dir.path()).unwrap();
        assert_eq!(inv.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(inv.nodes().unwrap()[0].key_protection, KeyProtection::File);
        inv.upsert_node(&node("RWQnew")).unwrap();
        assert_eq!(
            inv.get("RWQnew").unwrap().unwrap().key_protection,
            KeyProtection::TpmSealed
        );
    }
}
