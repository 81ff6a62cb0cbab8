//! Building server replies and choosing where they go.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, error::EncodeError};

use super::boot::{BootReply, HTTP_CLIENT, IPXE_ENCAPSULATED, IPXE_NO_PXEDHCP, PXE_CLIENT};
use super::packet::ClientRequest;

/// UDP port of DHCP servers and relay agents.
pub(crate) const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub(crate) const CLIENT_PORT: u16 = 68;
/// UDP port of the PXE boot server, where PXE clients send their
/// DHCPREQUEST to a proxyDHCP server (PXE specification 2.1).
pub const PXE_PORT: u16 = 4011;

/// Option 43 for PXE clients of a proxyDHCP server: sub-option 6
/// (PXE_DISCOVERY_CONTROL) with bit 3 set, so that the client fetches the
/// boot file named in the reply instead of running boot server
/// discovery, then the End sub-option.
const PXE_DISCOVERY_CONTROL: [u8; 4] = [6, 1, 8, 255];

/// Minimum size of a BOOTP message (RFC 1542 section 2.1). Some PXE ROMs drop
/// shorter replies, so replies are padded to it.
const MIN_MESSAGE_LEN: usize = 300;

/// Socket a reply leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReplySocket {
    /// The DHCP socket on port 67.
    Server,
    /// The proxyDHCP socket on port 4011, for replies to requests that
    /// arrived there. iPXE accepts those replies only from port 4011.
    Pxe,
}

/// A reply and the address it must be sent to.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) message: Message,
    pub(crate) destination: SocketAddrV4,
    pub(crate) socket: ReplySocket,
    /// Option 82 data from the request, appended unchanged as the last option.
    pub(crate) relay_agent_information: Option<Vec<u8>>,
}

impl Reply {
    /// Creates a reply to `request` that echoes its option 82.
    pub(crate) fn to_request(
        request: &ClientRequest,
        message: Message,
        destination: SocketAddrV4,
        socket: ReplySocket,
    ) -> Self {
        Self {
            message,
            destination,
            socket,
            relay_agent_information: request.relay_agent_information.clone(),
        }
    }

    /// Encodes the reply, with option 82 last and padded to
    /// [`MIN_MESSAGE_LEN`] bytes.
    ///
    /// Option 82 is written here and not through dhcproto, whose encoder
    /// (0.15) writes an option 82 held as raw data twice.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut bytes = self.message.to_vec()?;
        if let Some(data) = &self.relay_agent_information {
            // dhcproto ends the options with End (255); the option goes
            // before it. The parser limits the data to 255 bytes.
            if bytes.last() == Some(&255) {
                bytes.pop();
            }
            bytes.push(82);
            bytes.push(u8::try_from(data.len()).unwrap_or(u8::MAX));
            bytes.extend_from_slice(&data[..data.len().min(255)]);
            bytes.push(255);
        }
        if bytes.len() < MIN_MESSAGE_LEN {
            // Zero bytes after the End option are Pad options.
            bytes.resize(MIN_MESSAGE_LEN, 0);
        }
        Ok(bytes)
    }
}

/// Starts a reply to `request`: same `xid`, `flags`, `giaddr` and `chaddr`,
/// with options 53 (message type) and 54 (server identifier). Option 82 from
/// a relay agent goes back through [`Reply::to_request`], as RFC 3046
/// requires.
pub(crate) fn new_reply(
    request: &ClientRequest,
    message_type: MessageType,
    server_ip: Ipv4Addr,
) -> Message {
    let mut reply = Message::new_with_id(
        request.message.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        request.message.giaddr(),
        &request.mac.0,
    );
    reply.set_opcode(Opcode::BootReply);
    reply.set_flags(request.message.flags());

    let options = reply.opts_mut();
    options.insert(DhcpOption::MessageType(message_type));
    options.insert(DhcpOption::ServerIdentifier(server_ip));
    reply
}

/// The network options of the subnet a client is on.
#[derive(Clone, Debug)]
pub(crate) struct NetworkOptions {
    pub(crate) subnet_mask: Ipv4Addr,
    pub(crate) router: Option<Ipv4Addr>,
    pub(crate) dns_servers: Vec<Ipv4Addr>,
    pub(crate) lease_time: std::time::Duration,
}

/// Adds the network options: subnet mask, router and DNS servers, and with
/// `lease` also the lease time (51), renewal T1 (58) and rebinding T2 (59).
pub(crate) fn add_network_options(reply: &mut Message, network: &NetworkOptions, lease: bool) {
    let options = reply.opts_mut();
    options.insert(DhcpOption::SubnetMask(network.subnet_mask));
    if let Some(router) = network.router {
        options.insert(DhcpOption::Router(vec![router]));
    }
    if !network.dns_servers.is_empty() {
        options.insert(DhcpOption::DomainNameServer(network.dns_servers.clone()));
    }

    if lease {
        // The config check keeps the lease time below u32::MAX seconds.
        let seconds = u32::try_from(network.lease_time.as_secs()).unwrap_or(u32::MAX - 1);
        options.insert(DhcpOption::AddressLeaseTime(seconds));
        options.insert(DhcpOption::Renewal(seconds / 2));
        options.insert(DhcpOption::Rebinding((u64::from(seconds) * 7 / 8) as u32));
    }
}

/// Sets `siaddr`, `file` and, for iPXE, option 175.176 = 1.
pub(crate) fn add_boot(reply: &mut Message, boot: &BootReply, tftp_server: Ipv4Addr) {
    // The config check limits boot file names and the rendered script URL to
    // 127 bytes, below the 128 at which dhcproto's setter panics.
    match boot {
        BootReply::None => {}
        BootReply::Tftp { file } => {
            reply.set_siaddr(tftp_server).set_fname_str(file);
        }
        BootReply::Http { url } => {
            // EDK2 accepts an HTTP boot offer only when it carries the bare
            // vendor class back.
            reply.set_fname_str(url);
            reply
                .opts_mut()
                .insert(DhcpOption::ClassIdentifier(HTTP_CLIENT.to_vec()));
        }
        BootReply::IpxeScript { url } => {
            reply.set_siaddr(tftp_server).set_fname_str(url);
            let no_pxedhcp = vec![IPXE_NO_PXEDHCP, 1, 1];
            reply
                .opts_mut()
                .insert(DhcpOption::Unknown(UnknownOption::new(
                    OptionCode::Unknown(IPXE_ENCAPSULATED),
                    no_pxedhcp,
                )));
        }
    }
}

/// Adds what a proxyDHCP reply carries besides the boot file. Option 60
/// `PXEClient` is how PXE clients and iPXE tell a proxy reply from an
/// ordinary one; HTTP boot gets `HTTPClient` from [`add_boot`] instead.
/// PXE clients also get option 43, and option 97 (client machine
/// identifier) is echoed as the PXE specification requires.
pub(crate) fn add_proxy_options(reply: &mut Message, request: &ClientRequest, boot: &BootReply) {
    let options = reply.opts_mut();
    if !matches!(boot, BootReply::Http { .. }) {
        options.insert(DhcpOption::ClassIdentifier(PXE_CLIENT.to_vec()));
        options.insert(DhcpOption::VendorExtensions(PXE_DISCOVERY_CONTROL.to_vec()));
    }
    if let Some(machine_id) = request
        .message
        .opts()
        .get(OptionCode::ClientMachineIdentifier)
    {
        options.insert(machine_id.clone());
    }
}

/// Chooses the destination of a reply (RFC 2131 section 4.1).
///
/// Through a relay (`giaddr` set) the reply goes to the relay's server port.
/// A client that has an address (`ciaddr`) and did not set the broadcast flag
/// gets unicast. Everything else, and every DHCPNAK without a relay, is
/// broadcast: the client has no address yet, and a UDP socket cannot send to
/// an address that has no ARP entry.
pub(crate) fn destination(request: &Message, reply_type: MessageType) -> SocketAddrV4 {
    let giaddr = request.giaddr();
    if !giaddr.is_unspecified() {
        return SocketAddrV4::new(giaddr, SERVER_PORT);
    }

    let ciaddr = request.ciaddr();
    let unicast =
        reply_type != MessageType::Nak && !ciaddr.is_unspecified() && !request.flags().broadcast();
    if unicast {
        return SocketAddrV4::new(ciaddr, CLIENT_PORT);
    }
    SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT)
}

/// Sets the broadcast flag, which a relay needs on a DHCPNAK to broadcast it
/// to a client whose address is invalid.
pub(crate) fn set_broadcast_flag(reply: &mut Message) {
    let flags: Flags = reply.flags().set_broadcast();
    reply.set_flags(flags);
}
