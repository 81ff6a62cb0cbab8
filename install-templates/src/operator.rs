//! Operator-supplied Handlebars templates, checked on upload and rendered
//! per order.
//!
//! Every `{{expression}}` is escaped for the template's format (see
//! [`TemplateKind`]), and unescaped forms (`{{{…}}}`, `{{&…}}`) are
//! rejected, so an order's values cannot change a document's structure.

use std::fmt;

use handlebars::{Handlebars, RenderErrorReason, handlebars_helper};
use serde_json::Value;

use crate::container::ContainerSpec;
use crate::view::TemplateData;
use crate::{
    ImageInfo, Ipv4Settings, Ipv6Settings, NetworkSettings, OrderContext, OrderContextInput,
    OsFamily, TemplateError, checks, placement, shell, yaml,
};

/// What an operator template produces, which decides how expressions are
/// escaped and how the output is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TemplateKind {
    /// NoCloud `user-data` or configdrive `user_data`: `#cloud-config` YAML.
    /// Expressions become YAML double-quoted scalars.
    CloudConfig,
    /// NoCloud `meta-data`, YAML or JSON. Expressions become YAML
    /// double-quoted scalars, which are also JSON strings.
    MetaData,
    /// NoCloud `network-config` version 2, YAML or JSON. Escaped as YAML.
    NetworkConfig,
    /// Configdrive `openstack/latest/meta_data.json`. Expressions become
    /// JSON strings.
    OpenStackMetaData,
    /// Configdrive `openstack/latest/network_data.json`. Escaped as JSON.
    OpenStackNetworkData,
    /// Kickstart. Expressions become single-quoted shell words, which
    /// Anaconda's command parser and `%post` shells both read.
    Kickstart,
    /// Preseed. Expressions are written as they are, with control
    /// characters replaced by spaces. Use `{{shell value}}` for a
    /// single-quoted shell word inside `late_command`.
    Preseed,
    /// A [`ContainerSpec`] as JSON. Escaped as JSON.
    Container,
}

impl TemplateKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::CloudConfig => "cloud-config",
            Self::MetaData => "meta-data",
            Self::NetworkConfig => "network-config",
            Self::OpenStackMetaData => "openstack meta_data.json",
            Self::OpenStackNetworkData => "openstack network_data.json",
            Self::Kickstart => "kickstart",
            Self::Preseed => "preseed",
            Self::Container => "container spec",
        }
    }

    fn escape(self) -> fn(&str) -> String {
        match self {
            Self::CloudConfig | Self::MetaData | Self::NetworkConfig => yaml::quote_scalar,
            Self::OpenStackMetaData | Self::OpenStackNetworkData | Self::Container => json_string,
            Self::Kickstart => shell::quote,
            Self::Preseed => strip_controls,
        }
    }
}

impl fmt::Display for TemplateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn json_string(value: &str) -> String {
    serde_json::to_string(value).expect("a string always serializes to JSON")
}

fn strip_controls(value: &str) -> String {
    value
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

handlebars_helper!(join: |list: array, separator: str| {
    list.iter()
        .map(|item| match item {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(separator)
});

handlebars_helper!(shell_word: |value: str| shell::quote(value));

/// A template that passed the upload checks.
pub struct OperatorTemplate {
    name: String,
    kind: TemplateKind,
    registry: Handlebars<'static>,
}

impl fmt::Debug for OperatorTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorTemplate")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl OperatorTemplate {
    /// Checks an uploaded template and keeps it compiled.
    ///
    /// The checks, in order:
    ///
    /// 1. No `{{{…}}}`, `{{&…}}` or `{{{{raw}}}}` block, which would skip
    ///    escaping.
    /// 2. Expression placement: in YAML kinds every expression is a whole
    ///    scalar (key, value, sequence or flow item) outside block scalars,
    ///    and in preseed `*_command` lines every expression uses
    ///    `{{shell …}}`, because elsewhere the quoting would be literal text
    ///    or a shell would parse the value.
    /// 3. Handlebars syntax, reported with line and column.
    /// 4. Rendering in strict mode against two sample orders, one with and
    ///    one without IPv6, so a variable that is not in the context fails
    ///    in any branch that one of the samples takes. A branch neither
    ///    sample takes (say `{{#if (eq hostname "x")}}`) is not checked.
    /// 5. The format checks of [`crate::checks`] on each rendered output.
    pub fn validate(name: &str, kind: TemplateKind, source: &str) -> Result<Self, TemplateError> {
        reject_unescaped(name, source)?;
        placement::check_placement(name, kind, source)?;

        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(kind.escape());
        // `log` writes its arguments to the service's log, which would take
        // the root password hash there.
        registry.unregister_helper("log");
        registry.register_helper("join", Box::new(join));
        if kind == TemplateKind::Preseed {
            registry.register_helper("shell", Box::new(shell_word));
        }
        registry
            .register_template_string(name, source)
            .map_err(|error| {
                let (line, column) = error.pos().unwrap_or((0, 0));
                TemplateError::Syntax {
                    template: name.to_owned(),
                    line,
                    column,
                    reason: error.reason().to_string(),
                }
            })?;

        let template = Self {
            name: name.to_owned(),
            kind,
            registry,
        };
        for sample in sample_contexts() {
            template.render(&sample)?;
        }
        Ok(template)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> TemplateKind {
        self.kind
    }

    /// Renders the template for one order and runs the format checks on the
    /// output again, because a check that passed for the samples can still
    /// fail for an order's values (for example a third DNS server).
    pub fn render(&self, context: &OrderContext) -> Result<String, TemplateError> {
        let data = TemplateData::new(context);
        let text = self
            .registry
            .render(&self.name, &data)
            .map_err(|error| self.render_error(&error))?;
        checks::check_output(&self.name, self.kind, &text)?;
        Ok(text)
    }

    /// Renders a [`TemplateKind::Container`] template and parses the spec.
    pub fn render_container_spec(
        &self,
        context: &OrderContext,
    ) -> Result<ContainerSpec, TemplateError> {
        ContainerSpec::from_json(&self.render(context)?)
    }

    fn render_error(&self, error: &handlebars::RenderError) -> TemplateError {
        let line = error.line_no.unwrap_or(0);
        let column = error.column_no.unwrap_or(0);
        match error.reason() {
            RenderErrorReason::MissingVariable(variable) => TemplateError::UnknownVariable {
                template: self.name.clone(),
                line,
                column,
                variable: variable.clone().unwrap_or_default(),
                known: known_variables().join(", "),
            },
            reason => TemplateError::Render {
                template: self.name.clone(),
                line,
                column,
                reason: reason.to_string(),
            },
        }
    }
}

/// Rejects the Handlebars forms that skip the escape function.
fn reject_unescaped(name: &str, source: &str) -> Result<(), TemplateError> {
    reject_constructs(name, source)?;
    for (index, line) in source.lines().enumerate() {
        let found = if line.contains("{{{") {
            Some("{{{…}}}")
        } else if line.contains("{{&") || line.contains("{{~&") {
            Some("{{&…}}")
        } else {
            None
        };
        if let Some(found) = found {
            return Err(TemplateError::UnescapedExpression {
                template: name.to_owned(),
                line: index + 1,
                found,
            });
        }
    }
    Ok(())
}

/// Rejects, over the whole source, what the line-based checks cannot see
/// and what could make one upload unbounded. An expression may not span
/// lines, since the placement and escaping checks read one line at a time.
/// Partials (`{{> p}}`, `{{#> p}}`, `{{#*inline}}`) and other decorators
/// (`{{* …}}`) are refused: a partial can call itself, and handlebars sets
/// no recursion limit.
fn reject_constructs(name: &str, source: &str) -> Result<(), TemplateError> {
    let reject = |offset: usize, problem: &'static str| TemplateError::ForbiddenConstruct {
        template: name.to_owned(),
        line: source[..offset].matches('\n').count() + 1,
        problem,
    };
    let mut rest = source;
    let mut offset = 0;
    while let Some(start) = rest.find("{{") {
        let open = offset + start;
        let after = &source[open + 2..];
        // Comments may span lines; `{{!-- … --}}` may also contain `}}`.
        let comment_end = if after.trim_start_matches('~').starts_with("!--") {
            after.find("--}}").map(|end| end + 2)
        } else if after.trim_start_matches('~').starts_with('!') {
            after.find("}}")
        } else {
            None
        };
        if let Some(end) = comment_end {
            offset = open + 2 + end + 2;
            rest = &source[offset..];
            continue;
        }
        let Some(end) = after.find("}}") else {
            break;
        };
        let inner = &after[..end];
        if inner.contains('\n') {
            return Err(reject(
                open,
                "an expression spans lines; open and close every {{…}} on one line",
            ));
        }
        let tag = inner.trim_start_matches(['{', '~']).trim_start();
        let tag = tag.strip_prefix('#').unwrap_or(tag).trim_start();
        if tag.starts_with('>') {
            return Err(reject(
                open,
                "partials ({{> name}}) are not supported; write the text where it is needed",
            ));
        }
        if tag.starts_with('*') {
            return Err(reject(
                open,
                "inline partials and decorators ({{#*inline}}, {{* …}}) are not supported; write the text where it is needed",
            ));
        }
        offset = open + 2 + end + 2;
        rest = &source[offset..];
    }
    Ok(())
}

/// Lists the dotted path of every value a template can use, taken from the
/// sample order with IPv6 so that the optional values are listed too.
fn known_variables() -> Vec<String> {
    fn walk(prefix: &str, value: &Value, output: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (key, child) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, output);
                }
            }
            Value::Array(_) => output.push(format!("{prefix} (list)")),
            _ => output.push(prefix.to_owned()),
        }
    }
    let [sample, _] = sample_contexts();
    let mut output = Vec::new();
    if let Ok(value) = serde_json::to_value(TemplateData::new(&sample)) {
        walk("", &value, &mut output);
    }
    output
}

/// `Hello world!` hashed with salt `saltstring` (the first SHA-512 test
/// vector in [`crate::crypt`]), so samples render the same every time.
const SAMPLE_PASSWORD_HASH: &str = "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1";

/// Builds the sample orders for upload checks and documentation. The first
/// has IPv6, two SSH keys and two DNS servers. The second has no IPv6 and one
/// key and one DNS server.
pub fn sample_contexts() -> [OrderContext; 2] {
    let with_ipv6 = sample_input(true);
    let without_ipv6 = sample_input(false);
    [with_ipv6, without_ipv6].map(|input| {
        OrderContext::new(input)
            .and_then(|context| context.with_root_password_hash(SAMPLE_PASSWORD_HASH))
            .expect("the sample order is valid")
    })
}

/// Returns the unchecked input behind [`sample_contexts`], for tests that
/// change one field.
pub fn sample_input(with_ipv6: bool) -> OrderContextInput {
    let mut keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGm0nT8Y1Mq0Sx7xAjvJNbBhhOZ7Ji6XmfQm6T8kQfVp customer@laptop".to_owned(),
    ];
    if with_ipv6 {
        keys.push("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 ops@rackhand".to_owned());
    }
    let mut dns_servers = vec!["192.0.2.53".parse().expect("literal address")];
    if with_ipv6 {
        dns_servers.push("2001:db8::53".parse().expect("literal address"));
    }

    OrderContextInput {
        hostname: "web1".to_owned(),
        domain: "example.net".to_owned(),
        instance_id: "5f0c6c3e-8f7b-4d0e-9a51-0b1f4b8d2c11".to_owned(),
        root_password: "sample-password".to_owned(),
        ssh_authorized_keys: keys,
        network: NetworkSettings {
            mac: "52:54:00:12:34:56".to_owned(),
            interface_name: "eth0".to_owned(),
            ipv4: Ipv4Settings {
                address: "192.0.2.10".parse().expect("literal address"),
                prefix_len: 24,
                gateway: "192.0.2.1".parse().expect("literal address"),
            },
            ipv6: with_ipv6.then(|| Ipv6Settings {
                address: "2001:db8::10".parse().expect("literal address"),
                prefix_len: 64,
                gateway: "2001:db8::1".parse().expect("literal address"),
            }),
            dns_servers,
        },
        image: ImageInfo {
            name: "rocky-9.4".to_owned(),
            os_family: OsFamily::Rhel,
            version: "9.4".to_owned(),
            repository_url: "https://mirror.example.net/rocky/9.4/BaseOS/x86_64/os/".to_owned(),
        },
        callback_url: "https://agent.example.net/callback/5f0c6c3e?token=abc123".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preseed_escape_removes_line_breaks() {
        assert_eq!(strip_controls("a\nb\rc\u{85}d"), "a b c d");
    }

    #[test]
    fn known_variables_include_optional_ipv6() {
        let known = known_variables();
        assert!(known.contains(&"network.ipv6.cidr".to_owned()), "{known:?}");
        assert!(
            known.contains(&"ssh_authorized_keys (list)".to_owned()),
            "{known:?}"
        );
    }
}
