//! Mapping a requested file name to a file inside the TFTP root.
//!
//! Rules, in order: one leading `/` is stripped, because PXE clients often
//! send `/undionly.kpxe`. What remains must be a relative path without `..`
//! components or NUL bytes. The joined path is canonicalized, which resolves
//! symlinks, and must still lie inside the canonical root and be a regular
//! file. The file is opened with `O_NOFOLLOW`, so a symlink swapped in for
//! the last component after the check is not followed.
//!
//! NOTE: a directory component swapped for a symlink between the check and
//! the open is still followed. Only a user who can write into the root can do
//! that, so the root must be writable by the site agent's operator alone.

use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::OFlag;

use super::packet::ErrorCode;

/// Reason a file name was not served, with the TFTP error sent for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Rejection {
    #[error("file not found")]
    NotFound,
    #[error("{0}")]
    AccessViolation(&'static str),
}

impl Rejection {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound => ErrorCode::FileNotFound,
            Self::AccessViolation(_) => ErrorCode::AccessViolation,
        }
    }
}

/// An opened file inside the root.
#[derive(Debug)]
pub(crate) struct ServedFile {
    pub(crate) path: PathBuf,
    pub(crate) file: File,
    pub(crate) size: u64,
}

/// Resolves `requested` against `root`, which must be canonical, and opens
/// the file. Blocks on file system calls.
pub(crate) fn open_in_root(root: &Path, requested: &[u8]) -> Result<ServedFile, Rejection> {
    let path = resolve(root, requested)?;

    let file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(&path)
        .map_err(|error| io_rejection(&error))?;
    let metadata = file.metadata().map_err(|error| io_rejection(&error))?;
    if !metadata.is_file() {
        return Err(Rejection::AccessViolation("not a regular file"));
    }

    Ok(ServedFile {
        path,
        file,
        size: metadata.len(),
    })
}

/// Returns the canonical path of `requested` inside `root`.
pub(crate) fn resolve(root: &Path, requested: &[u8]) -> Result<PathBuf, Rejection> {
    if requested.contains(&0) {
        return Err(Rejection::AccessViolation("file name contains NUL"));
    }
    let relative = requested.strip_prefix(b"/").unwrap_or(requested);
    if relative.is_empty() {
        return Err(Rejection::AccessViolation("empty file name"));
    }
    if relative.starts_with(b"/") {
        return Err(Rejection::AccessViolation("absolute paths are not allowed"));
    }

    let relative = Path::new(OsStr::from_bytes(relative));
    for component in relative.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => {
                return Err(Rejection::AccessViolation(
                    "'..' is not allowed in file names",
                ));
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(Rejection::AccessViolation("absolute paths are not allowed"));
            }
        }
    }

    let canonical = root
        .join(relative)
        .canonicalize()
        .map_err(|error| io_rejection(&error))?;
    if !canonical.starts_with(root) {
        return Err(Rejection::AccessViolation(
            "path leads outside the TFTP root",
        ));
    }
    Ok(canonical)
}

fn io_rejection(error: &io::Error) -> Rejection {
    match error.kind() {
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory => Rejection::NotFound,
        io::ErrorKind::PermissionDenied => Rejection::AccessViolation("permission denied"),
        // ELOOP from O_NOFOLLOW: the last component became a symlink.
        _ if error.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            Rejection::AccessViolation("path leads outside the TFTP root")
        }
        _ => Rejection::AccessViolation("file cannot be opened"),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// Creates a root with `boot/undionly.kpxe`, a secret file beside the
    /// root, and symlinks pointing inside and outside.
    fn fixture() -> (tempfile::TempDir, PathBuf) {
        let directory = tempfile::tempdir().expect("temporary directory");
        let root = directory.path().join("root");
        fs::create_dir_all(root.join("boot")).expect("create root");
        fs::write(root.join("boot/undionly.kpxe"), b"ipxe").expect("write boot file");
        fs::write(directory.path().join("secret"), b"secret").expect("write secret");
        symlink("boot/undionly.kpxe", root.join("inside-link")).expect("symlink");
        symlink(directory.path().join("secret"), root.join("outside-link")).expect("symlink");
        symlink(directory.path(), root.join("outside-dir")).expect("symlink");
        let root = root.canonicalize().expect("canonical root");
        (directory, root)
    }

    #[test]
    fn plain_name_resolves() {
        let (_directory, root) = fixture();

        let path = resolve(&root, b"boot/undionly.kpxe").expect("file inside root");

        assert_eq!(path, root.join("boot/undionly.kpxe"));
    }

    #[test]
    fn one_leading_slash_is_stripped() {
        let (_directory, root) = fixture();

        let path = resolve(&root, b"/boot/undionly.kpxe").expect("file inside root");

        assert_eq!(path, root.join("boot/undionly.kpxe"));
    }

    #[test]
    fn double_leading_slash_is_rejected() {
        let (_directory, root) = fixture();

        let result = resolve(&root, b"//etc/passwd");

        assert!(
            matches!(result, Err(Rejection::AccessViolation(_))),
            "{result:?}"
        );
    }

    #[test]
    fn parent_components_are_rejected() {
        let (_directory, root) = fixture();

        for name in [
            &b"../secret"[..],
            b"boot/../../secret",
            b"boot/..",
            b"/../secret",
        ] {
            let result = resolve(&root, name);
            assert!(
                matches!(result, Err(Rejection::AccessViolation(_))),
                "{}: {result:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn nul_byte_is_rejected() {
        let (_directory, root) = fixture();

        let result = resolve(&root, b"boot/undionly.kpxe\0.txt");

        assert!(
            matches!(result, Err(Rejection::AccessViolation(_))),
            "{result:?}"
        );
    }

    #[test]
    fn empty_name_is_rejected() {
        let (_directory, root) = fixture();

        assert!(matches!(
            resolve(&root, b""),
            Err(Rejection::AccessViolation(_))
        ));
        assert!(matches!(
            resolve(&root, b"/"),
            Err(Rejection::AccessViolation(_))
        ));
    }

    #[test]
    fn symlink_inside_root_is_served() {
        let (_directory, root) = fixture();

        let served = open_in_root(&root, b"inside-link").expect("link target inside root");

        assert_eq!(served.size, 4);
    }

    #[test]
    fn symlink_outside_root_is_rejected() {
        let (_directory, root) = fixture();

        for name in [&b"outside-link"[..], b"outside-dir/secret"] {
            let result = resolve(&root, name);
            assert_eq!(
                result,
                Err(Rejection::AccessViolation(
                    "path leads outside the TFTP root"
                )),
                "{}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn missing_file_is_not_found() {
        let (_directory, root) = fixture();

        assert_eq!(resolve(&root, b"absent.efi"), Err(Rejection::NotFound));
        assert_eq!(
            resolve(&root, b"boot/undionly.kpxe/child"),
            Err(Rejection::NotFound)
        );
    }

    #[test]
    fn directory_is_not_served() {
        let (_directory, root) = fixture();

        let result = open_in_root(&root, b"boot");

        assert_eq!(
            result.map(|served| served.size),
            Err(Rejection::AccessViolation("not a regular file"))
        );
    }

    #[test]
    fn rejection_codes_match_rfc_1350() {
        assert_eq!(Rejection::NotFound.code() as u16, 1);
        assert_eq!(Rejection::AccessViolation("x").code() as u16, 2);
    }
}
