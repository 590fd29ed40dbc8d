//! The SQLite schema and its migrations. `PRAGMA user_version` holds the schema version; each
//! entry of [`MIGRATIONS`] takes the database from its index to the next version, in one
//! transaction.
//!
//! The tables are the seed's `network_mgr` (node token → address) and `token_mgr` (bootstrap
//! tokens, here their SHA-256 digests), with its `update_time` triggers, extended for several
//! networks (`net_token`), with liveness (`node_name`, `last_seen`), single-use tokens and the
//! certificate authorities. Times are milliseconds since the Unix epoch (UTC), written by the
//! server from its clock; the triggers stamp rows changed by hand (`sqlite3`) the same way.

/// The migrations, oldest first.
pub(super) const MIGRATIONS: &[&str] = &[
    // 0 -> 1: the first schema.
    r#"
    create table if not exists "net_token" (
        "id" integer primary key autoincrement,
        "token" text not null unique,
        "cidr" text not null,
        "gateway" text not null,
        "server_ip" text not null,
        "create_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
        "update_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer))
    );

    create table if not exists "network_mgr" (
        "id" integer primary key autoincrement,
        "token" text not null,
        "net_id" integer not null references "net_token"("id") on delete cascade,
        "state" integer not null,
        "bind_ip" text not null default '',
        "node_name" text not null default '',
        "last_seen" integer,
        "create_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
        "update_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
        unique ("net_id", "token"),
        -- An address is bound once per network, whatever happens to the process.
        unique ("net_id", "bind_ip")
    );
    -- Reclaim takes the least recently updated binding that is not connected, straight from
    -- this index (no scan, no sort).
    create index if not exists "network_mgr_reclaim" on "network_mgr" ("net_id", "update_time", "id")
        where "state" != 1;
    -- Liveness finds a node's bindings by its bus name.
    create index if not exists "network_mgr_node_name" on "network_mgr" ("node_name");

    create table if not exists "token_mgr" (
        "id" integer primary key autoincrement,
        -- The SHA-256 digest of the bootstrap token (hex); the token itself is never stored.
        "token" text not null unique,
        -- Null: never expires.
        "expire_time" integer,
        "single_use" integer not null default 0,
        "uses" integer not null default 0,
        "create_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer)),
        "update_time" integer not null default (cast(unixepoch('subsec') * 1000 as integer))
    );
    create index if not exists "token_mgr_expiry" on "token_mgr" ("expire_time");

    create table if not exists "authority" (
        "plane" text primary key,
        "cert_pem" text not null,
        "key_pem" text not null,
        "create_time" integer not null
    );

    -- SQLite has no ON UPDATE: as in the seed, triggers stamp update_time, here only when the
    -- statement did not set it itself.
    create trigger if not exists "update_time_trigger"
    after update of "id", "token", "state", "bind_ip", "create_time" on "network_mgr"
    when new."update_time" is old."update_time"
        and (new."id" is not old."id" or new."token" is not old."token"
            or new."state" is not old."state" or new."bind_ip" is not old."bind_ip"
            or new."create_time" is not old."create_time")
    begin
        update "network_mgr" set "update_time" = cast(unixepoch('subsec') * 1000 as integer)
        where "id" = old."id";
    end;

    create trigger if not exists "update_time_trigger2"
    after update of "id", "token", "create_time", "expire_time" on "token_mgr"
    when new."update_time" is old."update_time"
        and (new."id" is not old."id" or new."token" is not old."token"
            or new."create_time" is not old."create_time"
            or new."expire_time" is not old."expire_time")
    begin
        update "token_mgr" set "update_time" = cast(unixepoch('subsec') * 1000 as integer)
        where "id" = old."id";
    end;
    "#,
];
