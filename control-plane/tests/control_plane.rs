//! The control plane's integration tests: the operator API and the Stripe
//! webhook driven through the router without a socket, the allocator under
//! a forced race, the job queue's leases, the network and handoff phases run
//! twice and failed midway, the e-mail outbox and the example configs.

#[path = "control_plane/agent_claims.rs"]
mod agent_claims;
#[path = "control_plane/allocate.rs"]
mod allocate;
#[path = "control_plane/api.rs"]
mod api;
#[path = "control_plane/billing.rs"]
mod billing;
#[path = "control_plane/cli.rs"]
mod cli;
#[path = "control_plane/config.rs"]
mod config;
#[path = "control_plane/console.rs"]
mod console;
#[path = "control_plane/harness.rs"]
mod harness;
#[path = "control_plane/image_library.rs"]
mod image_library;
#[path = "control_plane/inventory.rs"]
mod inventory;
#[path = "control_plane/jobs.rs"]
mod jobs;
#[path = "control_plane/mail.rs"]
mod mail;
#[path = "control_plane/node_ops.rs"]
mod node_ops;
#[path = "control_plane/phases.rs"]
mod phases;
#[path = "control_plane/seed_templates.rs"]
mod seed_templates;
#[path = "control_plane/templates.rs"]
mod templates;
