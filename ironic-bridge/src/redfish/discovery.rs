//! Finding the ComputerSystem to drive: parsing the endpoint URL, walking
//! the Systems collection, and reading a system's MAC addresses.

use http::Method;
use rackhand_protocol::MacAddr;
use reqwest::Url;

use super::client::RedfishClient;
use super::resources::{Collection, ComputerSystem, EthernetInterface};
use crate::driver::{DriverError, ResponseProblem};

/// Maximum ComputerSystems examined in one Systems collection.
const MAX_SYSTEMS: usize = 512;

/// Maximum EthernetInterfaces read for one ComputerSystem.
const MAX_INTERFACES: usize = 64;

/// The resource that the endpoint URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A ComputerSystem URL, used as it is.
    System(Url),
    /// A service root (`…/redfish/v1/`), from which the system is discovered.
    ServiceRoot(Url),
}

/// Parses the endpoint URL into a ComputerSystem URL or a service root.
///
/// Accepted: `http(s)://host[:port]`, `…/redfish/v1` (with or without the
/// trailing slash) and `…/Systems/<id>`. Credentials in the URL are rejected
/// without being echoed, because errors and logs show the URL.
pub(crate) fn parse_target(node: &str, raw: &str) -> Result<Target, DriverError> {
    let invalid = |url: String, reason: &str| DriverError::InvalidEndpoint {
        node: node.to_string(),
        url,
        reason: reason.to_string(),
    };

    let mut url = Url::parse(raw.trim()).map_err(|error| {
        let reason = format!("not a URL ({error}); expected http(s)://host[:port]");
        invalid(without_userinfo(raw), &reason)
    })?;
    if !url.username().is_empty() || url.password().is_some() {
        // Both setters only fail for URLs without a host, which have no
        // credentials either.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        return Err(invalid(
            url.to_string(),
            "credentials in the URL are not allowed; set the username and password fields instead",
        ));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(invalid(
            url.to_string(),
            "expected an http or https URL with a host",
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid(
            url.to_string(),
            "a query or fragment is not allowed",
        ));
    }

    let segments: Vec<String> = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|segment| !segment.is_empty())
        .map(str::to_string)
        .collect();
    let path = format!("/{}", segments.join("/"));

    let target = match segments.as_slice() {
        [] => {
            url.set_path("/redfish/v1/");
            Target::ServiceRoot(url)
        }
        [.., redfish, v1] if redfish == "redfish" && v1 == "v1" => {
            url.set_path(&format!("{path}/"));
            Target::ServiceRoot(url)
        }
        [.., systems, _id] if systems == "Systems" => {
            url.set_path(&path);
            Target::System(url)
        }
        _ => {
            return Err(invalid(
                url.to_string(),
                "expected a service root (http(s)://host or …/redfish/v1) or a ComputerSystem URL (…/redfish/v1/Systems/<id>)",
            ));
        }
    };
    Ok(target)
}

/// Replaces the user-info part of an unparseable URL with `[redacted]`.
fn without_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://[redacted]{}", &rest[at..]),
        None => raw.to_string(),
    }
}

/// Finds the ComputerSystem in the Systems collection `systems` of the
/// service root `root`: the only member, or, when `boot_mac` is given, the
/// member with an EthernetInterface of that MAC.
pub(crate) async fn discover_system(
    client: &RedfishClient,
    root: &Url,
    systems: Option<&Url>,
    boot_mac: Option<MacAddr>,
) -> Result<Url, DriverError> {
    let Some(systems_url) = systems.cloned() else {
        let problem =
            ResponseProblem::UnexpectedContent("the service root has no Systems link".into());
        return Err(client.invalid_response(&Method::GET, root, problem, b""));
    };

    let collection: Collection = client.get_json(&systems_url).await?;
    let members = collection
        .members
        .iter()
        .take(MAX_SYSTEMS)
        .map(|member| resolve(client, &systems_url, &member.odata_id))
        .collect::<Result<Vec<Url>, DriverError>>()?;

    let not_found = |reason: String| DriverError::SystemNotFound {
        node: client.node().to_string(),
        url: systems_url.to_string(),
        reason,
    };

    let Some(mac) = boot_mac else {
        return match members.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(not_found("the Systems collection is empty".into())),
            many => Err(not_found(format!(
                "the collection lists {} ComputerSystems; set the boot MAC or use a ComputerSystem URL",
                many.len()
            ))),
        };
    };

    for member in &members {
        let system: ComputerSystem = client.get_json(member).await?;
        let macs = interface_macs(client, member, &system).await?;
        if macs.is_some_and(|macs| macs.contains(&mac)) {
            tracing::debug!(node = client.node(), system = %member, %mac, "ComputerSystem found by MAC");
            return Ok(member.clone());
        }
    }
    Err(not_found(format!(
        "none of the {} ComputerSystems has an EthernetInterface with MAC {mac}",
        members.len()
    )))
}

/// Checks that the ComputerSystem at `system_url` has an EthernetInterface
/// with `mac`. A system that lists no EthernetInterfaces cannot be checked
/// and passes.
pub(crate) async fn check_system_mac(
    client: &RedfishClient,
    system_url: &Url,
    mac: MacAddr,
) -> Result<(), DriverError> {
    let system: ComputerSystem = client.get_json(system_url).await?;
    match interface_macs(client, system_url, &system).await? {
        Some(macs) if !macs.contains(&mac) => Err(DriverError::SystemNotFound {
            node: client.node().to_string(),
            url: system_url.to_string(),
            reason: format!(
                "this ComputerSystem has no EthernetInterface with the node's boot MAC {mac}; the node's BMC URL or boot MAC is wrong"
            ),
        }),
        Some(_) => Ok(()),
        None => {
            tracing::debug!(node = client.node(), system = %system_url, "ComputerSystem lists no EthernetInterfaces; boot MAC not checked");
            Ok(())
        }
    }
}

/// Reads the MAC of each EthernetInterface of `system` (at `system_url`), in
/// collection order without duplicates. Returns `None` when the system has
/// no EthernetInterfaces link.
///
/// `MACAddress` is used, or `PermanentMACAddress` when it is missing or
/// empty; an interface with neither is skipped (BMCs report disabled ports
/// that way).
pub(crate) async fn interface_macs(
    client: &RedfishClient,
    system_url: &Url,
    system: &ComputerSystem,
) -> Result<Option<Vec<MacAddr>>, DriverError> {
    let Some(link) = &system.ethernet_interfaces else {
        return Ok(None);
    };
    let interfaces_url = resolve(client, system_url, &link.odata_id)?;
    let collection: Collection = client.get_json(&interfaces_url).await?;

    let mut macs = Vec::new();
    for member in collection.members.iter().take(MAX_INTERFACES) {
        let interface_url = resolve(client, &interfaces_url, &member.odata_id)?;
        let interface: EthernetInterface = client.get_json(&interface_url).await?;

        let text = [interface.mac_address, interface.permanent_mac_address]
            .into_iter()
            .flatten()
            .find(|text| !text.trim().is_empty());
        let Some(text) = text else { continue };
        let mac: MacAddr = text.trim().parse().map_err(|_| {
            let problem =
                ResponseProblem::UnexpectedContent(format!("invalid MACAddress {text:?}"));
            client.invalid_response(&Method::GET, &interface_url, problem, b"")
        })?;
        if !macs.contains(&mac) {
            macs.push(mac);
        }
    }
    Ok(Some(macs))
}

/// Resolves a link found in the resource at `base`, rejecting links to
/// another scheme, host or port: the driver sends credentials only to the
/// BMC it was given.
pub(crate) fn resolve(
    client: &RedfishClient,
    base: &Url,
    odata_id: &str,
) -> Result<Url, DriverError> {
    let invalid = |detail: String| {
        let problem = ResponseProblem::UnexpectedContent(detail);
        client.invalid_response(&Method::GET, base, problem, b"")
    };

    let url = base
        .join(odata_id)
        .map_err(|error| invalid(format!("invalid link {odata_id:?} ({error})")))?;
    if url.origin() != base.origin() {
        return Err(invalid(format!(
            "link {odata_id:?} points to another server"
        )));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::{Target, parse_target, without_userinfo};
    use crate::driver::DriverError;

    fn target(raw: &str) -> Target {
        parse_target("n1", raw).expect("valid endpoint URL")
    }

    fn root(url: &str) -> Target {
        Target::ServiceRoot(url.parse().expect("valid URL"))
    }

    #[test]
    fn host_only_is_service_root() {
        assert_eq!(
            target("http://127.0.0.1:8000"),
            root("http://127.0.0.1:8000/redfish/v1/")
        );
        assert_eq!(target("https://bmc/"), root("https://bmc/redfish/v1/"));
    }

    #[test]
    fn redfish_v1_path_is_service_root() {
        assert_eq!(
            target("https://bmc/redfish/v1"),
            root("https://bmc/redfish/v1/")
        );
        assert_eq!(
            target("https://bmc/redfish/v1/"),
            root("https://bmc/redfish/v1/")
        );
    }

    #[test]
    fn systems_path_is_system() {
        let expected = Target::System(
            "https://bmc/redfish/v1/Systems/System.Embedded.1"
                .parse()
                .expect("valid URL"),
        );
        assert_eq!(
            target("https://bmc/redfish/v1/Systems/System.Embedded.1/"),
            expected
        );
    }

    #[test]
    fn credentials_in_url_are_rejected_unechoed() {
        let error =
            parse_target("n1", "https://admin:s3cret@bmc/redfish/v1").expect_err("credentials");
        let message = error.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("credentials"), "{message}");
    }

    #[test]
    fn unparseable_url_hides_userinfo() {
        assert_eq!(
            without_userinfo("http://a:b@[bad/x"),
            "http://[redacted]@[bad/x"
        );
        let error = parse_target("n1", "http://a:pw@[bad").expect_err("invalid URL");
        assert!(!error.to_string().contains("pw"), "{error}");
    }

    #[test]
    fn other_paths_are_rejected() {
        for raw in [
            "https://bmc/redfish/v1/Managers/1",
            "ftp://bmc/",
            "https://bmc/redfish/v1?x=1",
        ] {
            let error = parse_target("n1", raw).expect_err("invalid endpoint");
            assert!(
                matches!(error, DriverError::InvalidEndpoint { .. }),
                "{raw}: {error:?}"
            );
        }
    }
}
