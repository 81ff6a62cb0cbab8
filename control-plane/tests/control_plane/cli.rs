//! The `rackhand` CLI's local checks, which must fail before any request
//! reaches a control plane. The URL points at a closed loopback port, so a
//! request that slipped through would fail with "cannot reach" instead.

use std::path::Path;
use std::process::{Command, Output};

/// A loopback URL where nothing listens (port 1 needs root to bind).
const CLOSED_URL: &str = "http://127.0.0.1:1";

fn rackhand(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rackhand"))
        .args(["--url", CLOSED_URL, "--token", "rh-test-cli-token"])
        .args(args)
        .output()
        .expect("the rackhand binary runs")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Returns the error of a run that must fail before any request, checking
/// both: the exit status, and no "cannot reach" from a request that was
/// sent to the closed port.
fn local_failure(output: &Output) -> String {
    let message = stderr(output);
    assert!(!output.status.success(), "{message}");
    assert!(!message.contains("cannot reach"), "{message}");
    message
}

fn write(dir: &Path, name: &str, data: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).expect("the test file writes");
    path.to_str().expect("a UTF-8 path").to_string()
}

#[test]
fn create_upload_checks_missing_file_first() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let initrd = write(dir.path(), "initrd", b"initrd bytes");

    let output = rackhand(&[
        "image",
        "create",
        "--name",
        "nk2",
        "--upload",
        "--kernel",
        "/nonexistent/vmlinuz",
        "--initrd",
        &initrd,
    ]);

    let message = local_failure(&output);
    assert!(
        message.contains("cannot read --kernel /nonexistent/vmlinuz"),
        "{message}"
    );
}

#[test]
fn create_upload_checks_signature_size_first() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let kernel = write(dir.path(), "vmlinuz", &vec![7u8; 20_000]);
    let initrd = write(dir.path(), "initrd", b"initrd bytes");

    // The kernel itself passed as its signature, a likely slip.
    let output = rackhand(&[
        "image",
        "create",
        "--name",
        "nk3",
        "--upload",
        "--kernel",
        &kernel,
        "--initrd",
        &initrd,
        "--kernel-signature",
        &kernel,
    ]);

    let message = local_failure(&output);
    assert!(message.contains("--kernel-signature"), "{message}");
    assert!(message.contains("gpg --detach-sign"), "{message}");
}

#[test]
fn create_upload_checks_empty_file_first() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let kernel = write(dir.path(), "vmlinuz", b"");
    let initrd = write(dir.path(), "initrd", b"initrd bytes");

    let output = rackhand(&[
        "image", "create", "--name", "nk4", "--upload", "--kernel", &kernel, "--initrd", &initrd,
    ]);

    let message = stderr(&output);
    assert!(!output.status.success());
    assert!(message.contains("is empty"), "{message}");
}

#[test]
fn dot_only_name_is_rejected_locally() {
    let output = rackhand(&["template", "show", ".."]);

    let message = local_failure(&output);
    assert!(
        message.contains("at least one letter or digit"),
        "{message}"
    );
}

#[test]
fn private_ssh_key_file_stays_local() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let key = write(
        dir.path(),
        "id_ed25519",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    );

    let output = rackhand(&[
        "order",
        "create",
        "--product",
        "small",
        "--site",
        "dc1",
        "--email",
        "c@example.com",
        "--ssh-key-file",
        &key,
    ]);

    let message = local_failure(&output);
    assert!(message.contains("contains a private key"), "{message}");
}

fn order_create_with_key_file(key: &str) -> Output {
    rackhand(&[
        "order",
        "create",
        "--product",
        "small",
        "--site",
        "dc1",
        "--email",
        "c@example.com",
        "--ssh-key-file",
        key,
    ])
}

#[test]
fn private_key_in_pub_file_names_public_key() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let key = write(
        dir.path(),
        "key-private.pub",
        b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n",
    );

    let output = order_create_with_key_file(&key);

    let message = local_failure(&output);
    assert!(message.contains("contains a private key"), "{message}");
    assert!(message.contains("matching public key file"), "{message}");
    assert!(!message.contains(".pub.pub"), "{message}");
}

#[test]
fn ssh_key_file_without_keys_is_rejected_locally() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let cases = [
        ("empty.pub", &b""[..]),
        ("comments.pub", &b"# no key here\n\n  # nor here\n"[..]),
    ];
    for (name, data) in cases {
        let key = write(dir.path(), name, data);

        let output = order_create_with_key_file(&key);

        let message = stderr(&output);
        assert!(!output.status.success(), "{name}");
        assert!(message.contains(&key), "{message}");
        assert!(message.contains("contains no key"), "{message}");
        assert!(!message.contains("cannot reach"), "{message}");
    }
}

#[test]
fn oversized_template_is_rejected_locally() {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let size = rackhand_control_plane::install::MAX_TEMPLATE_BYTES + 1;
    let file = write(dir.path(), "big.yaml", &vec![b'#'; size]);

    let output = rackhand(&[
        "template",
        "put",
        "big",
        "--format",
        "cloud-config",
        "--file",
        &file,
    ]);

    let message = local_failure(&output);
    assert!(message.contains(&file), "{message}");
    assert!(message.contains(&format!("is {size} bytes")), "{message}");
    assert!(message.contains("at most 262144 bytes"), "{message}");
}
