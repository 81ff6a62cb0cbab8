//! Detached OpenPGP signatures of uploaded image files, checked by `gpgv`
//! against the keyring in `images.signature_keyring`.
//!
//! A detached signature signs the file's bytes, so it can be checked only
//! where the bytes are: the control plane checks it while an upload sits in
//! the store's temporary folder, before the file is stored. Files that are
//! registered by digest or upstream URL never pass through the control
//! plane, so they carry no signature (and `images.require_signatures`
//! rejects them).
//!
//! `gpgv` reports through `--status-fd` lines (`[GNUPG:] VALIDSIG …`,
//! `BADSIG`, `ERRSIG`, `NO_PUBKEY`), documented in GnuPG's `doc/DETAILS`;
//! only a `VALIDSIG` line counts as success, whatever the exit code.

use std::ffi::OsStr;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Maximum duration of one check: `gpgv` hashes the whole file, and a 64 GiB
/// disk image at a few hundred MB/s takes minutes.
const GPGV_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A signature that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoodSignature {
    /// Fingerprint of the signer's primary key, upper-case hex as GnuPG
    /// prints it.
    pub fingerprint: String,
}

/// A signature that did not verify, or a check that could not run.
#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error(
        "no key in the keyring {keyring} made this signature (key id {key_id}); add the signer's public key to the keyring, or sign with a key that is in it"
    )]
    UnknownKey { key_id: String, keyring: PathBuf },
    #[error(
        "bad signature by key {key_id}: the file is not the one that was signed; sign this exact file again"
    )]
    Bad { key_id: String },
    #[error(
        "the signature is not a detached OpenPGP signature that gpgv can read ({detail}); create one with `gpg --detach-sign FILE`"
    )]
    Unreadable { detail: String },
    #[error("cannot run {program}; install gnupg's gpgv or set images.gpgv")]
    Run {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {} s", GPGV_TIMEOUT.as_secs())]
    TimedOut { program: PathBuf },
    #[error("cannot write the signature to a temporary file")]
    TempFile(#[source] std::io::Error),
}

/// A signature setup that cannot work, found before the first upload.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(
        "images.signature_keyring {keyring} is not a file; export the signing keys with `gpg --export KEYID > {keyring}`"
    )]
    KeyringMissing { keyring: PathBuf },
    #[error(
        "cannot read images.signature_keyring {keyring}; make it readable by the control plane's user"
    )]
    KeyringUnreadable {
        keyring: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "images.signature_keyring {keyring} is ASCII-armored (it starts with -----BEGIN PGP), which gpgv cannot read as a keyring; convert it with `gpg --dearmor < {keyring} > {keyring}.gpg` and point signature_keyring at the new file, or export the keys with `gpg --export KEYID` without --armor"
    )]
    KeyringArmored { keyring: PathBuf },
    #[error(
        "images.gpgv {program} cannot be run: {reason}; install the gpgv package (`apt-get install gpgv`) or set images.gpgv to the path of gpgv"
    )]
    GpgvMissing { program: PathBuf, reason: String },
}

/// Checks that signatures can be checked at all: the keyring is a readable
/// binary keyring and `gpgv` is an executable file (looked up on `PATH`
/// when `gpgv` is a bare name, as the process spawn does).
pub fn check_setup(gpgv: &Path, keyring: &Path) -> Result<(), SetupError> {
    if !keyring.is_file() {
        return Err(SetupError::KeyringMissing {
            keyring: keyring.to_path_buf(),
        });
    }
    let mut start = [0u8; 16];
    let read = std::fs::File::open(keyring)
        .and_then(|mut file| std::io::Read::read(&mut file, &mut start))
        .map_err(|source| SetupError::KeyringUnreadable {
            keyring: keyring.to_path_buf(),
            source,
        })?;
    if start[..read].starts_with(ARMOR_START) {
        return Err(SetupError::KeyringArmored {
            keyring: keyring.to_path_buf(),
        });
    }
    find_program(gpgv, std::env::var_os("PATH").as_deref())
        .map(|_| ())
        .map_err(|reason| SetupError::GpgvMissing {
            program: gpgv.to_path_buf(),
            reason,
        })
}

/// The first bytes of an ASCII-armored OpenPGP block, as `gpg --armor` writes it.
const ARMOR_START: &[u8] = b"-----BEGIN PGP";

/// Returns the executable that running `program` would start: `program`
/// itself when it contains a `/`, else the first match in `path_var`.
/// Returns the reason when there is none.
fn find_program(program: &Path, path_var: Option<&OsStr>) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let executable = |candidate: &Path| {
        std::fs::metadata(candidate)
            .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
    };
    if program.components().count() > 1 {
        return if executable(program) {
            Ok(program.to_path_buf())
        } else {
            Err("no executable file at that path".to_string())
        };
    }
    let Some(path_var) = path_var else {
        return Err("PATH is not set, and the name has no folder".to_string());
    };
    std::env::split_paths(path_var)
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate))
        .ok_or_else(|| format!("not found in PATH ({})", path_var.to_string_lossy()))
}

/// Checks `signature` (binary or ASCII-armored) over the file at `file`
/// against `keyring`, running `gpgv`.
pub async fn verify(
    gpgv: &Path,
    keyring: &Path,
    signature: &[u8],
    file: &Path,
) -> Result<GoodSignature, SignatureError> {
    let mut signature_file = tempfile::Builder::new()
        .prefix("rackhand-signature-")
        .tempfile()
        .map_err(SignatureError::TempFile)?;
    signature_file
        .write_all(signature)
        .map_err(SignatureError::TempFile)?;
    // gpgv reads nothing from its home folder when given --keyring, but
    // would create or lock files there; an empty private folder keeps the
    // service user's home out of it.
    let home = tempfile::tempdir().map_err(SignatureError::TempFile)?;

    let child = tokio::process::Command::new(gpgv)
        .arg("--homedir")
        .arg(home.path())
        .arg("--status-fd")
        .arg("1")
        .arg("--keyring")
        .arg(keyring)
        .arg(signature_file.path())
        .arg(file)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(GPGV_TIMEOUT, child).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(SignatureError::Run {
                program: gpgv.to_path_buf(),
                source,
            });
        }
        Err(_) => {
            return Err(SignatureError::TimedOut {
                program: gpgv.to_path_buf(),
            });
        }
    };
    let status = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    interpret(&status, &stderr, keyring)
}

/// Reads `gpgv`'s status lines into the outcome.
fn interpret(status: &str, stderr: &str, keyring: &Path) -> Result<GoodSignature, SignatureError> {
    let mut key_id = None;
    for line in status.lines() {
        let mut fields = line.split_whitespace();
        if fields.next() != Some("[GNUPG:]") {
            continue;
        }
        let keyword = fields.next().unwrap_or_default();
        let rest: Vec<&str> = fields.collect();
        match keyword {
            // VALIDSIG <fpr> <date> <timestamp> <expire> <version> <reserved>
            // <pubkey-algo> <hash-algo> <sig-class> [<primary-key-fpr>]
            "VALIDSIG" => {
                let fingerprint = rest.get(9).or(rest.first()).copied().unwrap_or_default();
                return Ok(GoodSignature {
                    fingerprint: fingerprint.to_string(),
                });
            }
            "BADSIG" => {
                return Err(SignatureError::Bad {
                    key_id: rest.first().copied().unwrap_or("unknown").to_string(),
                });
            }
            "NO_PUBKEY" | "ERRSIG" => {
                key_id = rest.first().map(|id| id.to_string());
            }
            _ => {}
        }
    }
    match key_id {
        Some(key_id) if status.contains("NO_PUBKEY") => Err(SignatureError::UnknownKey {
            key_id,
            keyring: keyring.to_path_buf(),
        }),
        _ => Err(SignatureError::Unreadable {
            detail: last_line(stderr),
        }),
    }
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("gpgv printed no reason")
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{SignatureError, find_program, interpret};

    const KEYRING: &str = "/etc/rackhand/keyring.gpg";

    #[test]
    fn validsig_yields_primary_fingerprint() {
        let status = "[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG 1122334455667788 Signer\n[GNUPG:] VALIDSIG AAAA 2026-12-04 1796000000 0 4 0 22 10 00 BBBB\n";
        let good = interpret(status, "", Path::new(KEYRING)).expect("a VALIDSIG line is good");
        assert_eq!(good.fingerprint, "BBBB");
    }

    #[test]
    fn badsig_names_key_id() {
        let status = "[GNUPG:] NEWSIG\n[GNUPG:] BADSIG 1122334455667788 Signer\n";
        let error = interpret(status, "", Path::new(KEYRING)).expect_err("BADSIG is bad");
        assert!(
            matches!(&error, SignatureError::Bad { key_id } if key_id == "1122334455667788"),
            "{error:?}"
        );
    }

    #[test]
    fn missing_key_names_key_id_and_keyring() {
        let status = "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 99AA99AA99AA99AA 22 10 00 1796000000 9 -\n[GNUPG:] NO_PUBKEY 99AA99AA99AA99AA\n";
        let error = interpret(status, "", Path::new(KEYRING)).expect_err("no key");
        let message = error.to_string();
        assert!(message.contains("99AA99AA99AA99AA"), "{message}");
        assert!(message.contains(KEYRING), "{message}");
    }

    #[test]
    fn no_status_is_unreadable_with_gpgv_reason() {
        let error = interpret(
            "",
            "gpgv: no valid OpenPGP data found.\n",
            Path::new(KEYRING),
        )
        .expect_err("no status");
        assert!(
            error.to_string().contains("no valid OpenPGP data found"),
            "{error}"
        );
    }

    #[test]
    fn bare_program_is_found_on_path() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let program = dir.path().join("gpgv");
        std::fs::write(&program, "#!/bin/sh\n").expect("the file writes");
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("the mode changes");

        let found = find_program(Path::new("gpgv"), Some(dir.path().as_os_str()));

        assert_eq!(found, Ok(program));
    }

    #[test]
    fn missing_program_names_searched_path() {
        let dir = tempfile::tempdir().expect("a temporary folder");

        let error = find_program(Path::new("gpgv"), Some(dir.path().as_os_str()))
            .expect_err("the folder is empty");

        assert!(error.contains("not found in PATH"), "{error}");
    }

    #[test]
    fn program_without_execute_bit_is_missing() {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let program = dir.path().join("gpgv");
        std::fs::write(&program, "data").expect("the file writes");

        let found = find_program(&program, None);

        assert!(found.is_err(), "{found:?}");
    }
}
