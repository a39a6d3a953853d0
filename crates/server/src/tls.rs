//! TLS for the TCP API (rustls with the ring provider). hyperd keeps a small CA under
//! `DATA/tls/`, made at first start: it signs the server's certificate and, per tenant, the
//! client certificates the stock Docker CLI presents with `--tlsverify` (clients that sign
//! their requests, like Hyper's CLI, need no certificate: one is asked for, not required).
//! A client certificate is known by the SHA-256 of its DER, recorded with its tenant and
//! lifetime in the store, and checked there on every request (see `credentials`): revoking
//! one is marking its record, and takes effect on connections already open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use sha2::{Digest, Sha256};

const CA_NAME: &str = "Hyper tenant CA";

pub struct Authority {
    dir: PathBuf,
    ca_key: KeyPair,
    ca_cert: rcgen::Certificate,
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2044, 1, 1);
    params
}

fn write_private(path: &Path, data: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&tmp)?;
    std::io::Write::write_all(&mut f, data.as_bytes())?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// SHA-256 of a certificate's DER, the name a client certificate is known by.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

impl Authority {
    /// Loads `DATA/tls`, making the CA and the server certificate the first time.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let key_path = dir.join("ca-key.pem");
        let ca_key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).context("read the CA key")?,
            Err(_) => {
                let key = KeyPair::generate()?;
                write_private(&key_path, &key.serialize_pem())?;
                key
            }
        };
        // The same subject and key each time: certificates it signed before still verify
        // against ca.pem.
        let ca_cert = ca_params().self_signed(&ca_key)?;
        if !dir.join("ca.pem").exists() {
            std::fs::write(dir.join("ca.pem"), ca_cert.pem())?;
        }
        let authority = Self {
            dir: dir.to_path_buf(),
            ca_key,
            ca_cert,
        };
        if !dir.join("server.pem").exists() {
            authority.make_server_cert()?;
        }
        Ok(authority)
    }

    fn make_server_cert(&self) -> anyhow::Result<()> {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .trim()
            .to_string();
        let mut names = vec!["localhost".to_string()];
        if !host.is_empty() {
            names.push(host);
        }
        let mut params = CertificateParams::new(names)?;
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        params
            .subject_alt_names
            .push(SanType::IpAddress("::1".parse()?));
        params.distinguished_name.push(DnType::CommonName, "hyperd");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        write_private(&self.dir.join("server-key.pem"), &key.serialize_pem())?;
        std::fs::write(self.dir.join("server.pem"), cert.pem())?;
        Ok(())
    }

    pub fn ca_pem(&self) -> String {
        self.ca_cert.pem()
    }

    /// A client certificate for `tenant`, valid from `life.created` (less a few minutes of
    /// clock skew) to `life.expires`: (cert PEM, key PEM, fingerprint).
    pub fn issue_client_cert(
        &self,
        tenant: &str,
        life: &crate::credentials::Lifetime,
    ) -> anyhow::Result<(String, String, String)> {
        let at = |t: chrono::DateTime<chrono::Utc>| {
            time::OffsetDateTime::from_unix_timestamp(t.timestamp()).context("certificate date")
        };
        let mut params = CertificateParams::default();
        params.not_before = at(life.created - chrono::TimeDelta::minutes(5))?;
        if let Some(expires) = life.expires {
            params.not_after = at(expires)?;
        }
        params.distinguished_name.push(DnType::CommonName, tenant);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        Ok((cert.pem(), key.serialize_pem(), fingerprint(cert.der())))
    }

    /// The server side: our certificate; client certificates are asked for but not required.
    pub fn server_setup(&self) -> anyhow::Result<TlsSetup> {
        let chain: Vec<CertificateDer<'static>> =
            pem_certs(&std::fs::read_to_string(self.dir.join("server.pem"))?)?;
        let key = KeyPair::from_pem(&std::fs::read_to_string(self.dir.join("server-key.pem"))?)?;
        self.setup_with(chain, &key)
    }

    /// The fleet listener's side (`crate::fleet_link`): a certificate for this node's address
    /// on the fleet's network, made at each start by the CA every node of the fleet shares.
    pub fn node_server_setup(&self, address: std::net::Ipv4Addr) -> anyhow::Result<TlsSetup> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .subject_alt_names
            .push(SanType::IpAddress(address.into()));
        params
            .distinguished_name
            .push(DnType::CommonName, "hyperd node");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.ca_cert, &self.ca_key)?;
        self.setup_with(vec![cert.der().clone()], &key)
    }

    /// What a node trusts when it calls another: certificates of the fleet's CA.
    pub fn node_client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone())?;
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn setup_with(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
    ) -> anyhow::Result<TlsSetup> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_cert.der().clone())?;
        let ours = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(Arc::new(CheckedLater(ours.clone())))
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsSetup {
            config: Arc::new(config),
            client_verifier: ours,
        })
    }
}

/// What the TCP listener needs: the rustls config, and the check of a client certificate
/// against our CA, run after the handshake so a foreign certificate gets a 401 that says why
/// instead of a bare handshake failure.
#[derive(Clone)]
pub struct TlsSetup {
    pub config: Arc<rustls::ServerConfig>,
    pub client_verifier: Arc<dyn ClientCertVerifier>,
}

impl TlsSetup {
    /// `Ok(fingerprint)` for a certificate of our CA, `Err(reason)` otherwise. An expired one
    /// is passed on: its record in the store says since when, which makes the clearer refusal
    /// (and only certificates we issued have a record: the fingerprint covers the whole DER).
    pub fn check_client(&self, chain: &[CertificateDer<'_>]) -> Result<String, String> {
        use rustls::CertificateError::{Expired, ExpiredContext};
        let (leaf, intermediates) = chain.split_first().ok_or("no certificate")?;
        match self
            .client_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(Expired))
            | Err(rustls::Error::InvalidCertificate(ExpiredContext { .. })) => {
                Ok(fingerprint(leaf))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Accepts any client certificate during the handshake (the client still proves it holds the
/// key: signatures are checked); the chain is judged per request by [`TlsSetup::check_client`].
#[derive(Debug)]
struct CheckedLater(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for CheckedLater {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

fn pem_certs(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate PEM")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloaded_authority_signs_certificates_the_first_one_trusts() {
        let dir = tempfile::tempdir().unwrap();
        let first = Authority::load_or_create(dir.path()).unwrap();
        let ca_pem = first.ca_pem();
        drop(first);
        let again = Authority::load_or_create(dir.path()).unwrap();
        let life = crate::credentials::Lifetime::issued(
            chrono::Utc::now(),
            Some(chrono::TimeDelta::days(1)),
        );
        let (cert, _key, fp) = again.issue_client_cert("t1", &life).unwrap();
        assert_eq!(fp.len(), 64);
        // The client certificate verifies against the CA written at first start.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pem_certs(&ca_pem).unwrap().remove(0)).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let leaf = pem_certs(&cert).unwrap().remove(0);
        verifier
            .verify_client_cert(&leaf, &[], rustls::pki_types::UnixTime::now())
            .unwrap();
        let setup = again.server_setup().unwrap();
        assert_eq!(setup.check_client(std::slice::from_ref(&leaf)), Ok(fp));
        let foreign = tempfile::tempdir().unwrap();
        let (other, _, _) = Authority::load_or_create(foreign.path())
            .unwrap()
            .issue_client_cert("t1", &life)
            .unwrap();
        assert!(
            setup.check_client(&pem_certs(&other).unwrap()).is_err(),
            "a certificate of another CA"
        );
        // An expired one of ours is passed on to the store's record, which says since when.
        let past = crate::credentials::Lifetime::issued(
            chrono::Utc::now() - chrono::TimeDelta::days(2),
            Some(chrono::TimeDelta::days(1)),
        );
        let (old, _, old_fp) = again.issue_client_cert("t1", &past).unwrap();
        assert_eq!(setup.check_client(&pem_certs(&old).unwrap()), Ok(old_fp));
    }
}
