//! Persistence of applied resources. [`Store`] is the seam a Kubernetes backend can replace;
//! [`SqliteStore`] is the embedded one (one file in the state dir, every commit one
//! transaction, so a batch lands whole or not at all and a restart loses nothing).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};

use tessera_model::ObjectKey;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {message}")]
    Db { path: PathBuf, message: String },
    #[error("store {path}: object {key} cannot be read back: {message}")]
    Corrupt {
        path: PathBuf,
        key: String,
        message: String,
    },
}

/// One persisted object: the resource as JSON plus the bookkeeping the store owns.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: ObjectKey,
    /// The resource, as JSON (metadata included).
    pub body: String,
    /// The store revision of the last write to this object.
    pub resource_version: u64,
    /// The store revision that created it: "oldest wins" rules order by it.
    pub created_revision: u64,
}

/// A write in a commit.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Put(Row),
    Delete(ObjectKey),
}

/// Where applied resources live.
pub trait Store: Send + Sync {
    /// Every object and the store's revision.
    fn load(&self) -> Result<(Vec<Row>, u64), StoreError>;
    /// Applies every write and moves the revision to `revision`, atomically.
    fn commit(&self, writes: &[Write], revision: u64) -> Result<(), StoreError>;
}

/// The embedded store: SQLite, WAL journal, synchronous commits.
pub struct SqliteStore {
    path: PathBuf,
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    namespace TEXT NOT NULL,
    name TEXT NOT NULL,
    resource_version INTEGER NOT NULL,
    created_revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
";

impl SqliteStore {
    /// Opens (or creates) the store file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let db = |e: rusqlite::Error| StoreError::Db {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        #[cfg(unix)]
        {
            // Secrets live here: the file is private before SQLite opens it, so the WAL
            // and shared-memory files it creates beside it get the same mode.
            use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path);
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            for side in ["-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(side);
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
            }
        }
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            conn: Mutex::new(conn),
        })
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |e| StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

impl Store for SqliteStore {
    fn load(&self) -> Result<(Vec<Row>, u64), StoreError> {
        let conn = self.conn.lock().unwrap();
        let db = self.db();
        let mut stmt = conn
            .prepare(
                "SELECT kind, namespace, name, body, resource_version, created_revision
                 FROM objects ORDER BY created_revision, kind, namespace, name",
            )
            .map_err(&db)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .map_err(&db)?;
        let mut out = Vec::new();
        for row in rows {
            let (kind, namespace, name, body, rv, created) = row.map_err(&db)?;
            let key =
                ObjectKey::parse(&kind, &namespace, &name).ok_or_else(|| StoreError::Corrupt {
                    path: self.path.clone(),
                    key: format!("{kind}/{namespace}/{name}"),
                    message: format!("unknown kind {kind:?}"),
                })?;
            out.push(Row {
                key,
                body,
                resource_version: rv as u64,
                created_revision: created as u64,
            });
        }
        let revision: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'revision'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(&db)?;
        let revision = revision.and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok((out, revision))
    }

    fn commit(&self, writes: &[Write], revision: u64) -> Result<(), StoreError> {
        let mut conn = self.conn.lock().unwrap();
        let db = self.db();
        let tx = conn.transaction().map_err(&db)?;
        for w in writes {
            match w {
                Write::Put(row) => {
                    tx.execute(
                        "INSERT INTO objects (kind, namespace, name, resource_version, created_revision, body)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                         ON CONFLICT (kind, namespace, name) DO UPDATE SET
                           resource_version = excluded.resource_version,
                           created_revision = excluded.created_revision,
                           body = excluded.body",
                        params![
                            row.key.kind.name(),
                            row.key.namespace,
                            row.key.name,
                            row.resource_version as i64,
                            row.created_revision as i64,
                            row.body
                        ],
                    )
                    .map_err(&db)?;
                }
                Write::Delete(key) => {
                    tx.execute(
                        "DELETE FROM objects WHERE kind = ?1 AND namespace = ?2 AND name = ?3",
                        params![key.kind.name(), key.namespace, key.name],
                    )
                    .map_err(&db)?;
                }
            }
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('revision', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![revision.to_string()],
        )
        .map_err(&db)?;
        tx.commit().map_err(&db)
    }
}

/// A store that keeps nothing across restarts (tests of the layers above).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<(std::collections::BTreeMap<ObjectKey, Row>, u64)>,
}

impl Store for MemoryStore {
    fn load(&self) -> Result<(Vec<Row>, u64), StoreError> {
        let g = self.inner.lock().unwrap();
        Ok((g.0.values().cloned().collect(), g.1))
    }

    fn commit(&self, writes: &[Write], revision: u64) -> Result<(), StoreError> {
        let mut g = self.inner.lock().unwrap();
        for w in writes {
            match w {
                Write::Put(row) => {
                    g.0.insert(row.key.clone(), row.clone());
                }
                Write::Delete(key) => {
                    g.0.remove(key);
                }
            }
        }
        g.1 = revision;
        Ok(())
    }
}
