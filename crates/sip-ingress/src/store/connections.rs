//! Seed 002's SIP connections in the store: an agent's account at a SIP provider, which the
//! registration client registers like a seed 000 registration, and whose calls go to that
//! agent. Stored as the create body without its password (JSON), the password in its own
//! column, the binding's contact token, and the creation time.

use policy::admission::Agent;
use policy::body::{ConnectionSettings, SipConnectionCreate, SipConnectionPatch};
use policy::json::Patch;
use rusqlite::{OptionalExtension, params};

use super::{Store, StoreError};

/// The table, applied on open.
pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS sip_connections (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    connection  TEXT NOT NULL,
    password    TEXT NOT NULL,
    contact     TEXT NOT NULL,
    created     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sip_connections_by_tenant ON sip_connections (tenant);
";

/// A SIP connection as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionRecord {
    /// Its id (`sipconn_` and 16 hex digits), unique across tenants.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The connection (its password does not serialise).
    pub connection: SipConnectionCreate,
    /// The user part of its binding's Contact: new each time its settings change.
    pub contact: String,
    /// When it was created, in unix seconds.
    pub created: u64,
}

/// The agent a connection's calls go to: reached only through its binding's contact (seed 002
/// gives a connection no extension or number of its own at the ingress), at the agent gateway
/// with the connection's `agentId` as the user.
pub fn connection_agent(record: &ConnectionRecord, gateway: &str) -> Agent {
    Agent {
        id: format!("sip-connection:{}", record.id),
        username: None,
        number: None,
        uri: gateway.replace("{username}", record.connection.agent_id.as_str()),
        dest_user: None,
        route: None,
        contacts: vec![record.contact.clone()],
    }
}

/// The connection back from its stored JSON and password.
fn connection_of(json: &str, password: String) -> Result<SipConnectionCreate, StoreError> {
    let mut value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| StoreError(format!("stored connection: {e}")))?;
    if let Some(settings) = value.get_mut("settings").and_then(|s| s.as_object_mut()) {
        settings.insert("password".into(), serde_json::Value::String(password));
    }
    policy::parse_body(value.to_string().as_bytes())
        .map_err(|_| StoreError("a stored SIP connection no longer validates".into()))
}

/// `settings` with `patch`'s fields put in.
fn patched_settings(
    settings: &ConnectionSettings,
    patch: &policy::body::ConnectionSettingsPatch,
) -> ConnectionSettings {
    let mut next = settings.clone();
    if let Some(server) = &patch.server {
        next.server = server.clone();
    }
    if let Some(port) = patch.port {
        next.port = port;
    }
    if let Some(domain) = &patch.domain {
        next.domain = domain.clone();
    }
    if let Some(username) = &patch.username {
        next.username = username.clone();
    }
    if let Some(password) = &patch.password {
        next.password = password.clone();
    }
    if let Some(transport) = patch.transport {
        next.transport = transport;
    }
    if let Some(caller_id) = &patch.caller_id {
        next.caller_id = Some(caller_id.clone());
    }
    next
}

type Row = (String, String, String, String, String, i64);

fn row_of(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn record_of(
    (id, tenant, json, password, contact, created): Row,
) -> Result<ConnectionRecord, StoreError> {
    Ok(ConnectionRecord {
        id,
        tenant,
        connection: connection_of(&json, password)?,
        contact,
        created: u64::try_from(created).unwrap_or_default(),
    })
}

const COLUMNS: &str = "id, tenant, connection, password, contact, created";

impl Store {
    /// Stores a new SIP connection for `tenant`, created at `created` (unix seconds).
    pub fn add_connection(
        &self,
        tenant: &str,
        connection: &SipConnectionCreate,
        created: u64,
    ) -> Result<ConnectionRecord, StoreError> {
        let record = ConnectionRecord {
            id: format!("sipconn_{:016x}", crate::random::u64()),
            tenant: tenant.to_owned(),
            connection: connection.clone(),
            contact: crate::random::token(),
            created,
        };
        self.put_connection(&record)?;
        Ok(record)
    }

    /// Stores `record` as it is, replacing the connection of its id (a change that could not
    /// be put in force is put back this way).
    pub fn put_connection(&self, record: &ConnectionRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(&record.connection)
            .map_err(|e| StoreError(format!("connection: {e}")))?;
        self.write(
            "INSERT OR REPLACE INTO sip_connections (id, tenant, connection, password, contact, created) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                record.id,
                record.tenant,
                json,
                record.connection.settings.password.expose(),
                record.contact,
                i64::try_from(record.created).unwrap_or(i64::MAX)
            ],
        )?;
        Ok(())
    }

    /// `tenant`'s SIP connection `id`.
    pub fn connection_record(
        &self,
        tenant: &str,
        id: &str,
    ) -> Result<Option<ConnectionRecord>, StoreError> {
        let found = self
            .connection()
            .query_row(
                &format!("SELECT {COLUMNS} FROM sip_connections WHERE id = ?1 AND tenant = ?2"),
                params![id, tenant],
                row_of,
            )
            .optional()?;
        found.map(record_of).transpose()
    }

    /// `tenant`'s SIP connections, oldest first.
    pub fn connections(&self, tenant: &str) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.select_connections("WHERE tenant = ?1", params![tenant])
    }

    /// Every SIP connection, for the admission snapshot and the registration client.
    pub fn all_connections(&self) -> Result<Vec<ConnectionRecord>, StoreError> {
        self.select_connections("", params![])
    }

    fn select_connections(
        &self,
        filter: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<ConnectionRecord>, StoreError> {
        let connection = self.connection();
        let mut statement = connection.prepare(&format!(
            "SELECT {COLUMNS} FROM sip_connections {filter} ORDER BY rowid"
        ))?;
        let rows: Vec<Row> = statement
            .query_map(params, row_of)?
            .collect::<Result<_, _>>()?;
        rows.into_iter().map(record_of).collect()
    }

    /// Applies `patch` to `tenant`'s SIP connection `id`; returns the connection as it was and
    /// as it is now, or None when the tenant has no such connection. Changed settings make a
    /// new binding (a new contact); a new agent or name keeps the binding.
    pub fn update_connection(
        &self,
        tenant: &str,
        id: &str,
        patch: &SipConnectionPatch,
    ) -> Result<Option<(ConnectionRecord, ConnectionRecord)>, StoreError> {
        let Some(previous) = self.connection_record(tenant, id)? else {
            return Ok(None);
        };
        let mut next = previous.clone();
        if let Some(agent_id) = &patch.agent_id {
            next.connection.agent_id = agent_id.clone();
        }
        match &patch.name {
            Patch::Keep => {}
            Patch::Clear => next.connection.name = None,
            Patch::Set(name) => next.connection.name = Some(name.clone()),
        }
        if let Some(settings) = &patch.settings {
            next.connection.settings = patched_settings(&previous.connection.settings, settings);
        }
        if next.connection.settings != previous.connection.settings {
            next.contact = crate::random::token();
        }
        self.put_connection(&next)?;
        Ok(Some((previous, next)))
    }

    /// Deletes `tenant`'s SIP connection `id`; `false` when there is none.
    pub fn delete_connection(&self, tenant: &str, id: &str) -> Result<bool, StoreError> {
        let deleted = self.write(
            "DELETE FROM sip_connections WHERE id = ?1 AND tenant = ?2",
            params![id, tenant],
        )?;
        Ok(deleted == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::open(std::path::Path::new(":memory:")).expect("in-memory store")
    }

    fn create(body: &str) -> SipConnectionCreate {
        policy::parse_body(body.as_bytes()).unwrap_or_else(|e| panic!("valid body: {e:?}"))
    }

    const BODY: &str = r#"{"agentId":"agent_abc123","name":"Main line","settings":{
        "server":"sip.provider.example","port":5060,"domain":"provider.example",
        "username":"u1","password":"hunter2","transport":"TCP"}}"#;

    #[test]
    fn a_connection_is_kept_with_its_password_and_read_back_per_tenant() {
        let store = store();
        let added = store
            .add_connection("t1", &create(BODY), 1_710_000_005)
            .expect("added");
        assert!(added.id.starts_with("sipconn_") && added.id.len() == 24);
        assert_eq!(added.contact.len(), 32);
        let found = store
            .connection_record("t1", &added.id)
            .expect("read")
            .expect("present");
        assert_eq!(found, added);
        assert_eq!(found.connection.settings.password.expose(), "hunter2");
        assert!(
            store
                .connection_record("t2", &added.id)
                .expect("read")
                .is_none()
        );
        assert_eq!(store.connections("t1").expect("list").len(), 1);
        assert!(store.connections("t2").expect("list").is_empty());
        assert_eq!(store.all_connections().expect("all").len(), 1);
    }

    #[test]
    fn changed_settings_make_a_new_binding_and_a_new_name_does_not() {
        let store = store();
        let added = store.add_connection("t1", &create(BODY), 1).expect("added");
        let renamed: SipConnectionPatch =
            policy::parse_body(br#"{"name":"Support"}"#).expect("patch");
        let (_, now) = store
            .update_connection("t1", &added.id, &renamed)
            .expect("updated")
            .expect("present");
        assert_eq!(now.contact, added.contact);
        assert_eq!(
            now.connection.name.as_ref().map(|n| n.as_str()),
            Some("Support")
        );
        let moved: SipConnectionPatch =
            policy::parse_body(br#"{"settings":{"port":5070}}"#).expect("patch");
        let (before, now) = store
            .update_connection("t1", &added.id, &moved)
            .expect("updated")
            .expect("present");
        assert_ne!(now.contact, before.contact);
        assert_eq!(now.connection.settings.port.as_u16(), 5070);
        assert_eq!(now.connection.settings.password.expose(), "hunter2");
        assert!(
            store
                .update_connection("t2", &added.id, &moved)
                .expect("ok")
                .is_none()
        );
        assert!(!store.delete_connection("t2", &added.id).expect("ok"));
        assert!(store.delete_connection("t1", &added.id).expect("ok"));
        assert!(store.all_connections().expect("all").is_empty());
    }
}
