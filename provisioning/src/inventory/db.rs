//! The inventory's two databases behind one small interface, so that the
//! same migrations and the same SQL statements run on both: SQLite (one
//! file in the fleet directory, the default) and PostgreSQL (`--db
//! postgres://…`).
//!
//! The statements use `$1`-style placeholders, numbered in order of first
//! appearance: PostgreSQL reads them as positions, SQLite as named
//! parameters that it numbers in order of first appearance, so both bind
//! the same values (checked in debug builds: [`placeholders_in_order`]).
//!
//! Writers are serialised on both: SQLite takes its writer lock up front
//! (`BEGIN IMMEDIATE`), PostgreSQL takes one transaction-scoped advisory
//! lock ([`WRITER_LOCK`]) first thing in every write transaction. Readers
//! never wait (WAL on SQLite, MVCC snapshots on PostgreSQL). A second
//! writer waits up to `INVENTORY_BUSY_TIMEOUT_MS` on both (SQLite's busy
//! timeout, PostgreSQL's `lock_timeout`).

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Duration;

use lockstep_limits::INVENTORY_BUSY_TIMEOUT_MS;
use postgres::types::{IsNull, ToSql, Type};
use rusqlite::types::ValueRef;
use rusqlite::TransactionBehavior;

/// The advisory lock every PostgreSQL write transaction holds: the
/// inventory's single-writer lock (`BEGIN IMMEDIATE` on SQLite). Any
/// constant would do; this one is "lockstep" in ASCII.
const WRITER_LOCK: i64 = 0x6c6f_636b_7374_6570;

/// How long connecting to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database error from either backend.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{}", pg_message(.0))]
    Postgres(#[from] postgres::Error),
    #[error("column {index}: expected {expected}, found {found}")]
    Column {
        index: usize,
        expected: &'static str,
        found: String,
    },
}

/// A postgres error with its cause (its `Display` alone says only "db
/// error" or "error connecting to server").
pub fn pg_message(e: &postgres::Error) -> String {
    let mut m = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        m.push_str(": ");
        m.push_str(&s.to_string());
        source = s.source();
    }
    m
}

/// A parameter or column value: the few types the inventory stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Text(String),
    Bool(bool),
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Text(v)
    }
}

impl From<&String> for Value {
    fn from(v: &String) -> Value {
        Value::Text(v.clone())
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Value {
        v.map_or(Value::Null, Into::into)
    }
}

/// `vals![a, b, …]`: statement parameters.
macro_rules! vals {
    ($($v:expr),* $(,)?) => { &[$($crate::inventory::db::Value::from($v)),*][..] };
}
pub(crate) use vals;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ToSqlOutput::Borrowed;
        Ok(match self {
            Value::Null => Borrowed(ValueRef::Null),
            Value::Int(v) => Borrowed(ValueRef::Integer(*v)),
            Value::Text(s) => Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bool(b) => Borrowed(ValueRef::Integer(i64::from(*b))),
        })
    }
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            // The inventory's integer columns are BIGINT, but a parameter
            // compared with an INTEGER (an id) arrives as INT4.
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Text(s) => s.to_sql(ty, out),
            Value::Bool(b) => b.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked per value in `to_sql` (the wrapped types' own checks).
        true
    }

    postgres::types::to_sql_checked!();
}

/// One result row.
pub struct Row(Vec<Value>);

impl Row {
    fn at(&self, index: usize) -> &Value {
        self.0.get(index).unwrap_or(&Value::Null)
    }

    fn wrong(&self, index: usize, expected: &'static str) -> DbError {
        DbError::Column {
            index,
            expected,
            found: format!("{:?}", self.at(index)),
        }
    }

    pub fn opt_text(&self, index: usize) -> Result<Option<String>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            _ => Err(self.wrong(index, "text")),
        }
    }

    pub fn text(&self, index: usize) -> Result<String, DbError> {
        self.opt_text(index)?
            .ok_or_else(|| self.wrong(index, "text"))
    }

    pub fn opt_int(&self, index: usize) -> Result<Option<i64>, DbError> {
        match self.at(index) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(*v)),
            _ => Err(self.wrong(index, "an integer")),
        }
    }

    /// An unsigned column value, stored as BIGINT bit for bit (both
    /// databases' widest integer is signed), as the inventory always has.
    pub fn opt_u64(&self, index: usize) -> Result<Option<u64>, DbError> {
        Ok(self.opt_int(index)?.map(|v| v as u64))
    }

    pub fn u64(&self, index: usize) -> Result<u64, DbError> {
        self.opt_u64(index)?
            .ok_or_else(|| self.wrong(index, "an integer"))
    }

    /// A BOOLEAN: SQLite stores it as 0 or 1.
    pub fn bool(&self, index: usize) -> Result<bool, DbError> {
        match self.at(index) {
            Value::Bool(b) => Ok(*b),
            Value::Int(v) => Ok(*v != 0),
            _ => Err(self.wrong(index, "a boolean")),
        }
    }
}

fn sqlite_row(r: &rusqlite::Row<'_>, columns: usize) -> rusqlite::Result<Row> {
    (0..columns)
        .map(|i| {
            Ok(match r.get_ref(i)? {
                ValueRef::Null => Value::Null,
                ValueRef::Integer(v) => Value::Int(v),
                ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                ValueRef::Real(_) | ValueRef::Blob(_) => {
                    return Err(rusqlite::Error::InvalidColumnType(
                        i,
                        r.as_ref().column_name(i)?.to_string(),
                        r.get_ref(i)?.data_type(),
                    ))
                }
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()
        .map(Row)
}

fn pg_row(r: &postgres::Row) -> Result<Row, DbError> {
    (0..r.len())
        .map(|i| {
            let ty = r.columns()[i].type_();
            Ok(match *ty {
                Type::BOOL => r.try_get::<_, Option<bool>>(i)?.into(),
                Type::INT2 => r.try_get::<_, Option<i16>>(i)?.map(i64::from).into(),
                Type::INT4 => r.try_get::<_, Option<i32>>(i)?.map(i64::from).into(),
                Type::INT8 => r.try_get::<_, Option<i64>>(i)?.into(),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                    r.try_get::<_, Option<String>>(i)?.into()
                }
                _ => {
                    return Err(DbError::Column {
                        index: i,
                        expected: "bool, integer or text",
                        found: ty.name().to_string(),
                    })
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Row)
}

/// Whether `$N` placeholders appear numbered in order of first appearance
/// ($1 before $2 …): SQLite numbers named parameters that way, so any
/// other order would bind the wrong values there.
pub fn placeholders_in_order(sql: &str) -> bool {
    let mut highest = 0;
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        rest = &rest[at + 1..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse::<u32>() {
            if n > highest + 1 {
                return false;
            }
            highest = highest.max(n);
        }
    }
    true
}

/// Rewrites a migration for PostgreSQL. The migrations are shipped and
/// never edited, and two of them use SQLite's `id INTEGER PRIMARY KEY`
/// (an alias of the row id, numbered automatically); PostgreSQL's
/// equivalent is an identity column. That is the only difference.
pub fn migration_for_postgres(sql: &str) -> String {
    sql.replace(
        "INTEGER PRIMARY KEY",
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    )
}

/// A connection to either database.
pub enum Db {
    Sqlite(rusqlite::Connection),
    /// The sync client needs `&mut` even to read; readers take `&self`,
    /// as SQLite's do (one connection per `Inventory`, used by one thread).
    Postgres(RefCell<postgres::Client>),
}

/// A write transaction on either database.
pub enum Tx<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    Postgres(postgres::Transaction<'a>),
}

fn check(sql: &str) {
    debug_assert!(
        placeholders_in_order(sql),
        "placeholders out of order in {sql}"
    );
}

impl Db {
    pub fn open_sqlite(path: &std::path::Path) -> Result<Db, DbError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(INVENTORY_BUSY_TIMEOUT_MS))?;
        // WAL: readers see the last commit while a writer works.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(Db::Sqlite(conn))
    }

    pub fn connect_postgres(config: &postgres::Config) -> Result<Db, postgres::Error> {
        let mut config = config.clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut client = config.connect(postgres::NoTls)?;
        // A second writer waits for the first as long as SQLite's busy
        // timeout lets it, then fails with "lock timeout".
        client.batch_execute(&format!(
            "SET lock_timeout = {INVENTORY_BUSY_TIMEOUT_MS}; SET client_min_messages = WARNING"
        ))?;
        Ok(Db::Postgres(RefCell::new(client)))
    }

    /// Every row `sql` returns.
    pub fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, DbError> {
        check(sql);
        match self {
            Db::Sqlite(conn) => sqlite_query(conn, sql, params),
            Db::Postgres(client) => client
                .borrow_mut()
                .query(sql, &pg_params(params))?
                .iter()
                .map(pg_row)
                .collect(),
        }
    }

    /// The first row `sql` returns, if any.
    pub fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, params)?.into_iter().next())
    }

    /// Runs `f` in a write transaction (see the module comment), committed
    /// if `f` succeeds and rolled back otherwise.
    pub fn write<T>(
        &mut self,
        f: impl FnOnce(&mut Tx<'_>) -> Result<T, DbError>,
    ) -> Result<T, DbError> {
        let mut tx = match self {
            Db::Sqlite(conn) => {
                Tx::Sqlite(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
            }
            Db::Postgres(client) => {
                let mut tx = client.get_mut().transaction()?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITER_LOCK])?;
                Tx::Postgres(tx)
            }
        };
        let value = f(&mut tx)?;
        match tx {
            Tx::Sqlite(tx) => tx.commit()?,
            Tx::Postgres(tx) => tx.commit()?,
        }
        Ok(value)
    }

    /// The schema version: SQLite's `user_version` (as inventories from
    /// before PostgreSQL have it), PostgreSQL's one-row `schema_version`
    /// table; `None` if a PostgreSQL database has no inventory yet.
    pub fn schema_version(&self) -> Result<Option<i64>, DbError> {
        match self {
            Db::Sqlite(conn) => Ok(Some(
                conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
            )),
            Db::Postgres(client) => {
                let mut client = client.borrow_mut();
                if !pg_has_schema_version(&mut *client)? {
                    return Ok(None);
                }
                let row = client.query_opt("SELECT version FROM schema_version", &[])?;
                Ok(Some(row.map_or(0, |r| r.get(0))))
            }
        }
    }
}

fn pg_params(params: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

fn sqlite_query(
    conn: &rusqlite::Connection,
    sql: &str,
    params: &[Value],
) -> Result<Vec<Row>, DbError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let columns = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params_from_iter(params), |r| {
        sqlite_row(r, columns)
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn pg_has_schema_version(client: &mut impl postgres::GenericClient) -> Result<bool, DbError> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables
             WHERE table_schema = current_schema() AND table_name = 'schema_version')",
            &[],
        )?
        .get(0))
}

impl Tx<'_> {
    /// Runs one statement; the number of rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64, DbError> {
        check(sql);
        match self {
            Tx::Sqlite(tx) => {
                let n = tx
                    .prepare_cached(sql)?
                    .execute(rusqlite::params_from_iter(params))?;
                Ok(n as u64)
            }
            Tx::Postgres(tx) => Ok(tx.execute(sql, &pg_params(params))?),
        }
    }

    /// Applies migration `sql` (several statements, no parameters).
    pub fn migrate(&mut self, sql: &str) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => tx.execute_batch(sql)?,
            Tx::Postgres(tx) => tx.batch_execute(&migration_for_postgres(sql))?,
        }
        Ok(())
    }

    /// The schema version inside the transaction (creating PostgreSQL's
    /// `schema_version` table, at 0, if `create`); `None` if there is no
    /// inventory and `create` is false.
    pub fn schema_version(&mut self, create: bool) -> Result<Option<i64>, DbError> {
        match self {
            Tx::Sqlite(tx) => Ok(Some(tx.query_row("PRAGMA user_version", [], |r| r.get(0))?)),
            Tx::Postgres(tx) => {
                if !pg_has_schema_version(tx)? {
                    if !create {
                        return Ok(None);
                    }
                    tx.batch_execute(
                        "CREATE TABLE schema_version (version BIGINT NOT NULL);
                         INSERT INTO schema_version (version) VALUES (0);",
                    )?;
                }
                let row = tx.query_opt("SELECT version FROM schema_version", &[])?;
                Ok(Some(row.map_or(0, |r| r.get(0))))
            }
        }
    }

    pub fn set_schema_version(&mut self, version: i64) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => tx.pragma_update(None, "user_version", version)?,
            Tx::Postgres(tx) => {
                tx.execute("UPDATE schema_version SET version = $1", &[&version])?;
            }
        }
        Ok(())
    }
}

/// Why a `--db` URL is refused.
pub fn check_postgres_url(config: &postgres::Config) -> Result<(), String> {
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(
            "sslmode=require: lockstep-fleet does not speak TLS to PostgreSQL yet; \
             use a loopback address or a unix socket (tunnel to a remote server: ssh -L)"
                .into(),
        );
    }
    if config.get_hosts().is_empty() {
        return Err(
            "no host: give one (postgres://USER@127.0.0.1:5432/DB) or a unix socket \
             directory (postgres://USER@%2Frun%2Fpostgresql/DB)"
                .into(),
        );
    }
    for host in config.get_hosts() {
        if let postgres::config::Host::Tcp(name) = host {
            let loopback = name == "localhost"
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                return Err(format!(
                    "host {name} is not loopback: lockstep-fleet connects to PostgreSQL \
                     without TLS, so only 127.0.0.1, ::1, localhost or a unix socket; reach \
                     a remote server through a tunnel (ssh -L 5432:localhost:5432 {name})"
                ));
            }
        }
    }
    if config.get_hostaddrs().iter().any(|ip| !ip.is_loopback()) {
        return Err(
            "hostaddr is not loopback: lockstep-fleet connects to PostgreSQL \
             without TLS, so only loopback or a unix socket"
                .into(),
        );
    }
    Ok(())
}

/// `user@host:port/dbname` (never the password), for messages.
pub fn describe_postgres(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "?".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{}@{host}:{port}/{}",
        config.get_user().unwrap_or("?"),
        config.get_dbname().or(config.get_user()).unwrap_or("?")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_must_come_in_order() {
        assert!(placeholders_in_order("SELECT $1, $2, $1, $3"));
        assert!(placeholders_in_order("SELECT 1"));
        assert!(!placeholders_in_order("UPDATE t SET a = $2 WHERE b = $1"));
        assert!(!placeholders_in_order("SELECT $1, $3"));
    }

    #[test]
    fn only_loopback_and_unix_sockets_without_tls() {
        let ok = |url: &str| check_postgres_url(&url.parse().unwrap());
        assert!(ok("postgres://u@127.0.0.1:5432/d").is_ok());
        assert!(ok("postgresql://u@localhost/d").is_ok());
        assert!(ok("postgres://u@[::1]:5432/d").is_ok());
        assert!(ok("postgres://u@%2Frun%2Fpostgresql/d").is_ok());
        assert!(ok("postgres://u@127.0.0.1/d?sslmode=disable").is_ok());
        assert!(ok("postgres://u@db.example:5432/d")
            .unwrap_err()
            .contains("not loopback"));
        assert!(ok("postgres://u@127.0.0.1/d?sslmode=require")
            .unwrap_err()
            .contains("TLS"));
        assert_eq!(
            describe_postgres(&"postgres://u:secret@127.0.0.1:6000/d".parse().unwrap()),
            "u@127.0.0.1:6000/d"
        );
    }
}
