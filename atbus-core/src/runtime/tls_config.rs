//! TLS settings of a node ([`TlsSettings`]): its certificate chain and private key, the CAs that
//! verify its peers, whether clients must present certificates, and the name servers are checked
//! against. One type for code (the builder methods) and for the YAML `tls:` section of the node's
//! and the relay's files (it deserializes). Loaded once at `start()` into the rustls
//! configurations the `tls://` and `quic://` transports use (`LoadedTls`: ring provider, ALPN
//! `atbus/1`), with an error naming the file and the fault.
//!
//! TLS is transport security underneath the atbus handshake: the token handshake of the engine
//! runs on every connection all the same.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Deserializer};

/// The application protocol both transports negotiate.
pub(crate) const ALPN: &[u8] = b"atbus/1";

/// Where a PEM document comes from: a file, or bytes handed over by code. YAML names files.
#[derive(Clone, Deserialize)]
#[serde(from = "PathBuf")]
enum Pem {
    File(PathBuf),
    Memory(Arc<[u8]>),
}

impl From<PathBuf> for Pem {
    fn from(path: PathBuf) -> Self {
        Pem::File(path)
    }
}

impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pem::File(path) => f.debug_tuple("File").field(path).finish(),
            // Never print key material.
            Pem::Memory(bytes) => write!(f, "Memory({} bytes)", bytes.len()),
        }
    }
}

impl Pem {
    /// The document's bytes; `what` names it in the error ("certificate chain", ...).
    fn read(&self, what: &'static str) -> Result<(Arc<[u8]>, String), TlsError> {
        match self {
            Pem::File(path) => match std::fs::read(path) {
                Ok(bytes) => Ok((bytes.into(), format!("file {}", path.display()))),
                Err(source) => Err(TlsError::Read {
                    what,
                    path: path.clone(),
                    source,
                }),
            },
            Pem::Memory(bytes) => Ok((bytes.clone(), format!("in-memory {what} PEM"))),
        }
    }
}

/// The TLS settings of a node, for `tls://` and `quic://`.
///
/// A node that listens on either needs its certificate chain and key
/// ([`identity_files`](Self::identity_files)); a node that dials needs the CA that signed its
/// peers' certificates ([`ca_file`](Self::ca_file)). Mutual TLS: the listener sets
/// [`require_client_cert`](Self::require_client_cert) and a CA, the dialer an identity.
///
/// The YAML `tls:` section is the same settings, with paths:
///
/// ```yaml
/// tls:
///   cert: /etc/atbus/orders.pem  # the certificate chain, PEM, leaf first (to listen)
///   key: /etc/atbus/orders.key   # its private key, PEM
///   ca: /etc/atbus/ca.pem        # CA(s) the peers' certificates chain to (to dial); or a list
///   require_client_cert: false   # listeners refuse clients without a certificate from `ca`
///   server_name: billing.internal  # checked against servers' certificates instead of the host
/// ```
///
/// ```no_run
/// use atbus_core::runtime::{Node, TlsSettings};
/// # use atbus_core::engine::Token;
/// # async fn start(token: Token) -> Result<(), atbus_core::runtime::NodeError> {
/// let tls = TlsSettings::new()
///     .identity_files("/etc/atbus/node.pem", "/etc/atbus/node.key")
///     .ca_file("/etc/atbus/ca.pem");
/// let node = Node::builder()
///     .name("orders")
///     .token(token)
///     .tls(tls)
///     .listen("quic://0.0.0.0:7811")
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// The certificate chain; with `key`, this node's identity.
    cert: Option<Pem>,
    key: Option<Pem>,
    #[serde(deserialize_with = "one_or_many")]
    ca: Vec<Pem>,
    require_client_cert: bool,
    server_name: Option<String>,
}

impl TlsSettings {
    /// No identity, no CA, client certificates not required.
    pub fn new() -> Self {
        Self::default()
    }

    /// This node's certificate chain (PEM, leaf first) and private key (PEM: PKCS#8, PKCS#1 or
    /// SEC1), read at `start()`. Presented as the server certificate when listening and as the
    /// client certificate when dialing.
    pub fn identity_files(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Self {
        self.cert = Some(Pem::File(cert_chain.into()));
        self.key = Some(Pem::File(private_key.into()));
        self
    }

    /// [`identity_files`](Self::identity_files) from PEM text held in memory.
    pub fn identity_pem(
        mut self,
        cert_chain: impl Into<Vec<u8>>,
        private_key: impl Into<Vec<u8>>,
    ) -> Self {
        self.cert = Some(Pem::Memory(cert_chain.into().into()));
        self.key = Some(Pem::Memory(private_key.into().into()));
        self
    }

    /// A PEM file of CA certificates that peers' certificates must chain to: servers' when
    /// dialing, clients' when they are required. Call again to trust several files.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca.push(Pem::File(path.into()));
        self
    }

    /// [`ca_file`](Self::ca_file) from PEM text held in memory.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca.push(Pem::Memory(pem.into().into()));
        self
    }

    /// When listening, refuse clients without a certificate signed by one of the CAs.
    pub fn require_client_cert(mut self, required: bool) -> Self {
        self.require_client_cert = required;
        self
    }

    /// The name servers' certificates are checked against, instead of the host of the address
    /// dialed (a DNS name, or an IP address matched against the certificate's IP SANs).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The CA files trusted (not the CAs given as PEM text).
    pub fn ca_files(&self) -> impl Iterator<Item = &Path> {
        self.ca.iter().filter_map(|pem| match pem {
            Pem::File(path) => Some(path.as_path()),
            Pem::Memory(_) => None,
        })
    }

    /// Whether listeners refuse clients without a certificate.
    pub fn client_cert_required(&self) -> bool {
        self.require_client_cert
    }

    /// Checks what can be checked without reading the files: a certificate comes with its key
    /// (the YAML may give one without the other).
    pub fn check(&self) -> Result<(), TlsError> {
        match (&self.cert, &self.key) {
            (Some(_), None) => Err(TlsError::Incomplete(
                "a certificate needs its private key (YAML: tls.cert needs tls.key)",
            )),
            (None, Some(_)) => Err(TlsError::Incomplete(
                "a private key needs its certificate (YAML: tls.key needs tls.cert)",
            )),
            _ => Ok(()),
        }
    }

    /// Makes the relative file paths relative to `folder` (the configuration file's).
    pub fn resolve_relative_to(&mut self, folder: &Path) {
        let pems = self
            .cert
            .iter_mut()
            .chain(&mut self.key)
            .chain(&mut self.ca);
        for pem in pems {
            if let Pem::File(path) = pem {
                if path.is_relative() {
                    *path = folder.join(&*path);
                }
            }
        }
    }

    /// Reads the files and builds the rustls configurations.
    pub(crate) fn load(&self) -> Result<LoadedTls, TlsError> {
        self.check()?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        if let Some(name) = &self.server_name {
            ServerName::try_from(name.clone())
                .map_err(|_| TlsError::ServerName { name: name.clone() })?;
        }
        let identity = match (&self.cert, &self.key) {
            (Some(chain), Some(key)) => Some(load_identity(chain, key)?),
            _ => None,
        };
        let roots = if self.ca.is_empty() {
            None
        } else {
            Some(Arc::new(load_roots(&self.ca)?))
        };
        if self.require_client_cert && roots.is_none() {
            return Err(TlsError::Incomplete(
                "require_client_cert needs a CA to verify the clients' certificates with: \
                 TlsSettings::ca_file(…) (YAML: tls.ca)",
            ));
        }
        let server = |quic: bool| -> Result<Option<ServerConfig>, TlsError> {
            let Some(identity) = &identity else {
                return Ok(None);
            };
            let builder = ServerConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions(quic))
                .map_err(TlsError::rustls("protocol versions"))?;
            let builder = match (&roots, self.require_client_cert) {
                (Some(roots), true) => {
                    let verifier = WebPkiClientVerifier::builder_with_provider(
                        roots.clone(),
                        provider.clone(),
                    )
                    .build()
                    .map_err(|error| TlsError::Verifier(error.to_string()))?;
                    builder.with_client_cert_verifier(verifier)
                }
                _ => builder.with_no_client_auth(),
            };
            let mut config = builder
                .with_single_cert(identity.chain.clone(), identity.key.clone_key())
                .map_err(|source| TlsError::Identity {
                    cert: identity.chain_origin.clone(),
                    key: identity.key_origin.clone(),
                    source,
                })?;
            config.alpn_protocols = vec![ALPN.to_vec()];
            if quic {
                // 0-RTT on resumed sessions; QUIC allows no other value than this or 0.
                config.max_early_data_size = u32::MAX;
            }
            Ok(Some(config))
        };
        let client = |quic: bool| -> Result<Option<ClientConfig>, TlsError> {
            let Some(roots) = &roots else {
                return Ok(None);
            };
            let verifier =
                WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|error| TlsError::Verifier(error.to_string()))?;
            let builder = ClientConfig::builder_with_provider(provider.clone())
                .with_protocol_versions(versions(quic))
                .map_err(TlsError::rustls("protocol versions"))?
                .with_webpki_verifier(verifier);
            let mut config = match &identity {
                Some(identity) => builder
                    .with_client_auth_cert(identity.chain.clone(), identity.key.clone_key())
                    .map_err(|source| TlsError::Identity {
                        cert: identity.chain_origin.clone(),
                        key: identity.key_origin.clone(),
                        source,
                    })?,
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![ALPN.to_vec()];
            config.enable_early_data = quic;
            Ok(Some(config))
        };
        Ok(LoadedTls {
            tls_server: server(false)?.map(Arc::new),
            tls_client: client(false)?.map(Arc::new),
            quic_server: server(true)?,
            quic_client: client(true)?,
            server_name: self.server_name.clone(),
            require_client_cert: self.require_client_cert,
        })
    }
}

/// TLS 1.3 only for QUIC; 1.3 and 1.2 over TCP.
fn versions(quic: bool) -> &'static [&'static rustls::SupportedProtocolVersion] {
    static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
    if quic {
        &TLS13_ONLY
    } else {
        rustls::DEFAULT_VERSIONS
    }
}

struct Identity {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    chain_origin: String,
    key_origin: String,
}

fn load_identity(chain: &Pem, key: &Pem) -> Result<Identity, TlsError> {
    let (bytes, chain_origin) = chain.read("certificate chain")?;
    let chain = certificates(&bytes, "certificate chain", &chain_origin)?;
    let (bytes, key_origin) = key.read("private key")?;
    let key = match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => key,
        Err(rustls::pki_types::pem::Error::NoItemsFound) => {
            return Err(TlsError::NoPrivateKey { origin: key_origin });
        }
        Err(error) => {
            return Err(TlsError::BadPem {
                what: "private key",
                origin: key_origin,
                reason: error.to_string(),
            });
        }
    };
    Ok(Identity {
        chain,
        key,
        chain_origin,
        key_origin,
    })
}

fn load_roots(sources: &[Pem]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for source in sources {
        let (bytes, origin) = source.read("CA")?;
        for certificate in certificates(&bytes, "CA", &origin)? {
            roots.add(certificate).map_err(|error| TlsError::BadCa {
                origin: origin.clone(),
                reason: error.to_string(),
            })?;
        }
    }
    Ok(roots)
}

/// A path or a list of paths.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Pem>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(path) => vec![Pem::File(path)],
        OneOrMany::Many(paths) => paths.into_iter().map(Pem::File).collect(),
    })
}

/// Every certificate of a PEM document; none is an error.
fn certificates(
    bytes: &[u8],
    what: &'static str,
    origin: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::BadPem {
            what,
            origin: origin.to_string(),
            reason: error.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            origin: origin.to_string(),
        });
    }
    Ok(chain)
}

/// The rustls configurations built from [`TlsSettings`] (what the settings become once their files
/// are read, not another kind of settings): server ones when the node has an identity, client
/// ones when it has a CA.
pub(crate) struct LoadedTls {
    pub tls_server: Option<Arc<ServerConfig>>,
    pub tls_client: Option<Arc<ClientConfig>>,
    pub quic_server: Option<ServerConfig>,
    pub quic_client: Option<ClientConfig>,
    /// Checked against the server's certificate instead of the address's host.
    pub server_name: Option<String>,
    /// Listeners refuse clients without a certificate.
    pub require_client_cert: bool,
}

impl LoadedTls {
    /// The name to check the certificate of the server at `host` against.
    pub fn server_name<'a>(&'a self, host: &'a str) -> &'a str {
        self.server_name.as_deref().unwrap_or(host)
    }
}

/// Why TLS settings could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("tls: cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// What the file should hold: "certificate chain", "private key" or "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no certificate.
    #[error(
        "tls: the {what} {origin} holds no certificate (expected a -----BEGIN CERTIFICATE----- block)"
    )]
    NoCertificate {
        /// "certificate chain" or "CA".
        what: &'static str,
        /// The file, or "in-memory … PEM".
        origin: String,
    },
    /// A key file holds no private key.
    #[error(
        "tls: the private key {origin} holds no private key (expected a -----BEGIN PRIVATE KEY-----, \
         RSA PRIVATE KEY or EC PRIVATE KEY block)"
    )]
    NoPrivateKey {
        /// The file, or "in-memory private key PEM".
        origin: String,
    },
    /// A PEM document is malformed.
    #[error("tls: the {what} {origin} is not valid PEM: {reason}")]
    BadPem {
        /// What it should hold.
        what: &'static str,
        /// The file, or "in-memory … PEM".
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// A CA certificate cannot be used as a trust anchor.
    #[error("tls: a certificate of the CA {origin} is not usable: {reason}")]
    BadCa {
        /// The file, or "in-memory CA PEM".
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// The private key does not parse, or does not belong to the certificate.
    #[error(
        "tls: the private key {key} cannot be used with the certificate chain {cert}: {source}"
    )]
    Identity {
        /// Where the chain came from.
        cert: String,
        /// Where the key came from.
        key: String,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
    /// The `server_name` override is neither a DNS name nor an IP address.
    #[error("tls: the server name {name:?} is neither a DNS name nor an IP address")]
    ServerName {
        /// The name given.
        name: String,
    },
    /// A certificate verifier could not be built from the CAs.
    #[error("tls: cannot verify certificates with the CAs given: {0}")]
    Verifier(String),
    /// A setting needs another one.
    #[error("tls: {0}")]
    Incomplete(&'static str),
    /// The rustls configuration cannot carry QUIC (no TLS 1.3 cipher suite QUIC starts with).
    #[error("tls: the {side} configuration does not suit QUIC: {reason}")]
    Quic {
        /// "server" or "client".
        side: &'static str,
        /// quinn's reason.
        reason: String,
    },
    /// rustls refused a configuration.
    #[error("tls: {context}: {source}")]
    Rustls {
        /// What was being configured.
        context: &'static str,
        /// rustls's reason.
        #[source]
        source: rustls::Error,
    },
}

impl TlsError {
    fn rustls(context: &'static str) -> impl FnOnce(rustls::Error) -> TlsError {
        move |source| TlsError::Rustls { context, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let error = TlsSettings::new()
            .identity_files("/nonexistent/atbus/cert.pem", "/nonexistent/atbus/key.pem")
            .load()
            .err()
            .expect("missing");
        let text = error.to_string();
        assert!(text.contains("/nonexistent/atbus/cert.pem"), "{text}");
        assert!(text.contains("certificate chain"), "{text}");
    }

    #[test]
    fn pem_without_certificates_or_keys_is_refused() {
        let error = TlsSettings::new()
            .ca_pem("not a certificate")
            .load()
            .err()
            .expect("no certificate");
        assert!(
            matches!(error, TlsError::NoCertificate { what: "CA", .. }),
            "{error}"
        );
    }

    #[test]
    fn client_certs_need_a_ca() {
        let error = TlsSettings::new()
            .require_client_cert(true)
            .load()
            .err()
            .expect("incomplete");
        assert!(error.to_string().contains("require_client_cert"), "{error}");
    }

    #[test]
    fn a_bad_server_name_is_refused() {
        let error = TlsSettings::new()
            .server_name("not a name!")
            .load()
            .err()
            .expect("bad name");
        assert!(matches!(error, TlsError::ServerName { .. }), "{error}");
    }
}
