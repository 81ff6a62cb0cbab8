//! POSIX shell quoting for values placed in kickstart `%post` scripts,
//! kickstart command options and preseed `late_command`.

/// Quotes `value` as one POSIX shell word.
///
/// The value is wrapped in single quotes, inside which the shell expands
/// nothing, and each `'` becomes `'\''`. Kickstart's option parser
/// (Python `shlex` in POSIX mode) reads the same syntax.
pub fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for character in value.chars() {
        if character == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(character);
        }
    }
    quoted.push('\'');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn quoted_word_reaches_sh_unchanged() {
        let hostile = [
            "plain",
            "it's",
            "$(touch /tmp/rackhand-pwned)",
            "`id`; rm -rf /",
            "a\"b\\c",
            "line\nbreak",
            "*?[]{}~ # & | > <",
        ];
        for value in hostile {
            let script = format!("printf %s {}", quote(value));
            let output = Command::new("sh")
                .arg("-c")
                .arg(&script)
                .output()
                .expect("sh runs");
            assert_eq!(String::from_utf8_lossy(&output.stdout), value, "{script}");
        }
    }
}
