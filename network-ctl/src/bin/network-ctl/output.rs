//! How the CLI prints what the network-manager answered: aligned tables for people, or JSON
//! (`--output json`) for scripts.

use network_ctl::clock::format_time;
use network_ctl::proto;
use serde_json::{Value, json};

/// Table or JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON document.
    Json,
}

/// Prints `rows` under `header` as aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let text: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", text.join("  ").trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn time(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_string(), format_time)
}

fn state(binding: &proto::Binding) -> &'static str {
    match proto::NodeState::try_from(binding.state) {
        Ok(proto::NodeState::Connected) => "connected",
        Ok(proto::NodeState::Lost) => "lost",
        _ => "never connected",
    }
}

fn token_json(token: &proto::BootstrapToken) -> Value {
    json!({
        "id": token.id,
        "createTime": format_time(token.create_time_ms),
        "expireTime": token.expire_time_ms.map(format_time),
        "singleUse": token.single_use,
        "uses": token.uses,
    })
}

fn binding_json(binding: &proto::Binding) -> Value {
    json!({
        "nodeToken": binding.node_token,
        "netToken": binding.net_token,
        "ip": binding.ip,
        "prefixLen": binding.prefix_len,
        "state": state(binding),
        "nodeName": binding.node_name,
        "createTime": format_time(binding.create_time_ms),
        "updateTime": format_time(binding.update_time_ms),
        "lastSeen": binding.last_seen_ms.map(format_time),
    })
}

fn network_json(network: &proto::Network) -> Value {
    json!({
        "netToken": network.net_token,
        "cidr": network.cidr,
        "gateway": network.gateway,
        "serverIp": network.server_ip,
        "capacity": network.capacity,
        "bound": network.bound,
        "createTime": format_time(network.create_time_ms),
    })
}

/// A new bootstrap token (the only time it is shown).
pub fn created_token(format: Format, created: &proto::CreatedToken) {
    let info = created.info.clone().unwrap_or_default();
    match format {
        Format::Json => {
            let mut value = token_json(&info);
            value["token"] = json!(created.token);
            println!("{value}");
        }
        Format::Table => {
            println!("{}", created.token);
            eprintln!(
                "bootstrap token {} created: expires {}, {}; it is not shown again",
                info.id,
                info.expire_time_ms
                    .map_or_else(|| "never".into(), format_time),
                if info.single_use {
                    "single-use"
                } else {
                    "reusable"
                }
            );
        }
    }
}

/// Stored bootstrap tokens.
pub fn tokens(format: Format, tokens: &[proto::BootstrapToken]) {
    match format {
        Format::Json => println!("{}", Value::Array(tokens.iter().map(token_json).collect())),
        Format::Table => {
            let rows: Vec<Vec<String>> = tokens
                .iter()
                .map(|t| {
                    vec![
                        t.id.clone(),
                        format_time(t.create_time_ms),
                        t.expire_time_ms.map_or_else(|| "never".into(), format_time),
                        if t.single_use { "yes" } else { "no" }.into(),
                        t.uses.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "CREATED", "EXPIRES", "SINGLE-USE", "USES"], &rows);
        }
    }
}

/// Networks.
pub fn networks(format: Format, networks: &[proto::Network]) {
    match format {
        Format::Json => println!(
            "{}",
            Value::Array(networks.iter().map(network_json).collect())
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = networks
                .iter()
                .map(|n| {
                    vec![
                        n.net_token.clone(),
                        n.cidr.clone(),
                        n.gateway.clone(),
                        n.server_ip.clone(),
                        n.bound.to_string(),
                        n.capacity.to_string(),
                    ]
                })
                .collect();
            table(
                &[
                    "NET-TOKEN",
                    "CIDR",
                    "GATEWAY",
                    "SERVER",
                    "BOUND",
                    "CAPACITY",
                ],
                &rows,
            );
        }
    }
}

/// Bindings.
pub fn bindings(format: Format, bindings: &[proto::Binding]) {
    match format {
        Format::Json => println!(
            "{}",
            Value::Array(bindings.iter().map(binding_json).collect())
        ),
        Format::Table => {
            let rows: Vec<Vec<String>> = bindings
                .iter()
                .map(|b| {
                    vec![
                        b.node_token.clone(),
                        b.net_token.clone(),
                        format!("{}/{}", b.ip, b.prefix_len),
                        state(b).into(),
                        if b.node_name.is_empty() {
                            "-".into()
                        } else {
                            b.node_name.clone()
                        },
                        if state(b) == "connected" {
                            "now".into()
                        } else {
                            time(b.last_seen_ms)
                        },
                    ]
                })
                .collect();
            table(
                &[
                    "NODE-TOKEN",
                    "NETWORK",
                    "ADDRESS",
                    "STATE",
                    "BUS-NAME",
                    "LAST-SEEN",
                ],
                &rows,
            );
        }
    }
}

/// One binding: the address alone for `node ip` in a table, the whole row otherwise.
pub fn binding(format: Format, binding: &proto::Binding, address_only: bool) {
    match format {
        Format::Json => println!("{}", binding_json(binding)),
        Format::Table if address_only => println!("{}/{}", binding.ip, binding.prefix_len),
        Format::Table => bindings(format, std::slice::from_ref(binding)),
    }
}
