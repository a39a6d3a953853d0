//! Sealing of tenants' HMAC secrets. Verifying a HYPER-HMAC-SHA256 signature needs the secret
//! itself, so it cannot be hashed; instead it is encrypted (ChaCha20-Poly1305, ring) with a key
//! kept in a root-only file beside the store, never in it: a copy of the store alone (a backup,
//! an etcd snapshot) gives no usable secret.

use std::path::Path;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

pub struct Sealer {
    key: LessSafeKey,
    /// What nodes sign the requests they pass to each other with (`crate::fleet_link`):
    /// derived from the sealing key, which every node of a fleet has.
    fleet_key: ring::hmac::Key,
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("cannot read or create the sealing key {path}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the sealing key file {0} is damaged (want 32 bytes)")]
    BadKey(String),
    #[error("a sealed secret does not open with this sealing key")]
    Open,
}

impl Sealer {
    /// Loads the key at `path`, creating it (mode 0600) the first time.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let io = |source| SealError::Key {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| io(std::io::Error::other("no randomness")))?;
                use std::os::unix::fs::OpenOptionsExt;
                let mut f = std::fs::OpenOptions::new()
                    .create_new(true)
                    .write(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                std::io::Write::write_all(&mut f, &key).map_err(io)?;
                key.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_bytes(&bytes).ok_or_else(|| SealError::BadKey(path.display().to_string()))
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let key = UnboundKey::new(&CHACHA20_POLY1305, bytes).ok()?;
        let derived = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, bytes),
            b"hyper fleet requests v1",
        );
        Some(Self {
            key: LessSafeKey::new(key),
            fleet_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()),
        })
    }

    /// The key nodes of one fleet share for signing requests to each other.
    pub fn fleet_key(&self) -> ring::hmac::Key {
        self.fleet_key.clone()
    }

    /// hex(nonce || ciphertext || tag)
    pub fn seal(&self, secret: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .expect("system randomness");
        let mut data = secret.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .expect("sealing cannot fail for in-memory data");
        let mut out = nonce.to_vec();
        out.extend(data);
        hex::encode(out)
    }

    pub fn open(&self, sealed: &str) -> Result<String, SealError> {
        let raw = hex::decode(sealed).map_err(|_| SealError::Open)?;
        if raw.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError::Open)?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::empty(), &mut data)
            .map_err(|_| SealError::Open)?;
        String::from_utf8(plain.to_vec()).map_err(|_| SealError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_with_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let a = Sealer::load_or_create(&dir.path().join("a.key")).unwrap();
        let sealed = a.seal("s3cret");
        assert!(
            !sealed.contains("s3cret") && sealed != a.seal("s3cret"),
            "random nonce each time"
        );
        assert_eq!(a.open(&sealed).unwrap(), "s3cret");
        let again = Sealer::load_or_create(&dir.path().join("a.key")).unwrap();
        assert_eq!(
            again.open(&sealed).unwrap(),
            "s3cret",
            "the key file is reused"
        );
        let b = Sealer::load_or_create(&dir.path().join("b.key")).unwrap();
        assert!(b.open(&sealed).is_err());
        let mut tampered = sealed.clone().into_bytes();
        tampered[30] = if tampered[30] == b'0' { b'1' } else { b'0' };
        assert!(a.open(std::str::from_utf8(&tampered).unwrap()).is_err());
    }
}
