//! The control-plane store: what tenants configure through the API, in an embedded SQLite
//! database. So far: the SIP IP access list (seed 001).
//!
//! Every write is one transaction, and returns only once SQLite has made it durable (WAL
//! journal, `synchronous = FULL`): what the API acknowledges survives a crash of the process or
//! the machine. Every read and write is scoped to one tenant; [`Store::all_access`] is the one
//! cross-tenant read, for building the admission snapshot.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use policy::AccessEntry;
use policy::admission::Tenant;
use policy::body::IpAccessEntryBody;
use rusqlite::{Connection, OptionalExtension, params};

/// Why the store failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError(format!("database: {error}"))
    }
}

/// An access-list entry as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    /// Its id, unique across tenants (`acl-` and 16 hex digits).
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The address or network.
    pub entry: AccessEntry,
    /// The tenant's description.
    pub description: Option<String>,
}

/// The schema, applied on open. `IF NOT EXISTS` keeps opening an existing database harmless.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS access_entries (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    address     TEXT NOT NULL,
    description TEXT
);
CREATE INDEX IF NOT EXISTS access_entries_by_tenant ON access_entries (tenant);
";

/// The database.
pub struct Store {
    connection: Mutex<Connection>,
}

/// A new id: 64 random bits (the process's hasher keys are random; each state is different).
fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{prefix}-{bits:016x}")
}

fn record(
    id: String,
    tenant: String,
    address: &str,
    description: Option<String>,
) -> Result<AccessRecord, StoreError> {
    let entry = address
        .parse()
        .map_err(|e| StoreError(format!("stored entry {id} ({address:?}) is invalid: {e}")))?;
    Ok(AccessRecord {
        id,
        tenant,
        entry,
        description,
    })
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let connection =
            Connection::open(path).map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    fn connection(&self) -> MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds an entry to `tenant`'s access list.
    pub fn add_access(
        &self,
        tenant: &str,
        body: &IpAccessEntryBody,
    ) -> Result<AccessRecord, StoreError> {
        let id = new_id("acl");
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        transaction.execute(
            "INSERT INTO access_entries (id, tenant, address, description) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, body.address.to_string(), body.description],
        )?;
        transaction.commit()?;
        Ok(AccessRecord {
            id,
            tenant: tenant.to_owned(),
            entry: body.address,
            description: body.description.clone(),
        })
    }

    /// `tenant`'s entries, oldest first.
    pub fn access_entries(&self, tenant: &str) -> Result<Vec<AccessRecord>, StoreError> {
        self.select(
            "SELECT id, tenant, address, description FROM access_entries WHERE tenant = ?1 ORDER BY rowid",
            Some(tenant),
        )
    }

    /// Every tenant's entries, for the admission snapshot.
    pub fn all_access(&self) -> Result<Vec<AccessRecord>, StoreError> {
        self.select(
            "SELECT id, tenant, address, description FROM access_entries ORDER BY rowid",
            None,
        )
    }

    fn select(&self, sql: &str, tenant: Option<&str>) -> Result<Vec<AccessRecord>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(sql)?;
        let row = |row: &rusqlite::Row<'_>| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, Option<String>>(3)?,
            ))
        };
        let rows = match tenant {
            Some(tenant) => statement.query_map(params![tenant], row)?,
            None => statement.query_map([], row)?,
        };
        rows.map(|found| {
            let (id, tenant, address, description) = found?;
            record(id, tenant, &address, description)
        })
        .collect()
    }

    /// Deletes `tenant`'s entry `id`; `false` when the tenant has no such entry (another
    /// tenant's entry is not found either).
    pub fn delete_access(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let deleted = transaction.execute(
            "DELETE FROM access_entries WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        transaction.commit()?;
        Ok(deleted == 1)
    }

    /// Adds every stored entry to its tenant's access list in `tenants` (a tenant the
    /// configuration does not name is added, with no agents).
    pub fn merge_into(&self, tenants: &mut Vec<Tenant>) -> Result<(), StoreError> {
        for record in self.all_access()? {
            match tenants.iter_mut().find(|t| t.id == record.tenant) {
                Some(tenant) => tenant.access.push(record.entry),
                None => tenants.push(Tenant {
                    id: record.tenant,
                    access: vec![record.entry],
                    agents: Vec::new(),
                }),
            }
        }
        Ok(())
    }

    /// `tenant`'s entry `id`, if it exists.
    pub fn access_entry(&self, tenant: &str, id: &str) -> Result<Option<AccessRecord>, StoreError> {
        let connection = self.connection();
        let found = connection
            .query_row(
                "SELECT id, tenant, address, description FROM access_entries WHERE id = ?1 AND tenant = ?2",
                params![id, tenant],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, Option<String>>(3)?,
                    ))
                },
            )
            .optional()?;
        found
            .map(|(id, tenant, address, description)| record(id, tenant, &address, description))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("trunkguard-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("store.db")
    }

    fn body(address: &str, description: Option<&str>) -> IpAccessEntryBody {
        IpAccessEntryBody {
            address: address.parse().expect("entry"),
            description: description.map(Into::into),
        }
    }

    #[test]
    fn entries_are_kept_per_tenant_and_survive_reopening() {
        let path = scratch("reopen");
        let store = Store::open(&path).expect("opens");
        let a = store
            .add_access("demo", &body("127.0.0.3/32", Some("pbx")))
            .expect("added");
        let b = store
            .add_access("acme", &body("2001:db8::/48", None))
            .expect("added");
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("acl-") && a.id.len() == 20, "{}", a.id);
        drop(store);

        let store = Store::open(&path).expect("reopens");
        assert_eq!(store.access_entries("demo").expect("read"), vec![a.clone()]);
        assert_eq!(store.access_entries("acme").expect("read"), vec![b.clone()]);
        assert_eq!(store.all_access().expect("read"), [a.clone(), b.clone()]);
        assert_eq!(
            store.access_entry("demo", &a.id).expect("read"),
            Some(a.clone())
        );
    }

    #[test]
    fn stored_entries_join_their_tenants_access_lists() {
        let store = Store::open(&scratch("merge")).expect("opens");
        store
            .add_access("demo", &body("127.0.0.3/32", None))
            .expect("added");
        store
            .add_access("newco", &body("192.0.2.0/24", None))
            .expect("added");
        let mut tenants = vec![Tenant {
            id: "demo".into(),
            access: vec!["127.0.0.1/32".parse().expect("entry")],
            agents: Vec::new(),
        }];
        store.merge_into(&mut tenants).expect("merged");
        let lists: Vec<(String, Vec<String>)> = tenants
            .iter()
            .map(|t| {
                (
                    t.id.clone(),
                    t.access.iter().map(ToString::to_string).collect(),
                )
            })
            .collect();
        assert_eq!(
            lists,
            [
                ("demo".into(), vec!["127.0.0.1".into(), "127.0.0.3".into()]),
                ("newco".into(), vec!["192.0.2.0/24".into()]),
            ]
        );
    }

    #[test]
    fn a_tenant_cannot_see_or_delete_another_tenants_entries() {
        let store = Store::open(&scratch("tenancy")).expect("opens");
        let demo = store
            .add_access("demo", &body("10.0.0.0/24", None))
            .expect("added");
        assert_eq!(store.access_entry("acme", &demo.id).expect("read"), None);
        assert!(!store.delete_access("acme", &demo.id).expect("delete runs"));
        assert_eq!(store.access_entries("demo").expect("read").len(), 1);
        assert!(store.delete_access("demo", &demo.id).expect("deleted"));
        assert!(!store.delete_access("demo", &demo.id).expect("already gone"));
        assert!(store.access_entries("demo").expect("read").is_empty());
    }
}
