//! Tests of the store against real files in a temporary folder.

use std::fs::{self, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::ImageStore;
use crate::digest::Sha256Digest;
use crate::error::ImageError;

const KERNEL: &[u8] = b"pretend this is a vmlinuz of some length, it only needs bytes";

fn sha256(data: &[u8]) -> Sha256Digest {
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    Sha256Digest(bytes)
}

fn write_source(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, data).expect("write source file");
    path
}

/// Makes a blob writable again, as an attacker with write access would.
fn make_writable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).expect("chmod blob");
}

async fn read_all(mut file: tokio::fs::File) -> Vec<u8> {
    let mut content = Vec::new();
    file.read_to_end(&mut content)
        .await
        .expect("read verified blob");
    content
}

struct Fixture {
    dir: tempfile::TempDir,
    sources: PathBuf,
    store: ImageStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("create temporary folder");
    let sources = dir.path().join("sources");
    fs::create_dir(&sources).expect("create sources folder");
    let store = ImageStore::open(&dir.path().join("store")).expect("open store");
    Fixture {
        dir,
        sources,
        store,
    }
}

#[test]
fn open_creates_folders() {
    let dir = tempfile::tempdir().expect("create temporary folder");
    let root = dir.path().join("images");
    ImageStore::open(&root).expect("open store");
    assert!(root.join("blobs").is_dir());
    assert!(root.join("quarantine").is_dir());
    assert!(root.join("tmp").is_dir());
}

#[tokio::test]
async fn import_then_verify_trusts_record() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);

    let stored = fx.store.import(&source).await.expect("import");
    assert_eq!(stored.digest, sha256(KERNEL));
    assert_eq!(stored.size, KERNEL.len() as u64);
    assert!(fx.store.contains(&stored.digest));

    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(!verified.rehashed, "a fresh import must not need a re-hash");
    assert_eq!(verified.size, KERNEL.len() as u64);
    assert_eq!(verified.digest, stored.digest);
    assert_eq!(read_all(verified.file).await, KERNEL);
}

#[tokio::test]
async fn imported_blob_is_read_only() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let mode = fs::metadata(fx.store.blob_path(&stored.digest))
        .expect("stat blob")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);
}

#[tokio::test]
async fn reimport_same_content_keeps_blob() {
    let fx = fixture();
    let first_source = write_source(&fx.sources, "a", KERNEL);
    let second_source = write_source(&fx.sources, "b", KERNEL);

    let first = fx.store.import(&first_source).await.expect("first import");
    let blob = fx.store.blob_path(&first.digest);
    let inode = fs::metadata(&blob).expect("stat blob").ino();

    let second = fx
        .store
        .import(&second_source)
        .await
        .expect("second import");
    assert_eq!(second, first);
    assert_eq!(fs::metadata(&blob).expect("stat blob").ino(), inode);

    let tmp = fx.dir.path().join("store").join("tmp");
    let leftovers = fs::read_dir(tmp).expect("list tmp").count();
    assert_eq!(leftovers, 0, "the second copy must be removed from tmp/");
}

#[tokio::test]
async fn tampered_blob_with_restored_mtime_is_quarantined() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let blob = fx.store.blob_path(&stored.digest);
    let before = fs::metadata(&blob).expect("stat blob");

    // Same size, different bytes, mtime put back: only ctime betrays it.
    let mut evil = KERNEL.to_vec();
    evil[0] ^= 0xff;
    make_writable(&blob);
    let mut file = OpenOptions::new()
        .write(true)
        .open(&blob)
        .expect("open blob for writing");
    file.seek(SeekFrom::Start(0)).expect("seek");
    file.write_all(&evil).expect("overwrite blob");
    file.set_modified(before.modified().expect("mtime"))
        .expect("restore mtime");
    drop(file);
    let after = fs::metadata(&blob).expect("stat blob");
    assert_eq!(after.len(), before.len());
    assert_eq!(after.modified().ok(), before.modified().ok());

    let error = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect_err("tampered blob must fail");
    let ImageError::DigestMismatch {
        expected,
        actual,
        quarantined,
        ..
    } = &error
    else {
        panic!("expected DigestMismatch, got {error:?}");
    };
    assert_eq!(*expected, stored.digest);
    assert_eq!(*actual, sha256(&evil));
    let message = error.to_string();
    assert!(message.contains(&stored.digest.to_string()), "{message}");
    assert!(message.contains(&sha256(&evil).to_string()), "{message}");

    let quarantined = quarantined.as_ref().expect("blob moved to quarantine");
    assert!(quarantined.is_file());
    assert!(!blob.exists());
    assert!(!fx.store.contains(&stored.digest));

    let again = fx.store.open_verified(&stored.digest).await;
    assert!(
        matches!(again, Err(ImageError::NotFound { digest }) if digest == stored.digest),
        "{again:?}"
    );
}

#[tokio::test]
async fn identical_copy_renamed_over_blob_is_rehashed() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let blob = fx.store.blob_path(&stored.digest);
    let old_inode = fs::metadata(&blob).expect("stat blob").ino();

    let copy = write_source(&fx.sources, "copy", KERNEL);
    fs::rename(&copy, &blob).expect("rename copy over blob");
    assert_ne!(fs::metadata(&blob).expect("stat blob").ino(), old_inode);

    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(verified.rehashed);
    assert_eq!(read_all(verified.file).await, KERNEL);

    // Once the change is older than a clock tick, the rewritten record is
    // trusted again; the first re-hash may come too soon after the rename.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    let settled = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(!settled.rehashed);
}

#[tokio::test]
async fn truncated_blob_is_quarantined() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let blob = fx.store.blob_path(&stored.digest);

    make_writable(&blob);
    OpenOptions::new()
        .write(true)
        .open(&blob)
        .and_then(|file| file.set_len(KERNEL.len() as u64 / 2))
        .expect("truncate blob");

    let error = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect_err("truncated blob must fail");
    let ImageError::DigestMismatch { actual, .. } = &error else {
        panic!("expected DigestMismatch, got {error:?}");
    };
    assert_eq!(*actual, sha256(&KERNEL[..KERNEL.len() / 2]));
    assert!(!blob.exists());
}

#[tokio::test]
async fn missing_record_is_rebuilt_by_rehash() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let record = fx.store.layout.record_path(&stored.digest);
    fs::remove_file(&record).expect("remove record");

    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(verified.rehashed);
    assert!(record.is_file());
}

#[tokio::test]
async fn corrupt_record_is_rebuilt_by_rehash() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let record = fx.store.layout.record_path(&stored.digest);
    fs::write(&record, b"{ not json").expect("corrupt record");

    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(verified.rehashed);
}

#[tokio::test]
async fn missing_blob_is_not_found() {
    let fx = fixture();
    let digest = sha256(b"never imported");
    let result = fx.store.open_verified(&digest).await;
    assert!(
        matches!(result, Err(ImageError::NotFound { digest: d }) if d == digest),
        "{result:?}"
    );
    assert!(!fx.store.contains(&digest));
}

#[tokio::test]
async fn import_replaces_corrupt_blob() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");
    let blob = fx.store.blob_path(&stored.digest);
    make_writable(&blob);
    fs::write(&blob, b"garbage").expect("corrupt blob");

    fx.store.import(&source).await.expect("import again");
    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert_eq!(read_all(verified.file).await, KERNEL);
}

#[tokio::test]
async fn import_of_directory_is_rejected() {
    let fx = fixture();
    let result = fx.store.import(&fx.sources).await;
    assert!(
        matches!(&result, Err(ImageError::NotAFile { path }) if *path == fx.sources),
        "{result:?}"
    );
}

#[tokio::test]
async fn import_of_missing_file_names_path() {
    let fx = fixture();
    let missing = fx.sources.join("nope");
    let error = fx.store.import(&missing).await.expect_err("missing source");
    assert!(error.to_string().contains("nope"), "{error}");
}

#[tokio::test]
async fn large_blob_spanning_many_reads_verifies() {
    let fx = fixture();
    let data: Vec<u8> = (0..3 * crate::digest::HASH_BUFFER_SIZE + 5)
        .map(|i| (i % 251) as u8)
        .collect();
    let source = write_source(&fx.sources, "initrd", &data);
    let stored = fx.store.import(&source).await.expect("import");
    assert_eq!(stored.digest, sha256(&data));

    fs::remove_file(fx.store.layout.record_path(&stored.digest)).expect("remove record");
    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(verified.rehashed);
    assert_eq!(read_all(verified.file).await, data);
}

#[tokio::test]
async fn unwritable_record_still_verifies() {
    let fx = fixture();
    let source = write_source(&fx.sources, "vmlinuz", KERNEL);
    let stored = fx.store.import(&source).await.expect("import");

    // A folder in place of the record: it cannot be read or replaced.
    let record = fx.store.layout.record_path(&stored.digest);
    fs::remove_file(&record).expect("remove record");
    fs::create_dir(&record).expect("block the record path");

    let verified = fx
        .store
        .open_verified(&stored.digest)
        .await
        .expect("verify");
    assert!(verified.rehashed);
    assert_eq!(read_all(verified.file).await, KERNEL);
}

#[tokio::test]
async fn upload_in_pieces_stores_blob_under_its_hash() {
    let fixture = fixture();
    let mut upload = fixture.store.begin_upload().expect("begin upload");
    upload.write(&KERNEL[..10]).expect("write first piece");
    upload.write(&KERNEL[10..]).expect("write second piece");
    assert_eq!(upload.digest(), sha256(KERNEL));

    let stored = upload.commit().await.expect("commit upload");
    assert_eq!(stored.digest, sha256(KERNEL));
    assert_eq!(stored.size, KERNEL.len() as u64);
    let blob = fixture
        .store
        .open_verified(&stored.digest)
        .await
        .expect("uploaded blob verifies");
    assert_eq!(read_all(blob.file).await, KERNEL);
}

#[tokio::test]
async fn dropped_upload_leaves_no_file() {
    let fixture = fixture();
    let mut upload = fixture.store.begin_upload().expect("begin upload");
    upload.write(KERNEL).expect("write");
    drop(upload);

    let tmp = fixture.dir.path().join("store").join("tmp");
    let left: Vec<_> = fs::read_dir(&tmp).expect("list tmp").collect();
    assert!(left.is_empty(), "tmp/ still holds {left:?}");
    assert!(!fixture.store.contains(&sha256(KERNEL)));
}
