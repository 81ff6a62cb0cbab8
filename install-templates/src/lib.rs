//! Install templates rendered per order: cloud-init NoCloud, OpenStack
//! configdrive, kickstart, preseed and game-server container specs, plus
//! operator-supplied Handlebars templates checked on upload.
//!
//! # Design
//!
//! An [`OrderContext`] is built once per order from unchecked input. Building
//! it checks every field: hostname and domain are DNS labels, the MAC is six
//! hex octets, SSH keys are single OpenSSH lines, and URLs are http or https.
//! It also replaces the root password by its SHA-512-crypt hash, so the plain
//! password cannot reach a rendered file, an error or `Debug` output.
//!
//! The built-in renderers ([`nocloud`], [`configdrive`], [`kickstart`],
//! [`preseed`], [`container`]) build their documents in code: YAML through
//! the writer in [`yaml`], which double-quotes every string, JSON through
//! `serde_json`, and shell words through [`shell::quote`]. A value therefore
//! cannot add lines, keys or commands whatever characters it contains.
//!
//! Operator templates ([`operator`]) are Handlebars in strict mode whose
//! `{{expression}}` output is escaped for the template's format. Upload runs
//! them against sample contexts and checks the rendered text; see
//! [`operator::OperatorTemplate::validate`] for the exact checks.
//!
//! The control plane checks operator templates with
//! `OperatorTemplate::validate` when they are uploaded, and renders a
//! product's template per order for the image phase.
//!
//! TODO: the control plane accepts kickstart, preseed and cloud-config
//! templates only. Offer the configdrive and container renderers and the
//! meta-data, network-config and OpenStack template kinds to operators too.

pub mod checks;
pub mod configdrive;
pub mod container;
mod context;
pub mod crypt;
mod error;
pub mod kickstart;
pub mod nocloud;
pub mod operator;
mod placement;
pub mod preseed;
pub mod shell;
mod view;
pub mod yaml;
mod yaml_lint;

pub use context::{
    ImageInfo, Ipv4Settings, Ipv6Settings, NetworkSettings, OrderContext, OrderContextInput,
    OsFamily, check_ssh_key,
};
pub use error::TemplateError;

/// One rendered file, with its path relative to the root of the medium or
/// URL space it is served from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: String,
    pub contents: String,
}
