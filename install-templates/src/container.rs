//! Game-server container specs: a small checked structure (image,
//! environment, ports, named volumes, CPU and memory limits) rendered as a
//! Compose file for `docker compose` or `podman-compose`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::TemplateError;
use crate::yaml::to_yaml;

/// One game-server container. Operator templates of kind
/// [`crate::operator::TemplateKind::Container`] render this structure as
/// JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Compose service name: lowercase letters, digits, `_` and `-`.
    pub name: String,
    /// OCI image reference, e.g. `docker.io/itzg/minecraft-server:2024.6.1`.
    pub image: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    pub limits: ResourceLimits,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortMapping {
    pub host: u16,
    pub container: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// A named volume mounted into the container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// Volume name: lowercase letters, digits, `_` and `-`.
    pub source: String,
    /// Absolute path inside the container without `..` components.
    pub target: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceLimits {
    /// CPU limit in thousandths of a CPU, 1..=1,024,000.
    pub millicpus: u32,
    /// Memory limit in MiB, 16..=4,194,304.
    pub memory_mib: u64,
}

impl ContainerSpec {
    /// Parses and checks a spec from JSON.
    pub fn from_json(text: &str) -> Result<Self, TemplateError> {
        let spec: Self = serde_json::from_str(text).map_err(|error| json_error(&error))?;
        spec.check()?;
        Ok(spec)
    }

    /// Checks names, the image reference, ports, volumes and limits.
    pub fn check(&self) -> Result<(), TemplateError> {
        let fail = |field: &str, value: &str, reason: &str| TemplateError::InvalidContainerSpec {
            field: field.to_owned(),
            value: value.escape_debug().to_string(),
            reason: reason.to_owned(),
        };
        let simple_name = |text: &str| {
            (1..=63).contains(&text.len())
                && text.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
                })
        };

        if !simple_name(&self.name) {
            return Err(fail(
                "name",
                &self.name,
                "use 1 to 63 of a-z, 0-9, '_' and '-'",
            ));
        }
        if !image_valid(&self.image) {
            return Err(fail(
                "image",
                &self.image,
                "use an OCI image reference such as registry/name:tag of letters, digits and . _ - / : @ \
                 that starts with a lowercase letter or digit, ends with a letter or digit \
                 and contains no '..' or '//'",
            ));
        }

        for (key, value) in &self.env {
            let key_valid = key
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_uppercase() || b == b'_')
                && key
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if !key_valid {
                return Err(fail(
                    "env",
                    key,
                    "use names of A-Z, 0-9 and '_' not starting with a digit",
                ));
            }
            if value.chars().any(char::is_control) {
                return Err(fail(
                    &format!("env.{key}"),
                    value,
                    "remove control characters such as line breaks",
                ));
            }
        }

        let mut seen = BTreeSet::new();
        for port in &self.ports {
            if port.host == 0 || port.container == 0 {
                return Err(fail(
                    "ports",
                    &format!("{}:{}", port.host, port.container),
                    "use ports 1 to 65535",
                ));
            }
            if !seen.insert((port.host, port.protocol)) {
                return Err(fail(
                    "ports",
                    &port.host.to_string(),
                    "publish each host port once per protocol",
                ));
            }
        }

        for volume in &self.volumes {
            if !simple_name(&volume.source) {
                return Err(fail(
                    "volumes.source",
                    &volume.source,
                    "use 1 to 63 of a-z, 0-9, '_' and '-'",
                ));
            }
            let target_valid = volume.target.starts_with('/')
                && !volume.target.split('/').any(|part| part == "..")
                && !volume.target.chars().any(|c| c.is_control() || c == ':');
            if !target_valid {
                return Err(fail(
                    "volumes.target",
                    &volume.target,
                    "use an absolute path without '..' or ':'",
                ));
            }
        }

        if !(1..=1_024_000).contains(&self.limits.millicpus) {
            return Err(fail(
                "limits.millicpus",
                &self.limits.millicpus.to_string(),
                "use 1 to 1024000",
            ));
        }
        if !(16..=4_194_304).contains(&self.limits.memory_mib) {
            return Err(fail(
                "limits.memory_mib",
                &self.limits.memory_mib.to_string(),
                "use 16 to 4194304",
            ));
        }
        Ok(())
    }

    /// Renders the Compose file; the spec must have passed [`Self::check`].
    ///
    /// Compose interpolates `${VAR}` and `$VAR` in every value of the file
    /// and reads `$$` as one literal `$` (Compose specification,
    /// "Interpolation"), so each string that can contain `$` has it doubled.
    pub fn to_compose(&self) -> String {
        let ports: Vec<String> = self
            .ports
            .iter()
            .map(|port| {
                let protocol = match port.protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                format!("{}:{}/{protocol}", port.host, port.container)
            })
            .collect();
        let volumes: Vec<Value> = self
            .volumes
            .iter()
            .map(|volume| {
                json!({
                    "type": "volume",
                    "source": volume.source,
                    "target": compose_literal(&volume.target),
                    "read_only": volume.read_only,
                })
            })
            .collect();
        let named_volumes: serde_json::Map<String, Value> = self
            .volumes
            .iter()
            .map(|volume| (volume.source.clone(), json!({})))
            .collect();

        let environment: BTreeMap<&str, String> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), compose_literal(value)))
            .collect();
        let service = json!({
            "image": compose_literal(&self.image),
            "restart": "unless-stopped",
            "environment": environment,
            "ports": ports,
            "volumes": volumes,
            "cpus": format!("{}.{:03}", self.limits.millicpus / 1000, self.limits.millicpus % 1000),
            "mem_limit": format!("{}m", self.limits.memory_mib),
        });
        to_yaml(&json!({
            "services": {self.name.as_str(): service},
            "volumes": named_volumes,
        }))
    }
}

/// Escapes `$` for Compose interpolation.
fn compose_literal(text: &str) -> String {
    text.replace('$', "$$")
}

/// Checks an OCI image reference loosely: its characters, and a first and
/// last character that keep it from reading as a command-line option
/// (`--privileged`) or ending in a dangling separator.
fn image_valid(image: &str) -> bool {
    let bytes = image.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    image.len() <= 255
        && (first.is_ascii_lowercase() || first.is_ascii_digit())
        && last.is_ascii_alphanumeric()
        && !image.contains("..")
        && !image.contains("//")
        && bytes.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/' | b':' | b'@')
        })
}

/// Maps a parse failure to an error naming its place. serde_json's message
/// ends in the place already, so that suffix is dropped.
fn json_error(error: &serde_json::Error) -> TemplateError {
    let (line, column) = (error.line(), error.column());
    let message = error.to_string();
    let reason = message
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(&message)
        .to_owned();
    let problem = match error.classify() {
        serde_json::error::Category::Data => "has an invalid field",
        _ => "is not valid JSON",
    };
    TemplateError::ContainerSpecJson {
        problem,
        line,
        column,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "game".to_owned(),
            image: "docker.io/library/game:1.0".to_owned(),
            env: BTreeMap::new(),
            ports: Vec::new(),
            volumes: Vec::new(),
            limits: ResourceLimits {
                millicpus: 1000,
                memory_mib: 1024,
            },
        }
    }

    #[test]
    fn compose_escapes_dollar_in_env() {
        let mut spec = spec();
        spec.env
            .insert("MOTD".to_owned(), "home ${HOME} and $X".to_owned());
        spec.check().expect("the spec is valid");

        let compose = spec.to_compose();

        assert!(
            compose.contains(r#"MOTD: "home $${HOME} and $$X""#),
            "{compose}"
        );
    }

    #[test]
    fn compose_escapes_dollar_in_volume_target() {
        let mut spec = spec();
        spec.volumes.push(VolumeMount {
            source: "data".to_owned(),
            target: "/srv/$X".to_owned(),
            read_only: false,
        });
        spec.check().expect("the spec is valid");

        let compose = spec.to_compose();

        assert!(compose.contains(r#"target: "/srv/$$X""#), "{compose}");
    }

    #[test]
    fn option_like_image_is_rejected() {
        let mut spec = spec();
        spec.image = "--privileged".to_owned();

        let message = spec.check().expect_err("the image is invalid").to_string();

        assert!(message.contains("\"--privileged\""), "{message}");
        assert!(
            message.contains("starts with a lowercase letter or digit"),
            "{message}"
        );
    }

    #[test]
    fn malformed_images_are_rejected() {
        let cases = [
            "",
            "Docker.io/game",
            ".game",
            "game:",
            "game/",
            "registry/../game",
            "registry//game",
            "game$X",
            "game tag",
        ];
        for image in cases {
            assert!(!image_valid(image), "{image:?} passed");
        }
    }

    #[test]
    fn common_images_are_accepted() {
        let cases = [
            "game",
            "docker.io/itzg/minecraft-server:2024.6.1",
            "localhost:5000/game:latest",
            "ghcr.io/owner/game@sha256:0123abcd",
            "1password/connect:1.7",
        ];
        for image in cases {
            assert!(image_valid(image), "{image:?} failed");
        }
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let text = "{\"name\": \"game\", \"image\": \"\"web1\"\"}";

        let message = ContainerSpec::from_json(text)
            .expect_err("the JSON is invalid")
            .to_string();

        assert_eq!(
            message,
            "the rendered container spec is not valid JSON at line 1 column 29: expected `,` or `}`"
        );
    }

    #[test]
    fn unknown_field_says_invalid_field() {
        let text = r#"{"privileged": true}"#;

        let message = ContainerSpec::from_json(text)
            .expect_err("the field is unknown")
            .to_string();

        assert!(
            message.starts_with("the rendered container spec has an invalid field at line 1"),
            "{message}"
        );
        assert!(message.contains("privileged"), "{message}");
    }
}
