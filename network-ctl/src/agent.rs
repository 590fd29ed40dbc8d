//! The agent's enrollment: the first time, register with the bootstrap token and keep the node
//! token and both certificate sets in the work dir (files 0600, directories 0700); every time
//! after, say hello with the kept node token and get the same address back.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::client::{Client, ClientError};
use crate::proto::ErrorCode;

/// The file in the work dir that holds the node token.
pub const NODE_FILE: &str = "node.json";

/// What the agent keeps of its registration (`node.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Enrollment {
    /// The node token.
    pub node_token: String,
    /// The network joined.
    pub net_token: String,
    /// The bound address.
    pub ip: String,
    /// The network's prefix length.
    pub prefix_len: u32,
}

/// How the agent came by its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It registered with the bootstrap token.
    Registered,
    /// It said hello with its kept node token.
    Returned,
}

/// Why enrollment failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The manager refused, or the bus failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The work dir could not be read or written.
    #[error("{path}: {error}")]
    Files {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Nothing to enroll with.
    #[error(
        "{0} holds no node token and client.yml has no bootstrapToken: ask an operator for one (network-ctl token create)"
    )]
    NoCredential(PathBuf),
}

/// Enrolls through `client`: hello with the node token kept in `work_dir`, else (or when the
/// manager no longer knows it and a bootstrap token is given) register with `bootstrap_token`
/// in `net_token` and keep the result.
pub async fn enroll(
    client: &Client,
    work_dir: &Path,
    bootstrap_token: Option<&str>,
    net_token: &str,
) -> Result<(Enrollment, Outcome), AgentError> {
    if let Some(kept) = load(work_dir)? {
        match client.hello(&kept.node_token, &kept.net_token).await {
            Ok(binding) => {
                let enrollment = Enrollment {
                    ip: binding.ip,
                    prefix_len: binding.prefix_len,
                    ..kept
                };
                save_node(work_dir, &enrollment)?;
                return Ok((enrollment, Outcome::Returned));
            }
            Err(error)
                if error.code() == Some(ErrorCode::UnknownNode) && bootstrap_token.is_some() =>
            {
                tracing::warn!(%error, "the kept node token is no longer registered; registering again with the bootstrap token");
            }
            Err(error) => return Err(error.into()),
        }
    }
    let bootstrap_token =
        bootstrap_token.ok_or_else(|| AgentError::NoCredential(work_dir.to_path_buf()))?;
    let registered = client.register(bootstrap_token, net_token).await?;
    let binding = registered
        .binding
        .ok_or_else(|| ClientError::Protocol("a registration without its binding".into()))?;
    // Everything is written to temp files first and renamed into place at the end, the node
    // token last: a failed write loses no registration that the files could still show.
    let mut staged = Vec::new();
    for (plane, set) in [
        ("control-plane", &registered.control_plane),
        ("data-plane", &registered.data_plane),
    ] {
        let set = set.as_ref().ok_or_else(|| {
            ClientError::Protocol(format!("a registration without its {plane} certificates"))
        })?;
        for (name, pem) in [
            ("ca.pem", &set.ca_pem),
            ("cert.pem", &set.cert_pem),
            ("key.pem", &set.key_pem),
        ] {
            let path = work_dir.join(plane).join(name);
            staged.push((stage(&path, pem.as_bytes())?, path));
        }
    }
    let enrollment = Enrollment {
        node_token: binding.node_token,
        net_token: binding.net_token,
        ip: binding.ip,
        prefix_len: binding.prefix_len,
    };
    for (temp, path) in staged {
        put_in_place(&temp, &path)?;
    }
    save_node(work_dir, &enrollment)?;
    Ok((enrollment, Outcome::Registered))
}

/// The enrollment kept in `work_dir`, if any.
pub fn load(work_dir: &Path) -> Result<Option<Enrollment>, AgentError> {
    let path = work_dir.join(NODE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(AgentError::Files { path, error }),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|error| AgentError::Files {
            path,
            error: std::io::Error::new(std::io::ErrorKind::InvalidData, error),
        })
}

fn save_node(work_dir: &Path, enrollment: &Enrollment) -> Result<(), AgentError> {
    let json = serde_json::to_string_pretty(enrollment).expect("strings serialise");
    write_private(&work_dir.join(NODE_FILE), json.as_bytes())
}

/// Writes `path` readable by its owner only, atomically (a temp file renamed over it), with
/// its directories created 0700.
fn write_private(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    let temp = stage(path, data)?;
    put_in_place(&temp, path)
}

/// Writes `data` to a new temp file beside `path` (0600, created afresh: a file or link left
/// there is removed, never followed) and returns its path.
fn stage(path: &Path, data: &[u8]) -> Result<PathBuf, AgentError> {
    let failed = |error| AgentError::Files {
        path: path.to_path_buf(),
        error,
    };
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
    }
    let temp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&temp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(failed)?;
    file.write_all(data).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    Ok(temp)
}

/// Renames the staged `temp` over `path`.
fn put_in_place(temp: &Path, path: &Path) -> Result<(), AgentError> {
    std::fs::rename(temp, path).map_err(|error| AgentError::Files {
        path: path.to_path_buf(),
        error,
    })
}
