//! The Redfish service as its root describes it: where Systems, Managers,
//! Chassis and the UpdateService are, how to authenticate, and which vendor
//! profile applies.

use reqwest::Url;
use serde_json::Value;

use super::client::RedfishClient;
use super::discovery::resolve;
use super::profile::Vendor;
use super::resources::{Collection, link_at};
use crate::driver::{DEFAULT_TIMEOUT, DriverError};

/// The links and profile read from the service root.
#[derive(Debug, Clone)]
pub(crate) struct Service {
    pub vendor: Vendor,
    pub systems: Option<Url>,
    pub managers: Option<Url>,
    pub chassis: Option<Url>,
    pub update_service: Option<Url>,
}

/// Reads the service root at `root`, switches the client to sessions when
/// the root links a sessions collection, and picks the vendor profile
/// (`fixed` when the driver kind names one).
///
/// With `tolerate_missing_root`, a root that returns an HTTP error or
/// invalid JSON gives a generic service with basic auth, because a
/// ComputerSystem URL still works without it. Connection failures and
/// timeouts are errors either way.
pub(crate) async fn discover_service(
    client: &RedfishClient,
    root: &Url,
    fixed: Option<Vendor>,
    tolerate_missing_root: bool,
) -> Result<Service, DriverError> {
    let json: Value = match client.get_json(root).await {
        Ok(json) => json,
        Err(error @ (DriverError::Http { .. } | DriverError::InvalidResponse { .. }))
            if tolerate_missing_root =>
        {
            tracing::debug!(node = client.node(), url = %root, error = %error, "service root unreadable; using the ComputerSystem URL alone");
            let vendor = fixed.unwrap_or(Vendor::Generic);
            apply_vendor_timeout(client, vendor);
            return Ok(bare(vendor));
        }
        Err(error) => return Err(error),
    };

    let link = |pointer: &str| -> Result<Option<Url>, DriverError> {
        link_at(&json, pointer)
            .map(|id| resolve(client, root, id))
            .transpose()
    };
    let service = Service {
        vendor: Vendor::Generic,
        systems: link("/Systems")?,
        managers: link("/Managers")?,
        chassis: link("/Chassis")?,
        update_service: link("/UpdateService")?,
    };
    if let Some(sessions) = link("/Links/Sessions")? {
        client.use_sessions(sessions).await;
    }

    let vendor = match fixed.or_else(|| Vendor::from_service_root(&json)) {
        Some(vendor) => vendor,
        None => vendor_from_first_manager(client, service.managers.as_ref()).await,
    };
    apply_vendor_timeout(client, vendor);
    let sessions = client.uses_sessions().await;
    tracing::debug!(
        node = client.node(),
        vendor = vendor.name(),
        sessions,
        "redfish service discovered"
    );
    Ok(Service { vendor, ..service })
}

fn bare(vendor: Vendor) -> Service {
    Service {
        vendor,
        systems: None,
        managers: None,
        chassis: None,
        update_service: None,
    }
}

/// Raises the request time limit to the vendor's default, unless the
/// endpoint chose its own limit.
fn apply_vendor_timeout(client: &RedfishClient, vendor: Vendor) {
    if client.timeout() != DEFAULT_TIMEOUT {
        return;
    }
    if let Some(timeout) = vendor.default_timeout() {
        client.set_timeout(timeout);
    }
}

/// Detects the vendor from the first Manager. Any failure gives
/// [`Vendor::Generic`]: the profile only refines a standard driver.
async fn vendor_from_first_manager(client: &RedfishClient, managers: Option<&Url>) -> Vendor {
    let Some(managers) = managers else {
        return Vendor::Generic;
    };
    let first = async {
        let collection: Collection = client.get_json(managers).await?;
        let Some(member) = collection.members.first() else {
            return Ok(None);
        };
        let url = resolve(client, managers, &member.odata_id)?;
        let manager: Value = client.get_json(&url).await?;
        Ok::<_, DriverError>(Vendor::from_manager(&manager))
    };
    match first.await {
        Ok(vendor) => vendor.unwrap_or(Vendor::Generic),
        Err(error) => {
            tracing::debug!(node = client.node(), error = %error, "no manager to detect the vendor from");
            Vendor::Generic
        }
    }
}

/// Returns the service root of a ComputerSystem URL (`…/redfish/v1/`).
pub(crate) fn root_of_system(system: &Url) -> Url {
    // `…/redfish/v1/Systems/<id>` joined with `../` drops the last two
    // segments.
    system.join("../").unwrap_or_else(|_| system.clone())
}

/// Reads a member list, rejecting links to other servers.
pub(crate) async fn members(
    client: &RedfishClient,
    collection: &Url,
    max: usize,
) -> Result<Vec<Url>, DriverError> {
    let list: Collection = client.get_json(collection).await?;
    list.members
        .iter()
        .take(max)
        .map(|member| resolve(client, collection, &member.odata_id))
        .collect()
}

/// Returns `Ok(None)` for a resource the BMC does not offer (HTTP 404, 405
/// or 501, or a missing licence), so that optional parts of the inventory
/// can be skipped. Other errors stay errors.
pub(crate) fn optional<T>(result: Result<T, DriverError>) -> Result<Option<T>, DriverError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(DriverError::Http {
            status: 404 | 405 | 501,
            ..
        }) => Ok(None),
        Err(DriverError::LicenceRequired { url, .. }) => {
            tracing::debug!(%url, "skipped: the BMC needs a licence for this resource");
            Ok(None)
        }
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rackhand_protocol::Secret;

    use super::apply_vendor_timeout;
    use crate::driver::{BmcEndpoint, DEFAULT_TIMEOUT, DriverKind};
    use crate::redfish::client::RedfishClient;
    use crate::redfish::profile::Vendor;

    fn client(timeout: Duration) -> RedfishClient {
        let endpoint = BmcEndpoint {
            timeout,
            ..BmcEndpoint::new(
                DriverKind::Idrac,
                "https://bmc.example",
                "admin",
                Secret::new("pw".into()),
                "n1",
            )
        };
        RedfishClient::new(&endpoint).expect("client builds")
    }

    #[test]
    fn dell_raises_the_default_timeout() {
        let client = client(DEFAULT_TIMEOUT);

        apply_vendor_timeout(&client, Vendor::Dell);

        assert_eq!(client.timeout(), Duration::from_secs(90));
    }

    #[test]
    fn chosen_timeout_is_kept() {
        let client = client(Duration::from_secs(7));

        apply_vendor_timeout(&client, Vendor::Dell);

        assert_eq!(client.timeout(), Duration::from_secs(7));
    }

    #[test]
    fn generic_keeps_the_default_timeout() {
        let client = client(DEFAULT_TIMEOUT);

        apply_vendor_timeout(&client, Vendor::Generic);

        assert_eq!(client.timeout(), DEFAULT_TIMEOUT);
    }
}
