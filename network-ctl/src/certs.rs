//! The two certificate authorities (control plane and data plane) and the certificates they
//! issue to registered nodes: a fresh key per node and plane, the node token as the subject's
//! common name and as a DNS name, the bound address as an IP name, usable as TLS client and
//! server certificate.

use std::net::IpAddr;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::{Duration, OffsetDateTime};

use crate::error::ControlError;
use crate::records::{AuthorityPem, Plane};

/// How long a CA certificate is valid.
const AUTHORITY_LIFETIME: Duration = Duration::days(10 * 365);
/// How long a node certificate is valid.
const NODE_LIFETIME: Duration = Duration::days(365);
/// Clock skew allowed for: certificates are valid from this long before they were made.
const BACKDATE: Duration = Duration::hours(1);

/// A certificate, its key and the CA that signed it, in PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateSet {
    /// The CA certificate to verify peers with.
    pub ca_pem: String,
    /// The node's certificate.
    pub cert_pem: String,
    /// The node's private key (PKCS#8).
    pub key_pem: String,
}

/// A certificate authority, loaded and ready to sign.
pub struct Authority {
    plane: Plane,
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("plane", &self.plane)
            .finish_non_exhaustive()
    }
}

fn failed(what: &str, error: rcgen::Error) -> ControlError {
    ControlError::Storage(format!("{what}: {error}"))
}

fn serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the operating system's random source works");
    // Positive, as DER integers in certificates must be.
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Authority {
    /// A new self-signed CA for `plane`, as PEM to store.
    pub fn generate(plane: Plane) -> Result<AuthorityPem, ControlError> {
        let key = KeyPair::generate().map_err(|error| failed("generating a CA key", error))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "atbus-rs network-ctl");
        name.push(
            DnType::CommonName,
            format!("network-ctl {} plane CA", plane.name()),
        );
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + AUTHORITY_LIFETIME;
        params.serial_number = Some(serial());
        let cert = params
            .self_signed(&key)
            .map_err(|error| failed("self-signing a CA", error))?;
        Ok(AuthorityPem {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// The stored CA of `plane`, ready to sign.
    pub fn load(plane: Plane, pem: &AuthorityPem) -> Result<Self, ControlError> {
        let what = format!("loading the stored {} plane CA", plane.name());
        let key = KeyPair::from_pem(&pem.key_pem).map_err(|error| failed(&what, error))?;
        let issuer =
            Issuer::from_ca_cert_pem(&pem.cert_pem, key).map_err(|error| failed(&what, error))?;
        Ok(Self {
            plane,
            cert_pem: pem.cert_pem.clone(),
            issuer,
        })
    }

    /// Which plane it signs for.
    pub fn plane(&self) -> Plane {
        self.plane
    }

    /// The CA certificate.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// A new key and certificate for the node `node_token` bound to `ip`.
    pub fn issue(&self, node_token: &str, ip: IpAddr) -> Result<CertificateSet, ControlError> {
        let what = format!("issuing a {} plane certificate", self.plane.name());
        let key = KeyPair::generate().map_err(|error| failed(&what, error))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "atbus-rs network-ctl");
        name.push(
            DnType::OrganizationalUnitName,
            format!("{} plane", self.plane.name()),
        );
        name.push(DnType::CommonName, node_token);
        params.distinguished_name = name;
        params.subject_alt_names = vec![SanType::IpAddress(ip)];
        if let Ok(dns) = node_token.try_into() {
            params.subject_alt_names.push(SanType::DnsName(dns));
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - BACKDATE;
        params.not_after = now + NODE_LIFETIME;
        params.serial_number = Some(serial());
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|error| failed(&what, error))?;
        Ok(CertificateSet {
            ca_pem: self.cert_pem.clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}
