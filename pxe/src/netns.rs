//! Socket creation in a chosen network namespace.
//!
//! A socket belongs to the network namespace of the thread that created it and
//! keeps it for its whole life. The site agent stays in the host's namespace,
//! where it reaches the control plane and the BMCs, but its DHCP, TFTP and boot
//! HTTP sockets must sit on the provisioning interface, which may live in a
//! namespace under `/run/netns`. TFTP also needs a new socket for every
//! transfer, long after start-up.
//!
//! [`SocketFactory::for_namespace`] therefore starts one OS thread that calls
//! `setns(2)` once and then creates sockets on request, sent over a channel.
//! Only that thread changes namespace, so no tokio worker thread ever does. The
//! thread ends when the last clone of the factory is dropped.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// Directory where `ip netns add` creates the namespace files.
const NETNS_DIR: &str = "/run/netns";

/// Maximum time a caller waits for the namespace thread to create a socket.
/// Creating a socket takes microseconds, so reaching this means the thread is
/// stuck.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Backlog of listening TCP sockets.
const LISTEN_BACKLOG: i32 = 1024;

/// Errors from creating sockets. Each names the namespace (`host` for the
/// caller's own) and the address or device involved.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}: expected a name under {NETNS_DIR}")]
    InvalidName { name: String },

    #[error("failed to open network namespace {namespace} at {}", path.display())]
    Open {
        namespace: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("failed to enter network namespace {namespace}")]
    Enter {
        namespace: String,
        #[source]
        source: nix::Error,
    },

    #[error("failed to start the socket thread for network namespace {namespace}")]
    SpawnThread {
        namespace: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to open an ARP packet socket on {interface} in network namespace {namespace}")]
    PacketSocket {
        namespace: String,
        interface: String,
        #[source]
        source: io::Error,
    },

    #[error("socket thread for network namespace {namespace} has stopped")]
    ThreadStopped { namespace: String },

    #[error("socket thread for network namespace {namespace} did not reply within {timeout:?}")]
    Timeout {
        namespace: String,
        timeout: Duration,
    },

    #[error("failed to create a socket for {addr} in network namespace {namespace}")]
    Create {
        namespace: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },

    #[error("failed to bind socket to device {device} in network namespace {namespace}")]
    BindDevice {
        namespace: String,
        device: String,
        #[source]
        source: io::Error,
    },

    #[error("failed to bind {addr} in network namespace {namespace}")]
    Bind {
        namespace: String,
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Socket options for [`SocketFactory::udp`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UdpOptions {
    /// `SO_BROADCAST`: allows sending to 255.255.255.255 (DHCP replies).
    pub broadcast: bool,
    /// `SO_REUSEADDR`: lets a restarted server bind its port again at once.
    pub reuse_addr: bool,
    /// `SO_BINDTODEVICE`: receives and sends only through this interface. A
    /// DHCP server bound to 0.0.0.0:67 needs it to serve one interface.
    pub bind_device: Option<String>,
}

/// Creates sockets in the caller's network namespace or in a named one.
///
/// Cheap to clone. All clones of a namespace factory share its thread.
#[derive(Clone, Debug)]
pub struct SocketFactory {
    target: Target,
}

#[derive(Clone, Debug)]
enum Target {
    Host,
    Namespace {
        name: String,
        requests: mpsc::Sender<Request>,
    },
}

#[derive(Debug)]
enum Request {
    Udp {
        addr: SocketAddr,
        options: UdpOptions,
        reply: mpsc::SyncSender<Result<UdpSocket, NetnsError>>,
    },
    Tcp {
        addr: SocketAddr,
        reply: mpsc::SyncSender<Result<TcpListener, NetnsError>>,
    },
    Icmp {
        reply: mpsc::SyncSender<Result<Socket, NetnsError>>,
    },
    Arp {
        interface: String,
        reply: mpsc::SyncSender<Result<(Socket, [u8; 6]), NetnsError>>,
    },
}

impl SocketFactory {
    /// Returns a factory that creates sockets in the caller's namespace.
    pub fn host() -> Self {
        Self {
            target: Target::Host,
        }
    }

    /// Starts a thread inside the network namespace `/run/netns/NAME` and
    /// returns a factory whose sockets that thread creates.
    ///
    /// Returns once the thread has entered the namespace, so a wrong name or a
    /// missing `CAP_SYS_ADMIN` fails here and not at the first socket.
    pub fn for_namespace(name: &str) -> Result<Self, NetnsError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(NetnsError::InvalidName {
                name: name.to_string(),
            });
        }

        let path = PathBuf::from(NETNS_DIR).join(name);
        let file = File::open(&path).map_err(|source| NetnsError::Open {
            namespace: name.to_string(),
            path: path.clone(),
            source,
        })?;

        let (requests, receiver) = mpsc::channel();
        let (entered_sender, entered) = mpsc::sync_channel(1);
        let namespace = name.to_string();
        thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || serve_requests(namespace, file, entered_sender, receiver))
            .map_err(|source| NetnsError::SpawnThread {
                namespace: name.to_string(),
                source,
            })?;

        match entered.recv_timeout(REQUEST_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(error),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(NetnsError::Timeout {
                    namespace: name.to_string(),
                    timeout: REQUEST_TIMEOUT,
                });
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(NetnsError::ThreadStopped {
                    namespace: name.to_string(),
                });
            }
        }

        tracing::debug!(namespace = name, "entered network namespace for sockets");
        Ok(Self {
            target: Target::Namespace {
                name: name.to_string(),
                requests,
            },
        })
    }

    /// Returns the namespace name, or `host` for the caller's namespace.
    pub fn namespace(&self) -> &str {
        match &self.target {
            Target::Host => "host",
            Target::Namespace { name, .. } => name,
        }
    }

    /// Creates a UDP socket bound to `addr`, non-blocking and ready for
    /// `tokio::net::UdpSocket::from_std`.
    ///
    /// For a namespace factory this blocks the caller until the namespace
    /// thread replies, which takes microseconds and at most 5 s.
    pub fn udp(&self, addr: SocketAddr, options: UdpOptions) -> Result<UdpSocket, NetnsError> {
        match &self.target {
            Target::Host => create_udp("host", addr, &options),
            Target::Namespace { name, requests } => {
                let (reply, response) = mpsc::sync_channel(1);
                let request = Request::Udp {
                    addr,
                    options,
                    reply,
                };
                exchange(name, requests, request, &response)
            }
        }
    }

    /// Creates a listening TCP socket on `addr` with `SO_REUSEADDR`,
    /// non-blocking and ready for `tokio::net::TcpListener::from_std`.
    pub fn tcp_listener(&self, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
        match &self.target {
            Target::Host => create_tcp_listener("host", addr),
            Target::Namespace { name, requests } => {
                let (reply, response) = mpsc::sync_channel(1);
                let request = Request::Tcp { addr, reply };
                exchange(name, requests, request, &response)
            }
        }
    }
}

impl SocketFactory {
    /// Creates a blocking raw ICMPv4 socket, for the DHCP server's ping check
    /// of an address before it offers it. Needs `CAP_NET_RAW`.
    pub fn icmp(&self) -> Result<Socket, NetnsError> {
        match &self.target {
            Target::Host => create_icmp("host"),
            Target::Namespace { name, requests } => {
                let (reply, response) = mpsc::sync_channel(1);
                exchange(name, requests, Request::Icmp { reply }, &response)
            }
        }
    }
}

impl SocketFactory {
    /// Creates a blocking `AF_PACKET` socket bound to `interface` that sends
    /// and receives whole Ethernet frames of ARP, for the DHCP server's ARP
    /// probe of an address before it offers it, and returns it with the
    /// interface's MAC. Needs `CAP_NET_RAW`.
    pub fn arp(&self, interface: &str) -> Result<(Socket, [u8; 6]), NetnsError> {
        match &self.target {
            Target::Host => create_arp("host", interface),
            Target::Namespace { name, requests } => {
                let (reply, response) = mpsc::sync_channel(1);
                let request = Request::Arp {
                    interface: interface.to_string(),
                    reply,
                };
                exchange(name, requests, request, &response)
            }
        }
    }
}

/// Sends one request to the namespace thread and waits for its reply.
fn exchange<T>(
    namespace: &str,
    requests: &mpsc::Sender<Request>,
    request: Request,
    response: &mpsc::Receiver<Result<T, NetnsError>>,
) -> Result<T, NetnsError> {
    let stopped = || NetnsError::ThreadStopped {
        namespace: namespace.to_string(),
    };
    requests.send(request).map_err(|_| stopped())?;

    match response.recv_timeout(REQUEST_TIMEOUT) {
        Ok(result) => result,
        Err(mpsc::RecvTimeoutError::Timeout) => Err(NetnsError::Timeout {
            namespace: namespace.to_string(),
            timeout: REQUEST_TIMEOUT,
        }),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(stopped()),
    }
}

/// Enters the namespace, reports the outcome, then creates sockets until
/// every factory clone is dropped. Runs as the namespace thread's body.
fn serve_requests(
    namespace: String,
    file: File,
    entered: mpsc::SyncSender<Result<(), NetnsError>>,
    requests: mpsc::Receiver<Request>,
) {
    if let Err(source) = setns(&file, CloneFlags::CLONE_NEWNET) {
        let error = NetnsError::Enter {
            namespace: namespace.clone(),
            source,
        };
        // A send error means the caller already timed out, so the error has
        // no receiver.
        let _ = entered.send(Err(error));
        return;
    }
    drop(file);
    if entered.send(Ok(())).is_err() {
        return;
    }

    // Ends when the last factory clone drops its sender.
    for request in requests {
        // A send error means the caller timed out, and dropping the socket
        // closes it.
        match request {
            Request::Udp {
                addr,
                options,
                reply,
            } => {
                let _ = reply.send(create_udp(&namespace, addr, &options));
            }
            Request::Tcp { addr, reply } => {
                let _ = reply.send(create_tcp_listener(&namespace, addr));
            }
            Request::Icmp { reply } => {
                let _ = reply.send(create_icmp(&namespace));
            }
            Request::Arp { interface, reply } => {
                let _ = reply.send(create_arp(&namespace, &interface));
            }
        }
    }
    tracing::debug!(namespace, "network namespace socket thread stopped");
}

fn new_socket(namespace: &str, addr: SocketAddr, kind: Type) -> Result<Socket, NetnsError> {
    let protocol = if kind == Type::DGRAM {
        Protocol::UDP
    } else {
        Protocol::TCP
    };
    let create_error = |source| NetnsError::Create {
        namespace: namespace.to_string(),
        addr,
        source,
    };

    let socket =
        Socket::new(Domain::for_address(addr), kind, Some(protocol)).map_err(create_error)?;
    socket.set_nonblocking(true).map_err(create_error)?;
    Ok(socket)
}

fn create_udp(
    namespace: &str,
    addr: SocketAddr,
    options: &UdpOptions,
) -> Result<UdpSocket, NetnsError> {
    let socket = new_socket(namespace, addr, Type::DGRAM)?;
    let create_error = |source| NetnsError::Create {
        namespace: namespace.to_string(),
        addr,
        source,
    };

    socket
        .set_reuse_address(options.reuse_addr)
        .map_err(create_error)?;
    socket
        .set_broadcast(options.broadcast)
        .map_err(create_error)?;
    if let Some(device) = &options.bind_device {
        socket
            .bind_device(Some(device.as_bytes()))
            .map_err(|source| NetnsError::BindDevice {
                namespace: namespace.to_string(),
                device: device.clone(),
                source,
            })?;
    }

    bind(namespace, &socket, addr)?;
    Ok(socket.into())
}

fn create_tcp_listener(namespace: &str, addr: SocketAddr) -> Result<TcpListener, NetnsError> {
    let socket = new_socket(namespace, addr, Type::STREAM)?;
    socket
        .set_reuse_address(true)
        .map_err(|source| NetnsError::Create {
            namespace: namespace.to_string(),
            addr,
            source,
        })?;

    bind(namespace, &socket, addr)?;
    socket
        .listen(LISTEN_BACKLOG)
        .map_err(|source| NetnsError::Bind {
            namespace: namespace.to_string(),
            addr,
            source,
        })?;
    Ok(socket.into())
}

fn create_icmp(namespace: &str) -> Result<Socket, NetnsError> {
    Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|source| {
        NetnsError::Create {
            namespace: namespace.to_string(),
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        }
    })
}

/// Opens the ARP packet socket and binds it to `interface`. The link
/// address to bind to comes from getifaddrs(3), whose `AF_PACKET` entry of
/// an interface carries its index and MAC; its protocol field is 0, so the
/// socket keeps receiving only ARP.
fn create_arp(namespace: &str, interface: &str) -> Result<(Socket, [u8; 6]), NetnsError> {
    let failed = |source: io::Error| NetnsError::PacketSocket {
        namespace: namespace.to_string(),
        interface: interface.to_string(),
        source,
    };
    let protocol = i32::from(crate::dhcp::ETHERTYPE_ARP.to_be());
    let socket =
        Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(protocol))).map_err(failed)?;

    let addresses = nix::ifaddrs::getifaddrs().map_err(|errno| failed(errno.into()))?;
    let link = addresses
        .filter(|entry| entry.interface_name == interface)
        .find_map(|entry| {
            entry
                .address
                .and_then(|address| address.as_link_addr().copied())
        })
        .ok_or_else(|| {
            failed(io::Error::new(
                io::ErrorKind::NotFound,
                "no such interface with a link-layer address",
            ))
        })?;
    let mac = link.addr().ok_or_else(|| {
        failed(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface has no Ethernet address",
        ))
    })?;
    nix::sys::socket::bind(socket.as_raw_fd(), &link).map_err(|errno| failed(errno.into()))?;
    Ok((socket, mac))
}

fn bind(namespace: &str, socket: &Socket, addr: SocketAddr) -> Result<(), NetnsError> {
    socket
        .bind(&SockAddr::from(addr))
        .map_err(|source| NetnsError::Bind {
            namespace: namespace.to_string(),
            addr,
            source,
        })
}

#[cfg(test)]
mod tests;
