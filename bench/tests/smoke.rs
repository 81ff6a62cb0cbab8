//! `bench/run --smoke` once, as `tests/run` runs it: every part measures
//! Rackhand and its reference, and the report has a ratio for each case.
//! The DHCP part also checks that a lease acknowledged before kill -9 of
//! the server is still there after it.
//! The figures themselves are not checked, because a loaded machine makes
//! any threshold flaky.

use std::path::Path;
use std::process::Command;

/// The table rows that must carry a numeric ratio.
const CASES: [&str; 11] = [
    "| sha256 of the image | openssl |",
    "| sha256 of the image | sha256sum |",
    "| whole file, 1 conn | nginx |",
    "| whole file, 8 conn | nginx |",
    "| whole file, 32 conn | nginx |",
    "| 4 MiB ranges, 32 conn | nginx |",
    "| lockstep, curl blksize 1468 | tftpd-hpa |",
    "| atftp windowsize 16 | atftpd |",
    "| highest rate held (< 1 % loss) | kea |",
    "| highest rate held (< 1 % loss) | dnsmasq |",
    "| CPU µs per lease at 200/s | kea |",
];

/// Returns the ratio column of a row: the cell written as `**<ratio>**`.
fn ratio_of(row: &str) -> Option<f64> {
    let start = row.find("| **")? + 4;
    let end = start + row[start..].find("**")?;
    row[start..end].parse().ok()
}

#[test]
fn smoke_run_reports_every_ratio() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate sits in the workspace root");
    let dir = tempfile::tempdir().expect("temporary folder");
    let report_path = dir.path().join("BENCHMARKS.md");

    let status = Command::new(root.join("bench/run"))
        .arg("--smoke")
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_rackhand-bench"))
        .arg("--out")
        .arg(&report_path)
        .status()
        .expect("bench/run starts (this test needs root)");
    assert!(status.success(), "bench/run --smoke failed: {status}");

    let report = std::fs::read_to_string(&report_path).expect("the report was written");
    for case in CASES {
        let row = report
            .lines()
            .find(|line| line.starts_with(case))
            .unwrap_or_else(|| panic!("no row {case:?} in:\n{report}"));
        let ratio = ratio_of(row);
        assert!(
            ratio.is_some_and(|ratio| ratio > 0.0),
            "row without a positive ratio: {row}"
        );
    }
    let memory = report
        .lines()
        .find_map(|line| line.strip_prefix("| 10,000 nodes, 100 images: peak RSS (VmHWM) | "))
        .and_then(|cell| cell.split_whitespace().next())
        .and_then(|mib| mib.parse::<f64>().ok());
    assert!(
        memory.is_some_and(|mib| mib > 0.0),
        "no memory figure in:\n{report}"
    );
}
