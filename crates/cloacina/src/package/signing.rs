//! Ed25519 package signatures: key files and detached signature side-cars.
//!
//! A signature covers an archive's identity, its SHA-256: the signed message is the 32 raw
//! bytes of the digest. It is stored beside the archive in `<archive>.sig` (the archive's
//! file name with `.sig` appended), a one-line JSON document:
//!
//! ```json
//! {"algorithm":"ed25519","sha256":"<64 hex>","public_key":"<64 hex>","signature":"<128 hex>"}
//! ```
//!
//! Key files are text. The private key file (created with mode 0600, never overwritten) is
//!
//! ```text
//! cloacina-ed25519-private-key
//! <64 hex: the 32-byte Ed25519 seed>
//! ```
//!
//! and the public key file (`<keyfile>.pub`) is one line,
//! `cloacina-ed25519-public-key <64 hex>`, optionally followed by a space and a comment.
//!
//! [`verify_archive`] checks, in this order: the archive exists, its side-car exists and
//! parses, the archive's current SHA-256 is the signed one, the signing key is one of the
//! trusted keys, and the signature is valid. Each failure has its own [`SignatureError`].
//! Key files and side-cars are read with a bound ([`MAX_KEY_FILE_BYTES`],
//! [`MAX_SIGNATURE_FILE_BYTES`]), and only when they are regular files.
//!
//! A host decides what it demands with a [`SignaturePolicy`] (the daemon's
//! `require_signatures` and `trusted_keys`); under every policy a side-car that is present
//! must be valid.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::archive::sha256_file;
use super::shown_path;

/// First line of a private key file.
pub const PRIVATE_KEY_HEADER: &str = "cloacina-ed25519-private-key";
/// First word of a public key file.
pub const PUBLIC_KEY_PREFIX: &str = "cloacina-ed25519-public-key";
/// The only signature algorithm.
pub const ALGORITHM: &str = "ed25519";

const KEYGEN_HINT: &str = "create a key pair with 'cloacinactl package keygen KEYFILE'";
const SIGN_HINT: &str = "sign with 'cloacinactl package pack --sign KEYFILE'";

/// Why a key or signature operation failed. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Reading or writing a file failed. The I/O error is kept typed (its text is part of the
    /// message).
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: String,
        cause: io::Error,
    },

    /// The archive to sign or verify could not be read (its own message names the file).
    #[error(transparent)]
    Archive(Box<super::archive::ArchiveError>),

    /// The archive's digest could not be signed.
    #[error("cannot sign {archive}: {problem}")]
    Sign { archive: String, problem: String },

    #[error(
        "{path} already exists; refusing to overwrite a key. Choose another file name, or remove the old key first if you really mean to replace it"
    )]
    KeyExists { path: String },

    #[error("key file {path} not found; {KEYGEN_HINT}")]
    KeyNotFound { path: String },

    #[error("{path} is not a Cloacina {kind} key file: {problem}; {KEYGEN_HINT}")]
    MalformedKey {
        path: String,
        kind: &'static str,
        problem: String,
    },

    #[error(
        "{path} is a private key; pass the public key file ({path}.pub) instead, and keep the private key secret"
    )]
    PrivateKeyGiven { path: String },

    #[error(
        "private key {path} is accessible by other users (mode {mode:04o}); restrict it with 'chmod 600 {path}'"
    )]
    KeyTooOpen { path: String, mode: u32 },

    #[error("archive {archive} not found; check the path")]
    ArchiveNotFound { archive: String },

    /// A path that must be a regular file is a directory, FIFO, device or socket.
    #[error("{what} {path} {problem}; give the path of a regular file")]
    NotAFile {
        what: &'static str,
        path: String,
        problem: &'static str,
    },

    /// A key or signature file larger than any genuine one: refused unread.
    #[error(
        "{what} {path} is larger than {limit} bytes, far larger than a genuine one; check the path"
    )]
    FileTooLarge {
        what: &'static str,
        path: String,
        limit: u64,
    },

    /// Signatures are required and the archive has none.
    #[error(
        "{archive} is not signed (no {sig}) and this host requires signatures (daemon.require_signatures); sign it with a trusted key: 'cloacinactl package pack DIR --sign KEYFILE'"
    )]
    Required { archive: String, sig: String },

    /// A key of `daemon.trusted_keys` cannot be used.
    #[error("cannot use trusted key {path} (daemon.trusted_keys in config.toml): {cause}")]
    TrustedKey {
        path: String,
        /// Why the key file cannot be used (its text is part of the message).
        cause: Box<SignatureError>,
    },

    /// `daemon.require_signatures` without any trusted key.
    #[error(
        "daemon.require_signatures is set but daemon.trusted_keys lists no public key file; add the signers' public key files (KEYFILE.pub, written by 'cloacinactl package keygen') to trusted_keys in config.toml"
    )]
    RequiredWithoutKeys,

    #[error("no signature for {archive}: expected {sig}; {SIGN_HINT}")]
    Missing { archive: String, sig: String },

    #[error(
        "signature file {sig} is malformed ({problem}); sign {archive} again with 'cloacinactl package pack --sign KEYFILE'"
    )]
    Malformed {
        archive: String,
        sig: String,
        problem: String,
    },

    #[error(
        "signature file {sig} uses algorithm '{algorithm}', but only ed25519 is supported; sign {archive} again with 'cloacinactl package pack --sign KEYFILE'"
    )]
    UnsupportedAlgorithm {
        archive: String,
        sig: String,
        algorithm: String,
    },

    #[error(
        "{archive} changed after it was signed: its SHA-256 is {actual} but {sig} signs {signed}; do not use it — pack and sign it again"
    )]
    Tampered {
        archive: String,
        sig: String,
        actual: String,
        signed: String,
    },

    #[error(
        "{archive} is signed by key {key}, which is not trusted (trusted: {trusted}); verify it with the signer's public key, or sign it with a trusted key"
    )]
    UntrustedKey {
        archive: String,
        key: String,
        trusted: String,
    },

    #[error(
        "the signature in {sig} is not valid for {archive} and key {key}: the side-car was altered or damaged; sign the archive again"
    )]
    BadSignature {
        archive: String,
        sig: String,
        key: String,
    },

    #[error(
        "no trusted public keys to verify {archive} against; give the signer's public key file (KEYFILE.pub)"
    )]
    NoTrustedKeys { archive: String },
}

fn io_error(action: &'static str, path: &Path, e: io::Error) -> SignatureError {
    SignatureError::Io {
        action,
        path: shown_path(path),
        cause: e,
    }
}

/// An Ed25519 public key that signatures are checked against.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Result<PublicKey, String> {
        let bytes: [u8; 32] = decode_hex_array(text.trim())?;
        VerifyingKey::from_bytes(&bytes)
            .map(PublicKey)
            .map_err(|_| "the key is not a valid Ed25519 public key".to_string())
    }

    /// Lowercase hex of the 32 key bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    /// The text of a public key file: `cloacina-ed25519-public-key <hex>` and a newline.
    pub fn to_file_text(&self) -> String {
        format!("{PUBLIC_KEY_PREFIX} {}\n", self.to_hex())
    }

    /// Parses the text of a public key file; `origin` (a path) is only used in messages.
    pub fn parse_file_text(text: &str, origin: &str) -> Result<PublicKey, SignatureError> {
        let malformed = |problem: &str| SignatureError::MalformedKey {
            path: origin.to_string(),
            kind: "public",
            problem: problem.to_string(),
        };
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let Some(line) = lines.next() else {
            return Err(malformed("it is empty"));
        };
        if line == PRIVATE_KEY_HEADER {
            return Err(SignatureError::PrivateKeyGiven {
                path: origin.to_string(),
            });
        }
        let mut words = line.split_whitespace();
        if words.next() != Some(PUBLIC_KEY_PREFIX) {
            return Err(malformed(&format!(
                "it does not start with '{PUBLIC_KEY_PREFIX}'"
            )));
        }
        let Some(key) = words.next() else {
            return Err(malformed("the key is missing after the prefix"));
        };
        if lines.next().is_some() {
            return Err(malformed("it has more than one line"));
        }
        PublicKey::from_hex(key).map_err(|p| malformed(&p))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_hex())
    }
}

/// An Ed25519 private (signing) key. Its `Debug` output does not reveal it; it is zeroed
/// when dropped.
pub struct PrivateKey(SigningKey);

impl PrivateKey {
    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey(public {})", self.public_key().to_hex())
    }
}

/// What [`generate_keypair`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The private key file (mode 0600).
    pub private_key_path: PathBuf,
    /// The public key file, `<keyfile>.pub`.
    pub public_key_path: PathBuf,
    /// The new public key.
    pub public_key: PublicKey,
}

/// A side-car signature file's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signed archive's SHA-256, lowercase hex.
    pub sha256: String,
    /// The signer's public key, lowercase hex.
    pub public_key: String,
    /// The 64-byte signature over the 32 digest bytes, lowercase hex.
    pub signature: String,
}

impl Sidecar {
    /// The side-car's file text: one line of JSON and a newline.
    pub fn to_text(&self) -> String {
        // Serialising a struct of strings cannot fail.
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A signature [`verify_archive`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The side-car file.
    pub signature_path: PathBuf,
    /// The archive's SHA-256, lowercase hex.
    pub sha256: String,
    /// The trusted key that made the signature.
    pub public_key: PublicKey,
}

/// The side-car path of an archive: its path with `.sig` appended (`x.cloacina.sig`).
pub fn signature_path(archive: &Path) -> PathBuf {
    let mut s = archive.as_os_str().to_os_string();
    s.push(".sig");
    PathBuf::from(s)
}

/// The public key file of a private key file: its path with `.pub` appended.
pub fn public_key_path(keyfile: &Path) -> PathBuf {
    let mut s = keyfile.as_os_str().to_os_string();
    s.push(".pub");
    PathBuf::from(s)
}

/// Generates a new key pair: the private key goes to `keyfile` (created with mode 0600, so it
/// is never readable by others, even briefly) and the public key to `keyfile.pub`. Refuses to
/// overwrite either file.
pub fn generate_keypair(keyfile: &Path) -> Result<PublicKeyInfo, SignatureError> {
    let pub_path = public_key_path(keyfile);
    for path in [keyfile, pub_path.as_path()] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(SignatureError::KeyExists {
                path: shown_path(path),
            });
        }
    }

    let mut seed: [u8; 32] = rand::random();
    let signing = SigningKey::from_bytes(&seed);
    let mut text = format!("{PRIVATE_KEY_HEADER}\n{}\n", hex::encode(seed));
    seed.fill(0);
    std::hint::black_box(&seed);
    let key = PrivateKey(signing);
    let public_key = key.public_key();

    let written = write_new_file(keyfile, text.as_bytes(), 0o600);
    // Best effort: do not leave the seed's hex behind in freed memory.
    text.replace_range(.., &"0".repeat(text.len()));
    std::hint::black_box(&text);
    written?;

    if let Err(e) = write_new_file(&pub_path, public_key.to_file_text().as_bytes(), 0o644) {
        let _ = fs::remove_file(keyfile);
        return Err(e);
    }
    Ok(PublicKeyInfo {
        private_key_path: keyfile.to_path_buf(),
        public_key_path: pub_path,
        public_key,
    })
}

fn write_new_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), SignatureError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == io::ErrorKind::AlreadyExists {
            SignatureError::KeyExists {
                path: shown_path(path),
            }
        } else {
            io_error("create", path, e)
        }
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| io_error("write", path, e))
}

/// Most bytes of a key file: a key is one line of 92 characters; the rest is room for a
/// comment.
pub const MAX_KEY_FILE_BYTES: u64 = 4096;

/// Most bytes of a signature side-car: a genuine one is about 300.
pub const MAX_SIGNATURE_FILE_BYTES: u64 = 4096;

/// Why [`read_small_file`] refused.
enum SmallFileError {
    NotFound,
    Refused(SignatureError),
}

/// Reads a file that is small by nature (a key, a side-car), refusing directories, FIFOs and
/// devices (checked before opening: opening a FIFO would wait for a writer) and anything
/// larger than `limit` bytes (checked before reading, and again while reading, so a file
/// that grows, or `/dev/zero` behind a symlink, is never read into memory).
fn read_small_file(path: &Path, what: &'static str, limit: u64) -> Result<Vec<u8>, SmallFileError> {
    let shown = || shown_path(path);
    let not_a_file = |problem| {
        SmallFileError::Refused(SignatureError::NotAFile {
            what,
            path: shown(),
            problem,
        })
    };
    let too_large = || {
        SmallFileError::Refused(SignatureError::FileTooLarge {
            what,
            path: shown(),
            limit,
        })
    };
    let io_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::NotFound {
            SmallFileError::NotFound
        } else {
            SmallFileError::Refused(io_error("read", path, e))
        }
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return Err(not_a_file("is a directory"));
    }
    if !meta.is_file() {
        return Err(not_a_file(
            "is not a regular file (it is a FIFO, device or socket)",
        ));
    }
    if meta.len() > limit {
        return Err(too_large());
    }
    let file = fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    io::Read::take(file, limit + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > limit {
        return Err(too_large());
    }
    Ok(bytes)
}

fn read_key_file(path: &Path) -> Result<String, SignatureError> {
    let bytes = read_small_file(path, "key file", MAX_KEY_FILE_BYTES).map_err(|e| match e {
        SmallFileError::NotFound => SignatureError::KeyNotFound {
            path: shown_path(path),
        },
        SmallFileError::Refused(e) => e,
    })?;
    String::from_utf8(bytes).map_err(|_| SignatureError::MalformedKey {
        path: shown_path(path),
        kind: "Ed25519",
        problem: "it is not UTF-8 text".to_string(),
    })
}

/// Loads a private key written by [`generate_keypair`]. On Unix, refuses a key file that
/// other users can access (checked after its format, so a mistaken file is named as such).
pub fn load_signing_key(path: &Path) -> Result<PrivateKey, SignatureError> {
    let shown = shown_path(path);
    let text = read_key_file(path)?;
    let malformed = |problem: &str| SignatureError::MalformedKey {
        path: shown.clone(),
        kind: "private",
        problem: problem.to_string(),
    };
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    match lines.next() {
        Some(PRIVATE_KEY_HEADER) => {}
        Some(l) if l.starts_with(PUBLIC_KEY_PREFIX) => {
            return Err(malformed(
                "it is a public key; pass the private key file (without .pub)",
            ));
        }
        _ => {
            return Err(malformed(&format!(
                "its first line is not '{PRIVATE_KEY_HEADER}'"
            )));
        }
    }
    let Some(seed_hex) = lines.next() else {
        return Err(malformed("the key is missing after the first line"));
    };
    if lines.next().is_some() {
        return Err(malformed("it has more than two lines"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| io_error("read", path, e))?
            .permissions()
            .mode()
            & 0o7777;
        if mode & 0o077 != 0 {
            return Err(SignatureError::KeyTooOpen {
                path: shown_path(path),
                mode,
            });
        }
    }
    let mut seed: [u8; 32] = decode_hex_array(seed_hex).map_err(|p| malformed(&p))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    std::hint::black_box(&seed);
    Ok(PrivateKey(key))
}

/// Loads a public key file (`cloacina-ed25519-public-key <hex>`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, SignatureError> {
    let text = read_key_file(path)?;
    PublicKey::parse_file_text(&text, &shown_path(path))
}

/// Signs a SHA-256 digest (64 hex digits) with `key`.
pub fn sign_digest(sha256: &str, key: &PrivateKey) -> Result<Sidecar, String> {
    let digest: [u8; 32] = decode_hex_array(sha256)?;
    let signature = key.0.sign(&digest);
    Ok(Sidecar {
        algorithm: ALGORITHM.to_string(),
        sha256: hex::encode(digest),
        public_key: key.public_key().to_hex(),
        signature: hex::encode(signature.to_bytes()),
    })
}

/// Signs the archive's current SHA-256 with `key` and writes the side-car `<archive>.sig`
/// (replacing an older one). Returns the side-car's path.
pub fn sign_archive(archive: &Path, key: &PrivateKey) -> Result<PathBuf, SignatureError> {
    let sha256 = archive_sha256(archive)?;
    let sidecar = sign_digest(&sha256, key).map_err(|problem| SignatureError::Sign {
        archive: shown_path(archive),
        problem,
    })?;
    let sig = signature_path(archive);
    let mut tmp = sig.as_os_str().to_os_string();
    tmp.push(format!(".partial-{:016x}", rand::random::<u64>()));
    let tmp = PathBuf::from(tmp);
    fs::write(&tmp, sidecar.to_text()).map_err(|e| io_error("write", &tmp, e))?;
    if let Err(e) = fs::rename(&tmp, &sig) {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &sig, e));
    }
    Ok(sig)
}

fn archive_sha256(archive: &Path) -> Result<String, SignatureError> {
    let not_a_file = |problem| SignatureError::NotAFile {
        what: "archive",
        path: shown_path(archive),
        problem,
    };
    match fs::metadata(archive) {
        Ok(m) if m.is_file() => {}
        Ok(m) if m.is_dir() => return Err(not_a_file("is a directory")),
        Ok(_) => {
            return Err(not_a_file(
                "is not a regular file (it is a FIFO, device or socket)",
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SignatureError::ArchiveNotFound {
                archive: shown_path(archive),
            });
        }
        Err(e) => return Err(io_error("read", archive, e)),
    }
    sha256_file(archive).map_err(|e| SignatureError::Archive(Box::new(e)))
}

/// The text of side-car `sig`, read with the same bounds as verification (at most
/// [`MAX_SIGNATURE_FILE_BYTES`], regular files only); `None` when there is none.
pub fn read_sidecar_text(sig: &Path) -> Result<Option<String>, SignatureError> {
    match read_small_file(sig, "signature file", MAX_SIGNATURE_FILE_BYTES) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(SmallFileError::NotFound) => Ok(None),
        Err(SmallFileError::Refused(e)) => Err(e),
    }
}

/// Verifies `archive` against its side-car `<archive>.sig` and the `trusted` keys (any one
/// of them may have signed it).
pub fn verify_archive(
    archive: &Path,
    trusted: &[PublicKey],
) -> Result<VerifiedSignature, SignatureError> {
    verify_archive_with(archive, Some(trusted))
}

/// [`verify_archive`]; with `trusted` `None`, the side-car's own key is used: that proves the
/// side-car is intact and signs these bytes, not who made it.
fn verify_archive_with(
    archive: &Path,
    trusted: Option<&[PublicKey]>,
) -> Result<VerifiedSignature, SignatureError> {
    let shown = shown_path(archive);
    let actual = archive_sha256(archive)?;
    let sig = signature_path(archive);
    let sig_shown = shown_path(&sig);
    let malformed = |problem: &str| SignatureError::Malformed {
        archive: shown.clone(),
        sig: sig_shown.clone(),
        problem: problem.to_string(),
    };
    let bytes = match read_small_file(&sig, "signature file", MAX_SIGNATURE_FILE_BYTES) {
        Ok(b) => b,
        Err(SmallFileError::NotFound) => {
            return Err(SignatureError::Missing {
                archive: shown,
                sig: sig_shown,
            });
        }
        Err(SmallFileError::Refused(e)) => return Err(e),
    };
    let text = String::from_utf8(bytes).map_err(|_| malformed("it is not UTF-8 text"))?;
    let own_key;
    let trusted = match trusted {
        Some(keys) => keys,
        None => {
            let sidecar: Sidecar = serde_json::from_str(&text).map_err(|e| {
                malformed(&format!(
                    "not the expected JSON: {}",
                    super::printable(&e.to_string(), 200)
                ))
            })?;
            own_key = [PublicKey::from_hex(&sidecar.public_key)
                .map_err(|p| malformed(&format!("public_key: {p}")))?];
            &own_key[..]
        }
    };
    let public_key = verify_digest(&shown, &sig_shown, &actual, &text, trusted)?;
    Ok(VerifiedSignature {
        signature_path: sig,
        sha256: actual,
        public_key,
    })
}

/// Verifies side-car text against an archive whose SHA-256 is `actual_sha256`, for callers
/// that hold the archive in memory (an upload). `archive` and `sig` name them in messages.
/// Returns the trusted key that signed it.
pub fn verify_digest(
    archive: &str,
    sig: &str,
    actual_sha256: &str,
    sidecar_text: &str,
    trusted: &[PublicKey],
) -> Result<PublicKey, SignatureError> {
    let malformed = |problem: String| SignatureError::Malformed {
        archive: archive.to_string(),
        sig: sig.to_string(),
        problem,
    };
    let sidecar: Sidecar = serde_json::from_str(sidecar_text).map_err(|e| {
        malformed(format!(
            "not the expected JSON: {}",
            super::printable(&e.to_string(), 200)
        ))
    })?;
    if sidecar.algorithm != ALGORITHM {
        return Err(SignatureError::UnsupportedAlgorithm {
            archive: archive.to_string(),
            sig: sig.to_string(),
            algorithm: super::printable(&sidecar.algorithm, 40),
        });
    }
    let signed: [u8; 32] =
        decode_hex_array(&sidecar.sha256).map_err(|p| malformed(format!("sha256: {p}")))?;
    let signer: [u8; 32] =
        decode_hex_array(&sidecar.public_key).map_err(|p| malformed(format!("public_key: {p}")))?;
    let signature: [u8; 64] =
        decode_hex_array(&sidecar.signature).map_err(|p| malformed(format!("signature: {p}")))?;

    let signed_hex = hex::encode(signed);
    if !signed_hex.eq_ignore_ascii_case(actual_sha256.trim()) {
        return Err(SignatureError::Tampered {
            archive: archive.to_string(),
            sig: sig.to_string(),
            actual: actual_sha256.trim().to_ascii_lowercase(),
            signed: signed_hex,
        });
    }

    if trusted.is_empty() {
        return Err(SignatureError::NoTrustedKeys {
            archive: archive.to_string(),
        });
    }
    let Some(key) = trusted.iter().find(|k| k.0.to_bytes() == signer) else {
        return Err(SignatureError::UntrustedKey {
            archive: archive.to_string(),
            key: hex::encode(signer),
            trusted: trusted
                .iter()
                .map(PublicKey::to_hex)
                .collect::<Vec<_>>()
                .join(", "),
        });
    };

    let signature = Signature::from_bytes(&signature);
    key.0
        .verify_strict(&signed, &signature)
        .map_err(|_| SignatureError::BadSignature {
            archive: archive.to_string(),
            sig: sig.to_string(),
            key: key.to_hex(),
        })?;
    Ok(key.clone())
}

/// What a host demands of an archive's signature before it loads the archive (the daemon's
/// `require_signatures` and `trusted_keys`). Whatever the policy, a side-car that is present
/// must be valid: a damaged or forged `.sig` is never ignored.
#[derive(Debug, Clone, Default)]
pub struct SignaturePolicy {
    require: bool,
    trusted: Vec<PublicKey>,
}

impl SignaturePolicy {
    /// Signatures optional and no trusted keys: an unsigned archive loads; a signed one loads
    /// only if its side-car is well-formed, signs the archive's current bytes and verifies
    /// with the key it names.
    pub fn permissive() -> SignaturePolicy {
        SignaturePolicy::default()
    }

    /// `require`: an archive without a valid signature by one of `trusted` is refused. With
    /// `trusted` keys and `require` unset, an unsigned archive loads but a signed one must be
    /// signed by a trusted key.
    pub fn new(require: bool, trusted: Vec<PublicKey>) -> Result<SignaturePolicy, SignatureError> {
        if require && trusted.is_empty() {
            return Err(SignatureError::RequiredWithoutKeys);
        }
        Ok(SignaturePolicy { require, trusted })
    }

    /// The policy of `[daemon]` in config.toml: every trusted key file must exist and be a
    /// public key file as written by `cloacinactl package keygen`. `~` is expanded, and a
    /// relative path is taken relative to `base` (the Cloacina home, where config.toml is).
    pub fn from_daemon_config(
        config: &crate::config::DaemonConfig,
        base: &Path,
    ) -> Result<SignaturePolicy, SignatureError> {
        let mut keys = Vec::new();
        for file in &config.trusted_keys {
            let path = crate::config::expand_tilde(Path::new(file))
                .unwrap_or_else(|_| PathBuf::from(file));
            let path = base.join(path);
            let key = load_public_key(&path).map_err(|e| SignatureError::TrustedKey {
                path: shown_path(&path),
                cause: Box::new(e),
            })?;
            keys.push(key);
        }
        SignaturePolicy::new(config.require_signatures, keys)
    }

    pub fn requires_signatures(&self) -> bool {
        self.require
    }

    pub fn trusted_keys(&self) -> &[PublicKey] {
        &self.trusted
    }

    /// Checks `archive` against the policy: `Ok(Some(_))` when it carries a valid signature,
    /// `Ok(None)` when it is unsigned and that is allowed, else why it must not be loaded.
    /// The caller should make sure that the bytes it loads have the returned SHA-256.
    pub fn check(&self, archive: &Path) -> Result<Option<VerifiedSignature>, SignatureError> {
        let sig = signature_path(archive);
        match fs::symlink_metadata(&sig) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if self.require {
                    return Err(SignatureError::Required {
                        archive: shown_path(archive),
                        sig: shown_path(&sig),
                    });
                }
                return Ok(None);
            }
            Err(e) => return Err(io_error("read", &sig, e)),
        }
        let trusted = if self.trusted.is_empty() {
            None
        } else {
            Some(self.trusted.as_slice())
        };
        verify_archive_with(archive, trusted).map(Some)
    }
}

fn decode_hex_array<const N: usize>(text: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    if text.len() != N * 2 {
        return Err(format!(
            "expected {} hex digits, found {} characters",
            N * 2,
            text.len()
        ));
    }
    hex::decode_to_slice(text, &mut out).map_err(|_| "it is not hexadecimal".to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PrivateKey {
        PrivateKey(SigningKey::from_bytes(&[byte; 32]))
    }

    #[test]
    fn sign_and_verify_digest() {
        let k = key(7);
        let digest = "ab".repeat(32);
        let sidecar = sign_digest(&digest, &k).expect("sign");
        let text = sidecar.to_text();
        let trusted = [k.public_key()];
        let who = verify_digest("a.cloacina", "a.cloacina.sig", &digest, &text, &trusted)
            .expect("verifies");
        assert_eq!(who, k.public_key());

        // Another archive.
        let other = "cd".repeat(32);
        let e = verify_digest("a.cloacina", "a.cloacina.sig", &other, &text, &trusted)
            .expect_err("tampered");
        assert!(
            e.to_string()
                .starts_with("a.cloacina changed after it was signed: "),
            "{e}"
        );

        // An untrusted key.
        let stranger = key(9);
        let e = verify_digest(
            "a.cloacina",
            "a.cloacina.sig",
            &digest,
            &text,
            &[stranger.public_key()],
        )
        .expect_err("untrusted");
        assert_eq!(
            e.to_string(),
            format!(
                "a.cloacina is signed by key {}, which is not trusted (trusted: {}); verify it with the signer's public key, or sign it with a trusted key",
                k.public_key(),
                stranger.public_key()
            )
        );

        // A forged signature by the trusted key's name.
        let mut forged = sidecar.clone();
        forged.signature = hex::encode(stranger.0.sign(&[0xab; 32]).to_bytes());
        let e = verify_digest(
            "a.cloacina",
            "a.cloacina.sig",
            &digest,
            &forged.to_text(),
            &trusted,
        )
        .expect_err("forged");
        assert!(matches!(e, SignatureError::BadSignature { .. }), "{e}");

        let e = verify_digest("a.cloacina", "a.cloacina.sig", &digest, "{}", &trusted)
            .expect_err("malformed");
        assert!(
            e.to_string()
                .starts_with("signature file a.cloacina.sig is malformed (not the expected JSON: missing field `algorithm`"),
            "{e}"
        );
        let e = verify_digest("a.cloacina", "a.cloacina.sig", &digest, &text, &[])
            .expect_err("nobody trusted");
        assert!(matches!(e, SignatureError::NoTrustedKeys { .. }), "{e}");
    }

    #[test]
    fn errors_stay_small() {
        // clippy::result_large_err fires at 128 bytes.
        assert!(std::mem::size_of::<SignatureError>() < 128);
    }

    #[test]
    fn public_key_text() {
        let k = key(1);
        let text = k.public_key().to_file_text();
        assert_eq!(
            PublicKey::parse_file_text(&format!("{}  # comment\n", text.trim()), "k.pub")
                .map(|k| k.to_hex())
                .ok(),
            Some(k.public_key().to_hex())
        );
        let e = PublicKey::parse_file_text("hello", "k.pub").expect_err("bad");
        assert_eq!(
            e.to_string(),
            "k.pub is not a Cloacina public key file: it does not start with 'cloacina-ed25519-public-key'; create a key pair with 'cloacinactl package keygen KEYFILE'"
        );
        let e = PublicKey::parse_file_text("cloacina-ed25519-private-key\n00", "k")
            .expect_err("private");
        assert!(matches!(e, SignatureError::PrivateKeyGiven { .. }), "{e}");
        assert!(format!("{k:?}").starts_with("PrivateKey(public "));
    }
}
