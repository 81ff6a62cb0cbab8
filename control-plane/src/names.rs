//! Checks for the DNS names operators and customers give us.

/// Checks one DNS label (RFC 1123 host name rules): 1–63 letters, digits and
/// hyphens, not starting or ending with a hyphen.
pub fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() || label.len() > 63 {
        return Err(format!("{label:?} must be 1 to 63 characters long"));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{label:?} may contain only letters, digits and hyphens"
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!("{label:?} must not start or end with a hyphen"));
    }
    Ok(())
}

/// Checks a fully qualified domain name without its trailing dot.
pub fn check_fqdn(name: &str) -> Result<(), String> {
    if name.len() > 253 {
        return Err(format!("{name:?} is longer than 253 characters"));
    }
    name.split('.').try_for_each(check_label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_rfc_1123() {
        assert!(check_label("web-01").is_ok());
        assert!(check_label("-web").is_err());
        assert!(check_label("web_01").is_err());
        assert!(check_label("").is_err());
        assert!(check_label(&"a".repeat(64)).is_err());
    }

    #[test]
    fn fqdn_checks_every_label() {
        assert!(check_fqdn("srv.example.net").is_ok());
        assert!(check_fqdn("srv..example.net").is_err());
    }
}
