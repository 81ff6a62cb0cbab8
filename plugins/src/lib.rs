//! Panel provider plugins: how the `driver` phase provisions products that
//! live in a hosting panel (SolusVM 2, Virtualizor, Pterodactyl, cPanel/WHM)
//! instead of on bare metal.
//!
//! Design note. A provider is described by a plugin file (a flow graph of
//! HTTP calls, templated from the order, with each call's success and error
//! shapes) that the engine validates on load, runs step by step and reloads
//! when the file changes. Whatever runs the flow, the pipeline sees only the
//! [`Provider`] interface: `provision` with the order's correlation key, which
//! the plugin must send as the panel's external id (Pterodactyl
//! `external_id`, the WHM user name, …) and look up first, so a retry finds
//! the service the first attempt created instead of creating a second one.
//
// TODO: implement the flow-graph format, its validation and templating, the
// executor and hot reload, and ship the four providers as plugin files.

mod provider;

pub use provider::{Provider, ProviderError, ProvisionRequest, ProvisionedService};
