//! Operator-written boot scripts: a Handlebars template, set with
//! `pxe.boot_script_template`, that replaces the built-in script an armed
//! node gets (see [`rackhand_pxe::ipxe::boot_script`]).
//!
//! The template is checked when the agent loads its config. It must parse,
//! start with `#!ipxe`, and render with sample values in strict mode, so a
//! misspelt variable fails `check-config` instead of a boot. A variable used
//! only inside a branch that the sample values skip is checked when a boot
//! renders it. If it is unknown, that boot fails and the log names the file
//! and line.
//!
//! Values are inserted verbatim (no HTML escaping), and each is checked the
//! way the built-in script checks it: no line breaks, no `${`, and no
//! whitespace in URLs. The scripts for nodes without an armed boot, for
//! installed nodes and for Ironic's chain stay built in.

use std::path::{Path, PathBuf};

use handlebars::Handlebars;
use rackhand_pxe::ipxe::{self, IpxeError};
use serde::Serialize;

/// Name of the template inside the registry.
const NAME: &str = "boot";

/// The variables a boot script template can use.
#[derive(Debug, Clone, Serialize)]
pub struct ScriptValues {
    /// The kernel's URL on the agent.
    pub kernel_url: String,
    /// The initrd's URL on the agent.
    pub initrd_url: String,
    /// The initrd's name, which UEFI kernels need as `initrd=NAME`.
    pub initrd_name: String,
    /// The whole kernel command line: the image's arguments, then the
    /// agent's (`rackhand.callback=…` and the others).
    pub cmdline: String,
    /// The one-time callback URL, also contained in `cmdline`.
    pub callback_url: String,
    /// The boot HTTP server's base URL, such as `http://10.0.0.1:8080`.
    pub base_url: String,
    /// The node's boot MAC, colon-separated.
    pub mac: String,
    pub node: String,
    pub hostname: String,
    pub image: String,
    pub install_method: String,
}

impl ScriptValues {
    /// Checks every value the way the built-in script does.
    fn check(&self) -> Result<(), IpxeError> {
        for (field, url) in [
            ("kernel_url", &self.kernel_url),
            ("initrd_url", &self.initrd_url),
            ("callback_url", &self.callback_url),
            ("base_url", &self.base_url),
        ] {
            ipxe::check_word(field, url)?;
        }
        for (field, text) in [
            ("initrd_name", &self.initrd_name),
            ("cmdline", &self.cmdline),
            ("mac", &self.mac),
            ("node", &self.node),
            ("hostname", &self.hostname),
            ("image", &self.image),
            ("install_method", &self.install_method),
        ] {
            ipxe::check_text(field, text)?;
        }
        Ok(())
    }

    /// Values for the load-time check.
    fn sample() -> ScriptValues {
        ScriptValues {
            kernel_url: "http://10.0.0.1:8080/images/0/vmlinuz".to_string(),
            initrd_url: "http://10.0.0.1:8080/images/0/initrd.img".to_string(),
            initrd_name: "initrd.img".to_string(),
            cmdline: "console=ttyS0 rackhand.callback=http://10.0.0.1:8080/callback/0".to_string(),
            callback_url: "http://10.0.0.1:8080/callback/0".to_string(),
            base_url: "http://10.0.0.1:8080".to_string(),
            mac: "52:54:00:00:00:01".to_string(),
            node: "node-1".to_string(),
            hostname: "web-1".to_string(),
            image: "debian-12".to_string(),
            install_method: "live".to_string(),
        }
    }
}

/// An error that makes a template unusable or stops it rendering.
#[derive(Debug, thiserror::Error)]
pub enum ScriptTemplateError {
    #[error("cannot read boot script template {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("boot script template {}: {message}", path.display())]
    Template { path: PathBuf, message: String },

    #[error("boot script template {}: {source}", path.display())]
    Value { path: PathBuf, source: IpxeError },
}

/// A checked boot script template.
#[derive(Debug)]
pub struct ScriptTemplate {
    path: PathBuf,
    registry: Handlebars<'static>,
}

impl ScriptTemplate {
    /// Reads and checks the template at `path`.
    pub fn load(path: &Path) -> Result<ScriptTemplate, ScriptTemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScriptTemplateError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ScriptTemplate::parse(path, &text)
    }

    /// Checks `text` as the template read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<ScriptTemplate, ScriptTemplateError> {
        let template_error = |message: String| ScriptTemplateError::Template {
            path: path.to_path_buf(),
            message,
        };
        if !text.starts_with("#!ipxe") {
            return Err(template_error(
                "line 1 must be #!ipxe, or iPXE will not run the file as a script".to_string(),
            ));
        }
        let mut registry = Handlebars::new();
        registry.set_strict_mode(true);
        registry.register_escape_fn(handlebars::no_escape);
        // `log` would write the callback token into the agent's log.
        registry.unregister_helper("log");
        registry
            .register_template_string(NAME, text)
            .map_err(|error| template_error(error.to_string()))?;
        let template = ScriptTemplate {
            path: path.to_path_buf(),
            registry,
        };
        let sample = ScriptValues::sample();
        let rendered = template.render(&sample)?;
        // Without the callback URL the booted system cannot report, and
        // every order would wait out its callback timeout.
        if !rendered.contains(&sample.callback_url) {
            return Err(template_error(
                "passes no callback URL to the booted system; put {{cmdline}} on the kernel line (it carries rackhand.callback=) or use {{callback_url}}".to_string(),
            ));
        }
        Ok(template)
    }

    /// Renders the script for one boot.
    pub fn render(&self, values: &ScriptValues) -> Result<String, ScriptTemplateError> {
        values
            .check()
            .map_err(|source| ScriptTemplateError::Value {
                path: self.path.clone(),
                source,
            })?;
        self.registry
            .render(NAME, values)
            .map_err(|error| ScriptTemplateError::Template {
                path: self.path.clone(),
                message: render_message(&error),
            })
    }
}

/// Describes a render error with its line, and the variables on offer when
/// a variable is unknown.
fn render_message(error: &handlebars::RenderError) -> String {
    let place = match (error.line_no, error.column_no) {
        (Some(line), Some(column)) => format!("line {line}, column {column}: "),
        _ => String::new(),
    };
    let problem = match error.reason() {
        handlebars::RenderErrorReason::MissingVariable(Some(name)) => {
            format!("unknown variable {name:?}")
        }
        other => other.to_string(),
    };
    format!(
        "{place}{problem}; the variables are kernel_url, initrd_url, initrd_name, cmdline, callback_url, base_url, mac, node, hostname, image and install_method"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "#!ipxe\n\
        echo Booting {{node}} ({{mac}}) with {{image}}\n\
        kernel {{kernel_url}} initrd={{initrd_name}} {{cmdline}} || goto failed\n\
        initrd --name {{initrd_name}} {{initrd_url}} || goto failed\n\
        boot || goto failed\n\
        :failed\n\
        exit 1\n";

    fn path() -> &'static Path {
        Path::new("/etc/rackhand/boot.ipxe.hbs")
    }

    #[test]
    fn template_renders_values_verbatim() {
        let template = ScriptTemplate::parse(path(), GOOD).expect("valid template");
        let mut values = ScriptValues::sample();
        values.cmdline = "console=ttyS0 quiet a&b<c".to_string();

        let script = template.render(&values).expect("renders");

        assert!(script.starts_with("#!ipxe\necho Booting node-1 (52:54:00:00:00:01)"));
        assert!(
            script.contains("initrd=initrd.img console=ttyS0 quiet a&b<c || goto failed"),
            "{script}"
        );
    }

    #[test]
    fn misspelt_variable_fails_load_with_line() {
        let text = "#!ipxe\nkernel {{kernel_url}}\ninitrd {{initrd_ulr}}\nboot\n";

        let error = ScriptTemplate::parse(path(), text).expect_err("unknown variable");

        let message = error.to_string();
        assert!(message.contains("boot.ipxe.hbs"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(
            message.contains("line 3, column 8: unknown variable \"initrd_ulr\""),
            "{message}"
        );
        assert!(message.contains("the variables are"), "{message}");
    }

    #[test]
    fn syntax_error_fails_load() {
        let text = "#!ipxe\nkernel {{kernel_url}\n";

        let error = ScriptTemplate::parse(path(), text).expect_err("bad syntax");

        assert!(error.to_string().contains("boot.ipxe.hbs"), "{error}");
    }

    #[test]
    fn template_without_shebang_is_rejected() {
        let error =
            ScriptTemplate::parse(path(), "kernel {{kernel_url}}\n").expect_err("no shebang");

        assert!(error.to_string().contains("#!ipxe"), "{error}");
    }

    #[test]
    fn value_with_setting_expansion_is_rejected() {
        let template = ScriptTemplate::parse(path(), GOOD).expect("valid template");
        let mut values = ScriptValues::sample();
        values.cmdline = "root=${root-path}".to_string();

        let error = template.render(&values).expect_err("expansion");

        assert!(error.to_string().contains("cmdline"), "{error}");
    }

    #[test]
    fn unreadable_template_names_path() {
        let error = ScriptTemplate::load(Path::new("/nonexistent/boot.ipxe.hbs"))
            .expect_err("missing file");

        assert!(
            error.to_string().contains("/nonexistent/boot.ipxe.hbs"),
            "{error}"
        );
    }

    #[test]
    fn log_helper_is_rejected() {
        let text = "#!ipxe\n{{log callback_url}}\nkernel {{kernel_url}} {{cmdline}}\n";

        let error = ScriptTemplate::parse(path(), text).expect_err("log helper");

        assert!(error.to_string().contains("log"), "{error}");
    }

    #[test]
    fn template_without_callback_is_rejected() {
        let text = "#!ipxe\nkernel {{kernel_url}} console=ttyS0\ninitrd {{initrd_url}}\nboot\n";

        let error = ScriptTemplate::parse(path(), text).expect_err("no callback");

        assert!(error.to_string().contains("{{cmdline}}"), "{error}");
    }
}
