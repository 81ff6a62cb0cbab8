//! Rackhand's control plane: takes the payment, allocates a host, hands the
//! hardware phases to the site's agent, assigns the address and reverse DNS,
//! and hands the customer their credentials.
//!
//! Design note. Every paid order becomes one row in `jobs`, and the six
//! phases (`billing` → `allocate` → `driver` → `image` → `network` →
//! `handoff`) advance it. `billing` runs inside the webhook handler; the
//! workers in [`jobs::worker`] run the rest, handing `driver` and `image` to
//! the site agent through [`agents`]. All state lives in the database, each
//! phase is idempotent, and every side effect carries a correlation key
//! derived from the order's random uid and the phase, so a retry or a
//! restart after `kill -9` finds what an earlier attempt did instead of
//! doing it twice. The control plane never speaks DHCP or TFTP and never
//! drives a BMC itself.

pub mod activity;
pub mod agents;
pub mod api;
pub mod app;
pub mod billing;
pub mod config;
pub mod console;
pub mod db;
pub mod dns;
pub mod failpoint;
pub mod http_client;
pub mod install;
pub mod ipam;
pub mod jobs;
pub mod mail;
pub mod names;
pub mod operations;
pub mod orders;
pub mod phases;
pub mod pki;
pub mod seal;
pub mod server;
pub mod signatures;
pub mod telemetry;
