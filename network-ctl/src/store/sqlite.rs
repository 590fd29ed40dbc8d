//! The SQLite backend: one database file in WAL mode, every change in one immediate
//! transaction, and the address pools of its networks in memory, changed only after a commit
//! succeeded (a failed write releases what it took).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};

use super::schema::MIGRATIONS;
use super::{NetworkStatus, Store, StoreFuture};
use crate::clock::Millis;
use crate::error::ControlError;
use crate::pool::IpPool;
use crate::records::{
    AuthorityPem, Binding, BootstrapToken, Network, NewBinding, NodeState, NodeUpdate, Plane,
};
use crate::token::RESERVED_NODE_TOKEN;

/// Storage in a SQLite file (the embedded default). Cheap to clone: clones share the database.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Mutex<Inner>>,
    path: PathBuf,
}

#[derive(Debug)]
struct Inner {
    db: Connection,
    /// Every network by net token, with its row id and pool.
    networks: BTreeMap<String, Loaded>,
}

#[derive(Debug)]
struct Loaded {
    id: i64,
    network: Network,
    pool: IpPool,
}

impl SqliteStore {
    /// Opens (or creates) the database at `path`, migrates its schema to the current version and
    /// loads the address pools. Fails if the file cannot be opened or was written by a newer
    /// network-ctl.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ControlError> {
        let path = path.as_ref().to_path_buf();
        let opened = |error: rusqlite::Error| {
            let busy = error.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy);
            ControlError::Storage(format!(
                "cannot open {}: {error}{}",
                path.display(),
                if busy {
                    "; is another network-ctl server using it? SQLite storage serves one replica (use etcd for several)"
                } else {
                    ""
                }
            ))
        };
        let mut db = Connection::open(&path).map_err(opened)?;
        db.busy_timeout(std::time::Duration::from_secs(1))
            .map_err(opened)?;
        // WAL: readers do not block the writer, and a commit is one append. NORMAL
        // synchronisation in WAL mode cannot corrupt the database on a crash (a power cut may
        // lose the last commits, never half of one).
        db.pragma_update(None, "journal_mode", "WAL")
            .map_err(opened)?;
        db.pragma_update(None, "synchronous", "NORMAL")
            .map_err(opened)?;
        db.pragma_update(None, "foreign_keys", "ON")
            .map_err(opened)?;
        // One server per file: its address pools live in its memory, so a second process
        // writing the same file would hand out addresses twice. The exclusive lock, taken now
        // and held until the store is dropped, refuses it (several replicas: use etcd).
        db.pragma_update(None, "locking_mode", "EXCLUSIVE")
            .map_err(opened)?;
        db.execute_batch("begin exclusive; commit;")
            .map_err(opened)?;
        migrate(&mut db, &path)?;
        let networks = load(&db)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(Inner { db, networks })),
            path,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version this build writes.
    pub fn schema_version() -> u32 {
        MIGRATIONS.len() as u32
    }

    /// Runs `work` on the database off the async threads.
    fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Inner) -> Result<T, ControlError> + Send + 'static,
    ) -> StoreFuture<'_, T> {
        let inner = self.inner.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let mut inner = inner
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                work(&mut inner)
            })
            .await
            .map_err(|error| ControlError::Storage(format!("the storage task failed: {error}")))?
        })
    }
}

/// Brings the schema to the current version.
fn migrate(db: &mut Connection, path: &Path) -> Result<(), ControlError> {
    let version: u32 = db.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let current = MIGRATIONS.len() as u32;
    if version > current {
        return Err(ControlError::Storage(format!(
            "{} has schema version {version}, newer than this network-ctl knows ({current}): run a newer network-ctl",
            path.display()
        )));
    }
    for (from, migration) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = db.transaction_with_behavior(TransactionBehavior::Exclusive)?;
        tx.execute_batch(migration).map_err(|error| {
            ControlError::Storage(format!(
                "migrating {} from schema version {from} failed: {error}",
                path.display()
            ))
        })?;
        tx.pragma_update(None, "user_version", from as u32 + 1)?;
        tx.commit()?;
        tracing::info!(path = %path.display(), version = from + 1, "schema migrated");
    }
    Ok(())
}

/// Reads every network and marks its bound addresses in its pool.
fn load(db: &Connection) -> Result<BTreeMap<String, Loaded>, ControlError> {
    let mut networks = BTreeMap::new();
    let mut statement = db.prepare(
        r#"select "id", "token", "cidr", "gateway", "server_ip", "create_time" from "net_token""#,
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, i64>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
            row.get::<_, String>(3)?,
            row.get::<_, String>(4)?,
            row.get::<_, i64>(5)?,
        ))
    })?;
    for row in rows {
        let (id, net_token, cidr, gateway, server_ip, create_time) = row?;
        let network = Network::new(
            &net_token,
            &cidr,
            Some(&gateway),
            Some(&server_ip),
            create_time,
        )
        .map_err(|error| {
            ControlError::Storage(format!("stored network {net_token:?} is invalid: {error}"))
        })?;
        let pool = network.pool();
        networks.insert(net_token, Loaded { id, network, pool });
    }
    let mut statement = db.prepare(
        r#"select "net_token"."token", "bind_ip", "network_mgr"."token"
           from "network_mgr" join "net_token" on "net_token"."id" = "network_mgr"."net_id""#,
    )?;
    let rows = statement.query_map([], |row| {
        Ok((
            row.get::<_, String>(0)?,
            row.get::<_, String>(1)?,
            row.get::<_, String>(2)?,
        ))
    })?;
    for row in rows {
        let (net_token, ip, node_token) = row?;
        let Some(loaded) = networks.get_mut(&net_token) else {
            continue;
        };
        let marked = ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| loaded.pool.mark_bound(ip));
        if !marked {
            tracing::warn!(%net_token, %node_token, %ip, "stored binding outside its network or duplicated: ignored by the pool");
        }
    }
    Ok(networks)
}

/// Binds the reserved node token to the server address of network `net_id`.
fn insert_reserved(
    db: &Connection,
    net_id: i64,
    server_ip: IpAddr,
    now: Millis,
) -> Result<(), ControlError> {
    db.execute(
        r#"insert into "network_mgr" ("token", "net_id", "state", "bind_ip", "node_name", "last_seen", "create_time", "update_time")
           values (?1, ?2, ?3, ?4, '', ?5, ?5, ?5)"#,
        params![
            RESERVED_NODE_TOKEN,
            net_id,
            NodeState::Connected.as_i64(),
            server_ip.to_string(),
            now
        ],
    )?;
    Ok(())
}

/// The binding to reclaim in network `?1`: not connected (state 1, written literally so that
/// the partial index `network_mgr_reclaim` serves it), not the reserved token `?2`, least
/// recently updated.
const RECLAIM_QUERY: &str = r#"select "id", "token", "bind_ip" from "network_mgr"
    where "net_id" = ?1 and "state" != 1 and "token" != ?2
    order by "update_time", "id" limit 1"#;

const BINDING_COLUMNS: &str = r#""network_mgr"."token", "net_token"."token", "bind_ip", "state",
    "node_name", "network_mgr"."create_time", "network_mgr"."update_time", "last_seen""#;

fn binding_of(row: &Row<'_>, prefix_len: u8) -> rusqlite::Result<Binding> {
    let ip: String = row.get(2)?;
    Ok(Binding {
        node_token: row.get(0)?,
        net_token: row.get(1)?,
        ip: ip.parse().map_err(|error| {
            rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Text,
                Box::new(error),
            )
        })?,
        prefix_len,
        state: NodeState::from_i64(row.get(3)?),
        node_name: row.get(4)?,
        create_time: row.get(5)?,
        update_time: row.get(6)?,
        last_seen: row.get(7)?,
    })
}

fn bootstrap_of(row: &Row<'_>) -> rusqlite::Result<BootstrapToken> {
    Ok(BootstrapToken {
        digest: row.get(0)?,
        create_time: row.get(1)?,
        expire_time: row.get(2)?,
        single_use: row.get(3)?,
        uses: row.get(4)?,
    })
}

impl Inner {
    fn loaded(&self, net_token: &str) -> Result<&Loaded, ControlError> {
        self.networks
            .get(net_token)
            .ok_or_else(|| ControlError::UnknownNetwork {
                net_token: net_token.to_string(),
            })
    }

    fn binding(&self, net_token: &str, node_token: &str) -> Result<Option<Binding>, ControlError> {
        let loaded = self.loaded(net_token)?;
        let prefix = loaded.network.cidr.prefix();
        Ok(self
            .db
            .query_row(
                &format!(
                    r#"select {BINDING_COLUMNS} from "network_mgr"
                       join "net_token" on "net_token"."id" = "network_mgr"."net_id"
                       where "net_id" = ?1 and "network_mgr"."token" = ?2"#
                ),
                params![loaded.id, node_token],
                |row| binding_of(row, prefix),
            )
            .optional()?)
    }

    fn ensure_network(&mut self, network: Network) -> Result<Network, ControlError> {
        if let Some(existing) = self.networks.get(&network.net_token) {
            if !existing.network.same_shape(&network) {
                return Err(ControlError::Conflict(format!(
                    "network {:?} exists as {} (gateway {}, server {}), not {} (gateway {}, server {})",
                    network.net_token,
                    existing.network.cidr,
                    existing.network.gateway,
                    existing.network.server_ip,
                    network.cidr,
                    network.gateway,
                    network.server_ip
                )));
            }
        } else {
            let tx = self
                .db
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                r#"insert into "net_token" ("token", "cidr", "gateway", "server_ip", "create_time", "update_time")
                   values (?1, ?2, ?3, ?4, ?5, ?5)"#,
                params![
                    network.net_token,
                    network.cidr.to_string(),
                    network.gateway.to_string(),
                    network.server_ip.to_string(),
                    network.create_time
                ],
            )?;
            let id = tx.last_insert_rowid();
            insert_reserved(&tx, id, network.server_ip, network.create_time)?;
            tx.commit()?;
            let mut pool = network.pool();
            pool.mark_bound(network.server_ip);
            self.networks.insert(
                network.net_token.clone(),
                Loaded {
                    id,
                    network: network.clone(),
                    pool,
                },
            );
        }
        self.ensure_reserved(&network.net_token, network.create_time)?;
        Ok(self.loaded(&network.net_token)?.network.clone())
    }

    /// Binds the reserved node token to the server address, if it is not bound.
    fn ensure_reserved(&mut self, net_token: &str, now: Millis) -> Result<(), ControlError> {
        if self.binding(net_token, RESERVED_NODE_TOKEN)?.is_some() {
            return Ok(());
        }
        let loaded = self.loaded(net_token)?;
        let (id, server_ip) = (loaded.id, loaded.network.server_ip);
        insert_reserved(&self.db, id, server_ip, now)?;
        if let Some(loaded) = self.networks.get_mut(net_token) {
            loaded.pool.mark_bound(server_ip);
        }
        Ok(())
    }

    fn register(&mut self, request: NewBinding) -> Result<Binding, ControlError> {
        let Inner { db, networks } = self;
        let tx = db.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let token = tx
            .query_row(
                r#"select "token", "create_time", "expire_time", "single_use", "uses"
                   from "token_mgr" where "token" = ?1"#,
                [&request.bootstrap_digest],
                bootstrap_of,
            )
            .optional()?
            .ok_or(ControlError::UnknownBootstrapToken)?;
        if let Some(refusal) = token.refusal(request.now) {
            return Err(refusal);
        }
        let loaded =
            networks
                .get_mut(&request.net_token)
                .ok_or_else(|| ControlError::UnknownNetwork {
                    net_token: request.net_token.clone(),
                })?;
        // A free address, or the one of the least recently updated node that is not connected.
        let (ip, fresh) = match loaded.pool.allocate() {
            Some(ip) => (ip, true),
            None => {
                let victim = tx
                    .query_row(
                        RECLAIM_QUERY,
                        params![loaded.id, RESERVED_NODE_TOKEN],
                        |row| {
                            Ok((
                                row.get::<_, i64>(0)?,
                                row.get::<_, String>(1)?,
                                row.get::<_, String>(2)?,
                            ))
                        },
                    )
                    .optional()?;
                let Some((row, node_token, ip)) = victim else {
                    return Err(ControlError::PoolExhausted {
                        net_token: request.net_token.clone(),
                        cidr: loaded.network.cidr.to_string(),
                        bound: loaded.pool.bound() as u64,
                    });
                };
                let ip: IpAddr = ip.parse().map_err(|_| {
                    ControlError::Storage(format!(
                        "stored address {ip:?} of {node_token} is not an address"
                    ))
                })?;
                tx.execute(r#"delete from "network_mgr" where "id" = ?1"#, [row])?;
                tracing::info!(net_token = %request.net_token, %node_token, %ip, "reclaimed the least recently used binding of a node that is not connected");
                (ip, false)
            }
        };
        let written = (|| {
            tx.execute(
                r#"insert into "network_mgr" ("token", "net_id", "state", "bind_ip", "node_name", "create_time", "update_time")
                   values (?1, ?2, ?3, ?4, ?5, ?6, ?6)"#,
                params![
                    request.node_token,
                    loaded.id,
                    NodeState::NeverConnected.as_i64(),
                    ip.to_string(),
                    request.node_name,
                    request.now
                ],
            )?;
            tx.execute(
                r#"update "token_mgr" set "uses" = "uses" + 1 where "token" = ?1"#,
                [&request.bootstrap_digest],
            )?;
            tx.commit()
        })();
        if let Err(error) = written {
            if fresh {
                loaded.pool.release(ip);
            }
            return Err(error.into());
        }
        Ok(Binding {
            node_token: request.node_token,
            net_token: request.net_token,
            ip,
            prefix_len: loaded.network.cidr.prefix(),
            state: NodeState::NeverConnected,
            node_name: request.node_name,
            create_time: request.now,
            update_time: request.now,
            last_seen: None,
        })
    }

    fn bindings(&self, net_token: Option<&str>) -> Result<Vec<Binding>, ControlError> {
        let mut all = Vec::new();
        for (name, loaded) in &self.networks {
            if net_token.is_some_and(|wanted| wanted != name) {
                continue;
            }
            let prefix = loaded.network.cidr.prefix();
            let mut statement = self.db.prepare_cached(&format!(
                r#"select {BINDING_COLUMNS} from "network_mgr"
                   join "net_token" on "net_token"."id" = "network_mgr"."net_id"
                   where "net_id" = ?1"#
            ))?;
            let mut bindings = statement
                .query_map([loaded.id], |row| binding_of(row, prefix))?
                .collect::<Result<Vec<_>, _>>()?;
            bindings.sort_by_key(|binding| loaded.network.cidr.offset_of(binding.ip));
            all.extend(bindings);
        }
        if let Some(wanted) = net_token
            && !self.networks.contains_key(wanted)
        {
            return Err(ControlError::UnknownNetwork {
                net_token: wanted.to_string(),
            });
        }
        Ok(all)
    }

    #[cfg(test)]
    fn reclaim_plan(&self) -> String {
        let mut statement = self
            .db
            .prepare(&format!("explain query plan {RECLAIM_QUERY}"))
            .unwrap();
        let rows = statement
            .query_map(params![1, RESERVED_NODE_TOKEN], |row| {
                row.get::<_, String>(3)
            })
            .unwrap();
        rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
    }

    fn bindings_of_node(&self, node_name: &str) -> Result<Vec<Binding>, ControlError> {
        let mut statement = self.db.prepare_cached(&format!(
            r#"select {BINDING_COLUMNS}, "net_token"."cidr" from "network_mgr"
               join "net_token" on "net_token"."id" = "network_mgr"."net_id"
               where "node_name" = ?1"#
        ))?;
        let bindings = statement
            .query_map([node_name], |row| {
                let prefix = row
                    .get::<_, String>(8)?
                    .rsplit_once('/')
                    .and_then(|(_, prefix)| prefix.parse().ok())
                    .unwrap_or_default();
                binding_of(row, prefix)
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(bindings)
    }

    fn unregister(&mut self, net_token: &str, node_token: &str) -> Result<Binding, ControlError> {
        if node_token == RESERVED_NODE_TOKEN {
            return Err(ControlError::Reserved(format!(
                "the reserved node token {RESERVED_NODE_TOKEN:?} holds the server's address and cannot be unregistered"
            )));
        }
        let binding =
            self.binding(net_token, node_token)?
                .ok_or_else(|| ControlError::UnknownNode {
                    node_token: node_token.to_string(),
                    net_token: net_token.to_string(),
                })?;
        let loaded = self.loaded(net_token)?;
        self.db.execute(
            r#"delete from "network_mgr" where "net_id" = ?1 and "token" = ?2"#,
            params![loaded.id, node_token],
        )?;
        if let Some(loaded) = self.networks.get_mut(net_token) {
            loaded.pool.release(binding.ip);
        }
        Ok(binding)
    }

    fn update_node(
        &mut self,
        net_token: &str,
        node_token: &str,
        update: NodeUpdate,
        now: Millis,
    ) -> Result<Binding, ControlError> {
        let mut binding =
            self.binding(net_token, node_token)?
                .ok_or_else(|| ControlError::UnknownNode {
                    node_token: node_token.to_string(),
                    net_token: net_token.to_string(),
                })?;
        let (mut changed, mut seen) = (false, false);
        if let Some(state) = update.state.filter(|&state| state != binding.state) {
            binding.state = state;
            changed = true;
        }
        if let Some(name) = update.node_name.filter(|name| *name != binding.node_name) {
            binding.node_name = name;
            changed = true;
        }
        if changed {
            binding.update_time = now;
        }
        if update.last_seen.is_some() && update.last_seen != binding.last_seen {
            binding.last_seen = update.last_seen;
            seen = true;
        }
        if !changed && !seen {
            return Ok(binding);
        }
        let loaded = self.loaded(net_token)?;
        self.db.execute(
            r#"update "network_mgr" set "state" = ?3, "node_name" = ?4, "update_time" = ?5, "last_seen" = ?6
               where "net_id" = ?1 and "token" = ?2"#,
            params![
                loaded.id,
                node_token,
                binding.state.as_i64(),
                binding.node_name,
                binding.update_time,
                binding.last_seen
            ],
        )?;
        Ok(binding)
    }
}

impl Store for SqliteStore {
    fn ensure_network(&self, network: Network) -> StoreFuture<'_, Network> {
        self.run(move |inner| inner.ensure_network(network))
    }

    fn networks(&self) -> StoreFuture<'_, Vec<NetworkStatus>> {
        self.run(|inner| {
            Ok(inner
                .networks
                .values()
                .map(|loaded| NetworkStatus {
                    network: loaded.network.clone(),
                    capacity: loaded.pool.capacity(),
                    bound: loaded.pool.bound(),
                })
                .collect())
        })
    }

    fn add_bootstrap_token(&self, token: BootstrapToken) -> StoreFuture<'_, ()> {
        self.run(move |inner| {
            inner.db.execute(
                r#"insert into "token_mgr" ("token", "expire_time", "single_use", "uses", "create_time", "update_time")
                   values (?1, ?2, ?3, ?4, ?5, ?5)"#,
                params![token.digest, token.expire_time, token.single_use, token.uses, token.create_time],
            )?;
            Ok(())
        })
    }

    fn bootstrap_tokens(&self) -> StoreFuture<'_, Vec<BootstrapToken>> {
        self.run(|inner| {
            let mut statement = inner.db.prepare(
                r#"select "token", "create_time", "expire_time", "single_use", "uses"
                   from "token_mgr" order by "create_time", "id""#,
            )?;
            Ok(statement
                .query_map([], bootstrap_of)?
                .collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn sweep_bootstrap_tokens(&self, now: Millis) -> StoreFuture<'_, usize> {
        self.run(move |inner| {
            Ok(inner.db.execute(
                r#"delete from "token_mgr" where "expire_time" is not null and "expire_time" <= ?1"#,
                [now],
            )?)
        })
    }

    fn register(&self, request: NewBinding) -> StoreFuture<'_, Binding> {
        self.run(move |inner| inner.register(request))
    }

    fn binding<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Option<Binding>> {
        let (net_token, node_token) = (net_token.to_string(), node_token.to_string());
        self.run(move |inner| inner.binding(&net_token, &node_token))
    }

    fn bindings<'a>(&'a self, net_token: Option<&'a str>) -> StoreFuture<'a, Vec<Binding>> {
        let net_token = net_token.map(str::to_string);
        self.run(move |inner| inner.bindings(net_token.as_deref()))
    }

    fn bindings_of_node<'a>(&'a self, node_name: &'a str) -> StoreFuture<'a, Vec<Binding>> {
        let node_name = node_name.to_string();
        self.run(move |inner| inner.bindings_of_node(&node_name))
    }

    fn unregister<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
    ) -> StoreFuture<'a, Binding> {
        let (net_token, node_token) = (net_token.to_string(), node_token.to_string());
        self.run(move |inner| inner.unregister(&net_token, &node_token))
    }

    fn update_node<'a>(
        &'a self,
        net_token: &'a str,
        node_token: &'a str,
        update: NodeUpdate,
        now: Millis,
    ) -> StoreFuture<'a, Binding> {
        let (net_token, node_token) = (net_token.to_string(), node_token.to_string());
        self.run(move |inner| inner.update_node(&net_token, &node_token, update, now))
    }

    fn ensure_authority(
        &self,
        plane: Plane,
        candidate: AuthorityPem,
    ) -> StoreFuture<'_, AuthorityPem> {
        self.run(move |inner| {
            inner.db.execute(
                r#"insert or ignore into "authority" ("plane", "cert_pem", "key_pem", "create_time")
                   values (?1, ?2, ?3, cast(unixepoch('subsec') * 1000 as integer))"#,
                params![plane.name(), candidate.cert_pem, candidate.key_pem],
            )?;
            Ok(inner.db.query_row(
                r#"select "cert_pem", "key_pem" from "authority" where "plane" = ?1"#,
                [plane.name()],
                |row| {
                    Ok(AuthorityPem {
                        cert_pem: row.get(0)?,
                        key_pem: row.get(1)?,
                    })
                },
            )?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reclaim_reads_its_partial_index_without_scanning_or_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("plan.db")).unwrap();
        let plan = store.inner.lock().unwrap().reclaim_plan();
        assert!(plan.contains("network_mgr_reclaim"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }
}
