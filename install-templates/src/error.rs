//! Errors of context checks, rendering and template upload.

use std::path::PathBuf;

/// Every failure of this crate. Messages name the field or template, the
/// place and the fix; none of them contains the root password or its hash.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidContext {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("the root password is empty: give the customer's password")]
    EmptyRootPassword,

    #[error("the root password hash is not a $6$ SHA-512-crypt hash")]
    InvalidRootPasswordHash,

    #[error("the operating system's random source failed while making a password salt")]
    RandomUnavailable,

    #[error("template {template:?} line {line}, column {column}: {reason}")]
    Syntax {
        template: String,
        line: usize,
        column: usize,
        reason: String,
    },

    #[error(
        "template {template:?} line {line}: {found} writes a value without escaping; use {{{{name}}}} so the value is quoted for the format"
    )]
    UnescapedExpression {
        template: String,
        line: usize,
        found: &'static str,
    },

    #[error("template {template:?} line {line}: {problem}")]
    ForbiddenConstruct {
        template: String,
        line: usize,
        problem: &'static str,
    },

    #[error(
        "template {template:?} line {line}, column {column}: unknown variable {variable:?}; known variables are {known}"
    )]
    UnknownVariable {
        template: String,
        line: usize,
        column: usize,
        variable: String,
        known: String,
    },

    #[error("template {template:?} line {line}, column {column}: rendering failed: {reason}")]
    Render {
        template: String,
        line: usize,
        column: usize,
        reason: String,
    },

    #[error("template {template:?} ({kind}) rendered line {line} {text:?}: {problem}")]
    Format {
        template: String,
        kind: &'static str,
        line: usize,
        text: String,
        problem: String,
    },

    #[error("template {template:?} ({kind}) output: {problem}")]
    Missing {
        template: String,
        kind: &'static str,
        problem: String,
    },

    #[error("invalid container spec field {field} {value:?}: {reason}")]
    InvalidContainerSpec {
        field: String,
        value: String,
        reason: String,
    },

    #[error("the rendered container spec {problem} at line {line} column {column}: {reason}")]
    ContainerSpecJson {
        /// "is not valid JSON" or "has an invalid field".
        problem: &'static str,
        line: usize,
        column: usize,
        reason: String,
    },

    #[error("template {template:?} line {line}: {fix}")]
    ExpressionPlacement {
        template: String,
        line: usize,
        fix: &'static str,
    },

    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("running {tool} to build {path}")]
    IsoToolFailed {
        tool: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{tool} exited with {status} building {path}: {stderr}")]
    IsoToolExit {
        tool: &'static str,
        path: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}
