//! Keys, tokens at rest and signatures.
//!
//! Portal tokens are sealed with ChaCha20-Poly1305 under the operator's key, bound to the
//! portal and the column they live in, so a copied database reveals nothing and a sealed value
//! moved to another row does not open. The same key, through a labelled derivation, signs the
//! app's own session tokens.

use std::path::Path;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::secret::Secret;

const SEALED_VERSION: u8 = 1;
const NONCE_LEN: usize = 12;

/// A 256-bit key as the operator writes it: 64 hex digits or standard base64.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    pub fn parse(text: &str) -> anyhow::Result<TokenKey> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            STANDARD.decode(text).context("not hex or base64")?
        };
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| anyhow::anyhow!("must be 32 bytes (64 hex digits)"))?;
        Ok(TokenKey(key))
    }

    pub fn generate() -> TokenKey {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        TokenKey(key)
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Reads the key file, or creates it (mode 0600) when it does not exist yet.
    /// Returns the key and whether it was just created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(TokenKey, bool)> {
        if path.exists() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading key file {}", path.display()))?;
            let key = TokenKey::parse(&text)
                .with_context(|| format!("key file {} is malformed", path.display()))?;
            return Ok((key, false));
        }

        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("creating folder {}", dir.display()))?;
        }
        let key = TokenKey::generate();
        write_private(path, &format!("{}\n", key.to_hex()))
            .with_context(|| format!("writing key file {}", path.display()))?;
        Ok((key, true))
    }

    /// A key for another purpose, derived so that neither reveals the other.
    fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

#[cfg(unix)]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

/// Seals and opens tokens stored in the database.
#[derive(Clone)]
pub struct TokenCipher {
    cipher: ChaCha20Poly1305,
}

impl TokenCipher {
    pub fn new(key: &TokenKey) -> TokenCipher {
        TokenCipher {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.derive("tokens at rest"))),
        }
    }

    /// `context` names where the value lives (portal and column); opening needs the same.
    pub fn seal(&self, plaintext: &str, context: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: context.as_bytes(),
        };
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .expect("encryption of a short token cannot fail");

        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(SEALED_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> anyhow::Result<Secret> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_VERSION {
            bail!("sealed token has an unknown format");
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        let payload = Payload {
            msg: body,
            aad: context.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| anyhow::anyhow!("sealed token does not open under this key"))?;
        Ok(Secret::new(
            String::from_utf8(plain).context("sealed token is not text")?,
        ))
    }
}

/// Compares two secrets in constant time, whatever their lengths.
pub fn secrets_match(a: &str, b: &str) -> bool {
    let (a, b) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    a.ct_eq(&b).into()
}

/// Signs and checks short text payloads (the app's session tokens).
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl Signer {
    pub fn new(key: &TokenKey) -> Signer {
        Signer {
            key: key.derive("session tokens"),
        }
    }

    /// `payload.signature`, both URL-safe base64.
    pub fn sign(&self, payload: &[u8]) -> String {
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(payload),
            URL_SAFE_NO_PAD.encode(self.mac(payload))
        )
    }

    /// The payload of a token whose signature checks out.
    pub fn verify(&self, token: &str) -> Option<Vec<u8>> {
        let (payload, signature) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        let expected = self.mac(&payload);
        bool::from(expected.as_slice().ct_eq(&signature)).then_some(payload)
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_tokens_open_only_in_their_place() {
        let cipher = TokenCipher::new(&TokenKey::generate());
        let sealed = cipher.seal("access-123", "portal-a/access");

        assert_eq!(
            cipher.open(&sealed, "portal-a/access").unwrap().expose(),
            "access-123"
        );
        assert!(cipher.open(&sealed, "portal-b/access").is_err());
        assert!(!sealed.windows(10).any(|w| w == b"access-123"));
    }

    #[test]
    fn another_key_cannot_open() {
        let sealed = TokenCipher::new(&TokenKey::generate()).seal("t", "c");
        assert!(
            TokenCipher::new(&TokenKey::generate())
                .open(&sealed, "c")
                .is_err()
        );
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = TokenKey::generate();
        assert_eq!(TokenKey::parse(&key.to_hex()).unwrap().0, key.0);
        assert_eq!(TokenKey::parse(&STANDARD.encode(key.0)).unwrap().0, key.0);
        assert!(TokenKey::parse("too-short").is_err());
    }

    #[test]
    fn a_key_file_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/token.key");

        let (first, created) = TokenKey::load_or_create(&path).unwrap();
        assert!(created);
        let (second, created_again) = TokenKey::load_or_create(&path).unwrap();
        assert!(!created_again);
        assert_eq!(first.0, second.0);
    }

    #[test]
    fn signatures_detect_tampering() {
        let signer = Signer::new(&TokenKey::generate());
        let token = signer.sign(b"portal=1;user=2");
        assert_eq!(signer.verify(&token).unwrap(), b"portal=1;user=2");

        let (payload, signature) = token.split_once('.').unwrap();
        let forged = format!("{}.{signature}", URL_SAFE_NO_PAD.encode(b"portal=9;user=2"));
        assert_ne!(payload, forged.split_once('.').unwrap().0);
        assert!(signer.verify(&forged).is_none());
        assert!(Signer::new(&TokenKey::generate()).verify(&token).is_none());
    }

    #[test]
    fn secret_comparison_is_exact() {
        assert!(secrets_match("abc", "abc"));
        assert!(!secrets_match("abc", "abd"));
        assert!(!secrets_match("abc", "abcd"));
    }
}
