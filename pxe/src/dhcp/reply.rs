//! Building server replies and choosing where they go.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Encodable, error::EncodeError};

use super::boot::{BootReply, IPXE_ENCAPSULATED, IPXE_NO_PXEDHCP};
use super::config::DhcpConfig;
use super::packet::ClientRequest;

/// UDP port of DHCP servers and relay agents.
pub(crate) const SERVER_PORT: u16 = 67;
/// UDP port of DHCP clients.
pub(crate) const CLIENT_PORT: u16 = 68;

/// Minimum size of a BOOTP message (RFC 1542 section 2.1). Some PXE ROMs drop
/// shorter replies, so replies are padded to it.
const MIN_MESSAGE_LEN: usize = 300;

/// A reply and the address it must be sent to.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) message: Message,
    pub(crate) destination: SocketAddrV4,
}

impl Reply {
    /// Encodes the reply, padded to [`MIN_MESSAGE_LEN`] bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let mut bytes = self.message.to_vec()?;
        if bytes.len() < MIN_MESSAGE_LEN {
            // Zero bytes after the End option are Pad options.
            bytes.resize(MIN_MESSAGE_LEN, 0);
        }
        Ok(bytes)
    }
}

/// Starts a reply to `request`: same `xid`, `flags`, `giaddr` and `chaddr`,
/// with options 53 (message type) and 54 (server identifier). Option 82 from
/// a relay agent is copied back, as RFC 3046 requires.
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
    if let Some(relay_information) = request
        .message
        .opts()
        .get(OptionCode::RelayAgentInformation)
    {
        options.insert(relay_information.clone());
    }
    reply
}

/// Adds the network options: subnet mask, router and DNS servers, and with
/// `lease` also the lease time (51), renewal T1 (58) and rebinding T2 (59).
pub(crate) fn add_network_options(reply: &mut Message, config: &DhcpConfig, lease: bool) {
    let options = reply.opts_mut();
    options.insert(DhcpOption::SubnetMask(config.subnet_mask));
    if let Some(router) = config.router {
        options.insert(DhcpOption::Router(vec![router]));
    }
    if !config.dns_servers.is_empty() {
        options.insert(DhcpOption::DomainNameServer(config.dns_servers.clone()));
    }

    if lease {
        // The config check keeps the lease time below u32::MAX seconds.
        let seconds = u32::try_from(config.lease_time.as_secs()).unwrap_or(u32::MAX - 1);
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
