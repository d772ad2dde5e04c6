//! The control-plane store: what tenants configure through the API, in an embedded SQLite
//! database: the SIP IP access list (seed 001), agents' SIP registrations (seed 000) and SIP
//! connections (seed 002, `connections`). A
//! registration's password is kept in its own column and never leaves the store but through
//! [`Store::registration`], whose `SipRegistration` does not serialise it.
//!
//! Every write is one transaction, and returns only once SQLite has made it durable (WAL
//! journal, `synchronous = FULL`): what the API acknowledges survives a crash of the process or
//! the machine. Every read and write is scoped to one tenant; [`Store::all_access`] is the one
//! cross-tenant read, for building the admission snapshot.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use policy::admission::{Agent, Tenant};
use policy::body::{IpAccessEntryBody, OutboundRouteBody, SipRegistration};
use policy::{AccessEntry, Route};
use rusqlite::{Connection, OptionalExtension, params};

mod connections;

pub use connections::{ConnectionRecord, connection_agent};

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
CREATE TABLE IF NOT EXISTS outbound_routes (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    route       TEXT NOT NULL,
    description TEXT
);
CREATE INDEX IF NOT EXISTS outbound_routes_by_tenant ON outbound_routes (tenant);
CREATE TABLE IF NOT EXISTS registrations (
    tenant       TEXT NOT NULL,
    agent_id     TEXT NOT NULL,
    registration TEXT NOT NULL,
    password     TEXT NOT NULL,
    contact      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (tenant, agent_id)
);
";

/// Databases made before registrations had contacts (issue 21) get the column; [`Store::open`]
/// gives each such row a contact.
const ADD_CONTACTS: &str = "ALTER TABLE registrations ADD COLUMN contact TEXT NOT NULL DEFAULT ''";

/// An outbound route as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRecord {
    /// Its id (`route-` and 16 hex digits).
    pub id: String,
    /// The route, in the seed 001 grammar.
    pub route: Route,
    /// The tenant's description.
    pub description: Option<String>,
}

/// An agent's SIP registration as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RegistrationRecord {
    /// The tenant.
    pub tenant: String,
    /// The agent.
    pub agent_id: String,
    /// The registration (its password does not serialise).
    pub registration: SipRegistration,
    /// The user part of its binding's Contact: an unguessable token, new each time the
    /// registration changes, so that a PBX's INVITE to it names this binding alone.
    pub contact: String,
}

/// The registration back from its stored JSON and password.
fn registration_of(json: &str, password: String) -> Result<SipRegistration, StoreError> {
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| StoreError(format!("stored registration: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.insert("password".into(), serde_json::Value::String(password));
    }
    policy::parse_body(value.to_string().as_bytes())
        .map_err(|_| StoreError("a stored registration no longer validates".into()))
}

/// The agent a registration makes addressable: by its username and DID, and by its binding's
/// `contact`, at the agent gateway (`{username}` in `gateway` replaced), with its X-Dest-User.
/// The registration's proxy is where its REGISTERs go (seed 000: "if your SIP provider requires
/// routing through a proxy"), not a hop towards the agent.
pub fn registered_agent(
    agent_id: &str,
    registration: &SipRegistration,
    contact: &str,
    gateway: &str,
) -> Agent {
    let username = registration.username.as_str();
    Agent {
        id: agent_id.to_owned(),
        username: Some(username.to_owned()),
        number: registration.did.clone(),
        uri: gateway.replace("{username}", username),
        dest_user: registration.x_dest_user.clone(),
        route: None,
        contacts: vec![contact.to_owned()],
    }
}

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
        connection.execute_batch(connections::SCHEMA)?;
        let has_contacts = connection
            .prepare("SELECT name FROM pragma_table_info('registrations') WHERE name = 'contact'")?
            .exists([])?;
        if !has_contacts {
            connection.execute_batch(ADD_CONTACTS)?;
        }
        let uncontacted: Vec<i64> = connection
            .prepare("SELECT rowid FROM registrations WHERE contact = ''")?
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        for rowid in uncontacted {
            connection.execute(
                "UPDATE registrations SET contact = ?1 WHERE rowid = ?2",
                params![crate::random::token(), rowid],
            )?;
        }
        Ok(Self {
            connection: Mutex::new(connection),
        })
    }

    /// Runs one statement as its own transaction, durable when this returns; the rows changed.
    fn write(&self, sql: &str, params: impl rusqlite::Params) -> Result<usize, StoreError> {
        let mut connection = self.connection();
        let transaction = connection.transaction()?;
        let changed = transaction.execute(sql, params)?;
        transaction.commit()?;
        Ok(changed)
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
        self.write(
            "INSERT INTO access_entries (id, tenant, address, description) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, body.address.to_string(), body.description],
        )?;
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
        let deleted = self.write(
            "DELETE FROM access_entries WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        Ok(deleted == 1)
    }

    /// Adds what the store holds to `tenants`: every entry to its tenant's access list, every
    /// registered agent (reached at `gateway`) to its tenant's agents, replacing a configured
    /// agent of the same id. A tenant the configuration does not name is added.
    pub fn merge_into(&self, tenants: &mut Vec<Tenant>, gateway: &str) -> Result<(), StoreError> {
        fn tenant<'a>(tenants: &'a mut Vec<Tenant>, id: &str) -> &'a mut Tenant {
            let at = match tenants.iter().position(|t| t.id == id) {
                Some(at) => at,
                None => {
                    tenants.push(Tenant {
                        id: id.to_owned(),
                        access: Vec::new(),
                        agents: Vec::new(),
                    });
                    tenants.len() - 1
                }
            };
            &mut tenants[at]
        }
        for record in self.all_access()? {
            tenant(tenants, &record.tenant).access.push(record.entry);
        }
        for record in self.all_registrations()? {
            let agent = registered_agent(
                &record.agent_id,
                &record.registration,
                &record.contact,
                gateway,
            );
            let agents = &mut tenant(tenants, &record.tenant).agents;
            agents.retain(|a| a.id != agent.id);
            agents.push(agent);
        }
        for record in self.all_connections()? {
            let agent = connection_agent(&record, gateway);
            tenant(tenants, &record.tenant).agents.push(agent);
        }
        Ok(())
    }

    /// Adds an outbound route for `tenant`.
    pub fn add_route(
        &self,
        tenant: &str,
        body: &OutboundRouteBody,
    ) -> Result<RouteRecord, StoreError> {
        let id = new_id("route");
        self.write(
            "INSERT INTO outbound_routes (id, tenant, route, description) VALUES (?1, ?2, ?3, ?4)",
            params![id, tenant, body.route.to_string(), body.description],
        )?;
        Ok(RouteRecord {
            id,
            route: body.route.clone(),
            description: body.description.clone(),
        })
    }

    /// `tenant`'s outbound routes, oldest first.
    pub fn routes(&self, tenant: &str) -> Result<Vec<RouteRecord>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT id, route, description FROM outbound_routes WHERE tenant = ?1 ORDER BY rowid",
        )?;
        let rows = statement.query_map(params![tenant], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, Option<String>>(2)?,
            ))
        })?;
        rows.map(|found| {
            let (id, route, description) = found?;
            let route = route.parse().map_err(|e| {
                StoreError(format!("stored route {id} ({route:?}) is invalid: {e}"))
            })?;
            Ok(RouteRecord {
                id,
                route,
                description,
            })
        })
        .collect()
    }

    /// Deletes `tenant`'s outbound route `id`; `false` when the tenant has no such route.
    pub fn delete_route(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let deleted = self.write(
            "DELETE FROM outbound_routes WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        Ok(deleted == 1)
    }

    /// Stores `tenant`'s registration for `agent_id`; returns the one it replaces, if any. A
    /// changed registration gets a new contact (it is a new binding); the same one again keeps
    /// its own.
    pub fn put_registration(
        &self,
        tenant: &str,
        agent_id: &str,
        registration: &SipRegistration,
    ) -> Result<Option<SipRegistration>, StoreError> {
        let previous = self.registration_record(tenant, agent_id)?;
        let contact = match &previous {
            Some(previous) if previous.registration == *registration => previous.contact.clone(),
            _ => crate::random::token(),
        };
        let json = serde_json::to_string(registration)
            .map_err(|e| StoreError(format!("registration: {e}")))?;
        self.write(
            "INSERT OR REPLACE INTO registrations (tenant, agent_id, registration, password, contact) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![tenant, agent_id, json, registration.password.expose(), contact],
        )?;
        Ok(previous.map(|previous| previous.registration))
    }

    /// `tenant`'s registration for `agent_id`.
    pub fn registration(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<SipRegistration>, StoreError> {
        Ok(self
            .registration_record(tenant, agent_id)?
            .map(|record| record.registration))
    }

    /// `tenant`'s registration for `agent_id`, with its contact.
    pub fn registration_record(
        &self,
        tenant: &str,
        agent_id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError> {
        let found = self
            .connection()
            .query_row(
                "SELECT registration, password, contact FROM registrations \
                 WHERE tenant = ?1 AND agent_id = ?2",
                params![tenant, agent_id],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()?;
        found
            .map(|(json, password, contact)| {
                Ok(RegistrationRecord {
                    tenant: tenant.to_owned(),
                    agent_id: agent_id.to_owned(),
                    registration: registration_of(&json, password)?,
                    contact,
                })
            })
            .transpose()
    }

    /// Deletes `tenant`'s registration for `agent_id`; `false` when there is none.
    pub fn delete_registration(&self, tenant: &str, agent_id: &str) -> Result<bool, StoreError> {
        let deleted = self.write(
            "DELETE FROM registrations WHERE tenant = ?1 AND agent_id = ?2",
            params![tenant, agent_id],
        )?;
        Ok(deleted == 1)
    }

    /// Every registration, for the admission snapshot.
    pub fn all_registrations(&self) -> Result<Vec<RegistrationRecord>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(
            "SELECT tenant, agent_id, registration, password, contact FROM registrations \
             ORDER BY rowid",
        )?;
        let rows = statement.query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, String>(4)?,
            ))
        })?;
        rows.map(|found| {
            let (tenant, agent_id, json, password, contact) = found?;
            Ok(RegistrationRecord {
                tenant,
                agent_id,
                registration: registration_of(&json, password)?,
                contact,
            })
        })
        .collect()
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
    fn registrations_stored_before_contacts_get_one_on_opening_and_keep_it() {
        let path = scratch("contacts");
        {
            let old = Connection::open(&path).expect("opens");
            old.execute_batch(
                "CREATE TABLE registrations (tenant TEXT NOT NULL, agent_id TEXT NOT NULL, \
                 registration TEXT NOT NULL, password TEXT NOT NULL, \
                 PRIMARY KEY (tenant, agent_id));",
            )
            .expect("the schema before issue 21");
            old.execute(
                "INSERT INTO registrations VALUES ('demo', 'a1', ?1, 'secret')",
                params![r#"{"domain":"pbx.example.com","username":"agent"}"#],
            )
            .expect("an old row");
        }
        let contact_of = |store: &Store| {
            store
                .registration_record("demo", "a1")
                .expect("read")
                .expect("found")
                .contact
        };
        let first = contact_of(&Store::open(&path).expect("migrates"));
        assert_eq!(first.len(), 32, "{first:?}");
        assert_eq!(contact_of(&Store::open(&path).expect("reopens")), first);
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
        store
            .merge_into(&mut tenants, "sip:{username}@127.0.0.1:5090")
            .expect("merged");
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

    fn registration(body: &str) -> SipRegistration {
        policy::parse_body(body.as_bytes()).expect("valid registration")
    }

    #[test]
    fn registrations_keep_their_password_apart_and_become_agents() {
        let store = Store::open(&scratch("registrations")).expect("opens");
        let first = registration(
            r#"{"domain":"pbx.example.com","username":"newagent","password":"hunter2","did":"+15550100009","xDestUser":"desk.9"}"#,
        );
        assert_eq!(
            store
                .put_registration("demo", "a1", &first)
                .expect("stored"),
            None
        );
        let read = store
            .registration("demo", "a1")
            .expect("read")
            .expect("found");
        assert_eq!(read.password.expose(), "hunter2");
        assert_eq!(read, first);
        assert_eq!(store.registration("acme", "a1").expect("read"), None);

        let proxied = registration(
            r#"{"domain":"pbx.example.com","username":"newagent","password":"x","proxy":"10.0.0.9","port":5080,"transport":"tcp"}"#,
        );
        let contact = |store: &Store| {
            store
                .registration_record("demo", "a1")
                .expect("read")
                .expect("found")
                .contact
        };
        let first_contact = contact(&store);
        store
            .put_registration("demo", "a1", &first)
            .expect("stored");
        assert_eq!(
            contact(&store),
            first_contact,
            "the same registration again"
        );
        let previous = store
            .put_registration("demo", "a1", &proxied)
            .expect("stored");
        assert_eq!(previous, Some(first));
        let changed_contact = contact(&store);
        assert_ne!(
            changed_contact, first_contact,
            "a changed one is a new binding"
        );
        assert_eq!(changed_contact.len(), 32);
        let mut tenants = Vec::new();
        store
            .merge_into(&mut tenants, "sip:{username}@127.0.0.1:5090")
            .expect("merged");
        let agent = &tenants[0].agents[0];
        assert_eq!(agent.uri, "sip:newagent@127.0.0.1:5090");
        assert_eq!(
            agent.route, None,
            "the proxy is the registrar's, not the agent's"
        );
        assert_eq!(agent.contacts, [changed_contact]);
        assert!(store.delete_registration("demo", "a1").expect("deleted"));
        assert!(!store.delete_registration("demo", "a1").expect("gone"));
    }

    #[test]
    fn outbound_routes_are_kept_per_tenant() {
        let store = Store::open(&scratch("routes")).expect("opens");
        let body: OutboundRouteBody = policy::parse_body(
            br#"{"route":"sip.example.com:5080;transport=tcp;proxyAddress=10.0.0.1","description":"trunk"}"#,
        )
        .expect("valid");
        let added = store.add_route("demo", &body).expect("added");
        assert!(added.id.starts_with("route-"), "{}", added.id);
        assert_eq!(store.routes("demo").expect("read"), vec![added.clone()]);
        assert!(store.routes("acme").expect("read").is_empty());
        assert!(!store.delete_route("acme", &added.id).expect("runs"));
        assert!(store.delete_route("demo", &added.id).expect("deleted"));
        assert!(store.routes("demo").expect("read").is_empty());
    }

    #[test]
    fn a_tenant_cannot_see_or_delete_another_tenants_entries() {
        let store = Store::open(&scratch("tenancy")).expect("opens");
        let demo = store
            .add_access("demo", &body("10.0.0.0/24", None))
            .expect("added");
        assert!(store.access_entries("acme").expect("read").is_empty());
        assert!(!store.delete_access("acme", &demo.id).expect("delete runs"));
        assert_eq!(store.access_entries("demo").expect("read").len(), 1);
        assert!(store.delete_access("demo", &demo.id).expect("deleted"));
        assert!(!store.delete_access("demo", &demo.id).expect("already gone"));
        assert!(store.access_entries("demo").expect("read").is_empty());
    }
}
