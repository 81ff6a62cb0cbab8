//! Server tests over loopback with a minimal client written here.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use super::packet::{self, Packet};
use super::{TftpError, TftpOptions, TftpServer};
use crate::netns::{SocketFactory, UdpOptions};

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);

struct TestServer {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), TftpError>>,
    _root: tempfile::TempDir,
}

impl TestServer {
    async fn stop(self) {
        self.shutdown.cancel();
        let result = timeout(WAIT, self.task)
            .await
            .expect("server stops within the wait")
            .expect("server task does not panic");
        assert!(result.is_ok(), "{result:?}");
    }
}

/// Deterministic content that differs in every block.
fn content(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i % 251) as u8 ^ (i / 251) as u8)
        .collect()
}

fn start(files: &[(&str, Vec<u8>)], options: TftpOptions) -> TestServer {
    let root = tempfile::tempdir().expect("temporary directory");
    for (name, bytes) in files {
        let path = root.path().join(name);
        std::fs::create_dir_all(path.parent().expect("file has a parent")).expect("create dirs");
        std::fs::write(&path, bytes).expect("write test file");
    }
    std::fs::write(
        root.path()
            .parent()
            .expect("tmp dir")
            .join("rh-pxe-outside"),
        b"x",
    )
    .ok();

    let factory = SocketFactory::host();
    let socket = factory
        .udp(SocketAddr::from(([127, 0, 0, 1], 0)), UdpOptions::default())
        .expect("loopback socket");
    let address = socket.local_addr().expect("bound socket");
    let server =
        TftpServer::new(root.path().to_path_buf(), socket, factory, options).expect("valid server");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.run(shutdown.clone()));

    TestServer {
        address,
        shutdown,
        task,
        _root: root,
    }
}

/// What a fetch saw.
#[derive(Debug, Default)]
struct Fetched {
    bytes: Vec<u8>,
    oack: Option<Vec<u8>>,
    data_packets: usize,
    server_port: u16,
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.expect("client socket")
}

async fn receive(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buffer = vec![0u8; 70_000];
    let (len, from) = timeout(WAIT, socket.recv_from(&mut buffer))
        .await
        .expect("server replies within the wait")
        .expect("receive works");
    buffer.truncate(len);
    (buffer, from)
}

/// Fetches `name` the way a windowed RFC 7440 client does: it acknowledges
/// the last block of each window and the final short block. Returns the
/// error code and message if the server sends an ERROR.
async fn fetch(
    server: SocketAddr,
    name: &str,
    options: &[(&str, &str)],
) -> Result<Fetched, (u16, String)> {
    let socket = client().await;
    socket
        .send_to(&packet::read_request(name, "octet", options), server)
        .await
        .expect("send RRQ");

    let lookup = |key: &str| {
        options
            .iter()
            .find(|(name, _)| *name == key)
            .map(|(_, value)| value.parse::<usize>().expect("numeric option"))
    };
    let mut blksize = 512;
    let mut window = 1;
    let mut fetched = Fetched::default();
    let mut expected: u64 = 1;
    let mut in_window = 0;
    // Bounded by the file sizes used in these tests.
    for _ in 0..2_000_000 {
        let (bytes, from) = receive(&socket).await;
        fetched.server_port = from.port();
        match packet::parse(&bytes).expect("server sends valid packets") {
            Packet::OptionAck => {
                blksize =
                    lookup("blksize").map_or(512, |_| oack_value(&bytes, "blksize").unwrap_or(512));
                window = oack_value(&bytes, "windowsize").unwrap_or(1);
                fetched.oack = Some(bytes.clone());
                socket
                    .send_to(&packet::ack(0), from)
                    .await
                    .expect("send ACK 0");
            }
            Packet::Data { block, len } => {
                fetched.data_packets += 1;
                if block != expected as u16 {
                    continue;
                }
                fetched.bytes.extend_from_slice(&bytes[4..]);
                in_window += 1;
                let last = len < blksize;
                if last || in_window == window {
                    socket
                        .send_to(&packet::ack(block), from)
                        .await
                        .expect("send ACK");
                    in_window = 0;
                }
                expected += 1;
                if last {
                    return Ok(fetched);
                }
            }
            Packet::Error { code, message } => return Err((code, message)),
            other => panic!("unexpected packet {other:?}"),
        }
    }
    panic!("transfer did not end");
}

fn oack_value(oack: &[u8], name: &str) -> Option<usize> {
    let fields: Vec<&[u8]> = oack[2..].split(|byte| *byte == 0).collect();
    fields
        .chunks(2)
        .find(|pair| pair[0] == name.as_bytes())
        .map(|pair| {
            std::str::from_utf8(pair[1])
                .expect("ASCII")
                .parse()
                .expect("number")
        })
}

async fn request_error(server: SocketAddr, request: &[u8]) -> (u16, String) {
    let socket = client().await;
    socket.send_to(request, server).await.expect("send request");
    let (bytes, _) = receive(&socket).await;
    match packet::parse(&bytes) {
        Ok(Packet::Error { code, message }) => (code, message),
        other => panic!("expected ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn lockstep_transfer_without_options() {
    let file = content(2000);
    let server = start(&[("undionly.kpxe", file.clone())], TftpOptions::default());

    let fetched = fetch(server.address, "undionly.kpxe", &[])
        .await
        .expect("file served");

    assert_eq!(fetched.bytes, file);
    assert!(fetched.oack.is_none());
    assert_eq!(fetched.data_packets, 4);
    assert_ne!(fetched.server_port, server.address.port());
    server.stop().await;
}

#[tokio::test]
async fn exact_block_multiple_ends_with_empty_block() {
    let file = content(1024);
    let server = start(&[("f", file.clone())], TftpOptions::default());

    let fetched = fetch(server.address, "f", &[]).await.expect("file served");

    assert_eq!(fetched.bytes, file);
    assert_eq!(fetched.data_packets, 3);
    server.stop().await;
}

#[tokio::test]
async fn empty_file_is_one_empty_block() {
    let server = start(&[("empty", Vec::new())], TftpOptions::default());

    let fetched = fetch(server.address, "empty", &[])
        .await
        .expect("file served");

    assert!(fetched.bytes.is_empty());
    assert_eq!(fetched.data_packets, 1);
    server.stop().await;
}

#[tokio::test]
async fn oack_reports_tsize_and_clamped_blksize() {
    let file = content(10_000);
    let server = start(&[("snponly.efi", file.clone())], TftpOptions::default());

    let fetched = fetch(
        server.address,
        "/snponly.efi",
        &[("tsize", "0"), ("blksize", "9000")],
    )
    .await
    .expect("file served");

    let oack = fetched.oack.expect("options were acknowledged");
    assert_eq!(oack_value(&oack, "tsize"), Some(10_000));
    assert_eq!(oack_value(&oack, "blksize"), Some(1468));
    assert_eq!(fetched.bytes, file);
    assert_eq!(fetched.data_packets, 7);
    server.stop().await;
}

#[tokio::test]
async fn windowed_transfer_delivers_file() {
    let file = content(300_000);
    let server = start(&[("big", file.clone())], TftpOptions::default());

    let fetched = fetch(
        server.address,
        "big",
        &[("blksize", "1468"), ("windowsize", "4")],
    )
    .await
    .expect("file served");

    assert_eq!(
        oack_value(fetched.oack.as_deref().expect("OACK"), "windowsize"),
        Some(4)
    );
    assert_eq!(fetched.bytes, file);
    server.stop().await;
}

#[tokio::test]
async fn block_numbers_roll_over_past_65535() {
    // 70,000 blocks of 8 bytes pass block 65535.
    let file = content(70_000 * 8 + 3);
    let options = TftpOptions {
        max_windowsize: 64,
        ..TftpOptions::default()
    };
    let server = start(&[("rollover", file.clone())], options);

    let fetched = fetch(
        server.address,
        "rollover",
        &[("blksize", "8"), ("windowsize", "64")],
    )
    .await
    .expect("file served");

    assert_eq!(fetched.bytes.len(), file.len());
    assert_eq!(fetched.bytes, file);
    server.stop().await;
}

#[tokio::test]
async fn lost_ack_is_recovered_by_retransmission() {
    let file = content(700);
    let server = start(&[("f", file.clone())], TftpOptions::default());
    let socket = client().await;
    socket
        .send_to(&packet::read_request("f", "octet", &[]), server.address)
        .await
        .expect("send RRQ");

    // Receive block 1, send no ACK, and wait for the resend.
    let (first, from) = receive(&socket).await;
    let (again, _) = receive(&socket).await;
    socket
        .send_to(&packet::ack(1), from)
        .await
        .expect("send ACK 1");
    let (second, _) = receive(&socket).await;
    socket
        .send_to(&packet::ack(2), from)
        .await
        .expect("send ACK 2");

    assert_eq!(first, again);
    assert_eq!(
        packet::parse(&second),
        Ok(Packet::Data { block: 2, len: 188 })
    );
    server.stop().await;
}

#[tokio::test]
async fn silent_client_is_abandoned_after_retries() {
    let options = TftpOptions {
        max_retries: 1,
        ..TftpOptions::default()
    };
    let server = start(&[("f", content(700))], options);
    let socket = client().await;
    socket
        .send_to(&packet::read_request("f", "octet", &[]), server.address)
        .await
        .expect("send RRQ");

    receive(&socket).await;
    receive(&socket).await;
    let mut buffer = [0u8; 600];
    let third = timeout(Duration::from_secs(3), socket.recv_from(&mut buffer)).await;

    assert!(third.is_err(), "server kept sending after max_retries");
    server.stop().await;
}

#[tokio::test]
async fn option_probe_then_real_request_succeeds() {
    let file = content(5000);
    let server = start(&[("snponly.efi", file.clone())], TftpOptions::default());
    let socket = client().await;
    let probe = packet::read_request(
        "snponly.efi",
        "octet",
        &[("tsize", "0"), ("blksize", "1468")],
    );
    socket
        .send_to(&probe, server.address)
        .await
        .expect("send RRQ");
    let (oack, from) = receive(&socket).await;
    assert_eq!(packet::parse(&oack), Ok(Packet::OptionAck));
    let abort = packet::error(
        packet::ErrorCode::OptionNegotiation,
        "User aborted the transfer",
    );
    socket.send_to(&abort, from).await.expect("send ERROR 8");

    let fetched = fetch(server.address, "snponly.efi", &[("blksize", "1468")])
        .await
        .expect("file served");

    assert_eq!(fetched.bytes, file);
    server.stop().await;
}

#[tokio::test]
async fn missing_file_gets_error_1() {
    let server = start(&[], TftpOptions::default());

    let error = fetch(server.address, "absent.efi", &[])
        .await
        .expect_err("no such file");

    assert_eq!(error.0, 1);
    server.stop().await;
}

#[tokio::test]
async fn parent_path_gets_error_2() {
    let server = start(&[("f", content(10))], TftpOptions::default());

    let error = fetch(server.address, "../rh-pxe-outside", &[])
        .await
        .expect_err("outside root");

    assert_eq!(error.0, 2);
    server.stop().await;
}

#[tokio::test]
async fn write_request_gets_error_2() {
    let server = start(&[], TftpOptions::default());
    let mut request = packet::read_request("upload", "octet", &[]);
    request[1] = 2;

    let (code, message) = request_error(server.address, &request).await;

    assert_eq!(code, 2);
    assert!(message.contains("write"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn netascii_mode_gets_error_4() {
    let server = start(&[("f", content(10))], TftpOptions::default());

    let (code, message) =
        request_error(server.address, &packet::read_request("f", "netascii", &[])).await;

    assert_eq!(code, 4);
    assert!(message.contains("octet"), "{message}");
    server.stop().await;
}

#[tokio::test]
async fn garbage_gets_error_4() {
    let server = start(&[], TftpOptions::default());

    let (code, _) = request_error(server.address, b"\x00\x09junk").await;

    assert_eq!(code, 4);
    server.stop().await;
}

#[tokio::test]
async fn ack_to_server_port_gets_error_5() {
    let server = start(&[], TftpOptions::default());

    let (code, _) = request_error(server.address, &packet::ack(3)).await;

    assert_eq!(code, 5);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_running_transfer() {
    let server = start(&[("f", content(5000))], TftpOptions::default());
    let socket = client().await;
    socket
        .send_to(&packet::read_request("f", "octet", &[]), server.address)
        .await
        .expect("send RRQ");
    receive(&socket).await;

    server.stop().await;
}

#[test]
fn invalid_options_are_rejected() {
    let cases = [
        TftpOptions {
            max_blksize: 7,
            ..TftpOptions::default()
        },
        TftpOptions {
            max_windowsize: 0,
            ..TftpOptions::default()
        },
        TftpOptions {
            max_windowsize: 65,
            ..TftpOptions::default()
        },
        TftpOptions {
            default_timeout: Duration::ZERO,
            ..TftpOptions::default()
        },
        TftpOptions {
            max_transfers: 0,
            ..TftpOptions::default()
        },
    ];

    for options in cases {
        assert!(
            matches!(options.validate(), Err(TftpError::InvalidOption { .. })),
            "{options:?}"
        );
    }
}

#[test]
fn missing_root_names_path() {
    let socket = SocketFactory::host()
        .udp(SocketAddr::from(([127, 0, 0, 1], 0)), UdpOptions::default())
        .expect("loopback socket");

    let error = TftpServer::new(
        Path::new("/nonexistent/rh-pxe-root").to_path_buf(),
        socket,
        SocketFactory::host(),
        TftpOptions::default(),
    )
    .expect_err("root does not exist");

    assert!(
        error.to_string().contains("/nonexistent/rh-pxe-root"),
        "{error}"
    );
}
