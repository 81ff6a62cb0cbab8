//! Format checks on rendered operator templates.
//!
//! This crate has no YAML parser, so YAML output gets `lint_yaml`, a line
//! check of the block-style subset that cloud-init documents use. JSON
//! output is parsed with `serde_json`.

use serde_json::Value;

use crate::TemplateError;
use crate::container::ContainerSpec;
use crate::operator::TemplateKind;
use crate::yaml_lint::{lint_yaml, strip_comment};

/// Runs the checks for `kind` on rendered `text`:
///
/// - cloud-config: the first line is exactly `#cloud-config`, and the rest
///   passes `lint_yaml` (described there).
/// - meta-data: a JSON object (when the text starts with `{`) or YAML
///   passing `lint_yaml`, with a top-level `instance-id`.
/// - network-config: JSON or linted YAML with `version: 2` at the top level
///   or directly under a top-level `network:` key.
/// - OpenStack meta_data.json: a JSON object with a string `uuid`.
/// - OpenStack network_data.json: a JSON object with `links` and `networks`
///   lists, where every network's `link` names a link `id`.
/// - kickstart: see [`check_kickstart`].
/// - preseed: see [`check_preseed`].
/// - container spec: JSON that [`ContainerSpec::from_json`] accepts.
///
/// Before these, every kind gets the character check of
/// [`check_source_characters`], reported on the rendered line.
pub fn check_output(template: &str, kind: TemplateKind, text: &str) -> Result<(), TemplateError> {
    let fail = Failure { template, kind };
    if let Some(bad) = find_bad_character(text) {
        let problem = format!("column {}: {}", bad.column, bad.problem);
        return Err(fail.line(text, bad.line, &problem));
    }
    match kind {
        TemplateKind::CloudConfig => {
            let first = text.lines().next().unwrap_or_default();
            if first.trim_end() != "#cloud-config" {
                return Err(fail.at(1, first, "the first line must be exactly #cloud-config"));
            }
            // cloud-init reads user-data as one YAML document.
            if let Some((index, line)) = text.lines().enumerate().find(|(_, line)| {
                let line = line.trim_end();
                line == "---" || line == "..." || line.starts_with("--- ")
            }) {
                return Err(fail.at(
                    index + 1,
                    line,
                    "a document marker starts a second YAML document, which cloud-init does not read; remove it",
                ));
            }
            lint_yaml(text, 2)
                .map(|_| ())
                .map_err(|(line, problem)| fail.line(text, line, &problem))
        }
        TemplateKind::MetaData => {
            let keys = yaml_or_json_keys(&fail, text)?;
            if keys.iter().any(|(key, _)| key == "instance-id") {
                Ok(())
            } else {
                Err(fail.missing("add a top-level instance-id key"))
            }
        }
        TemplateKind::NetworkConfig => check_network_config(&fail, text),
        TemplateKind::OpenStackMetaData => {
            let value = parse_json(&fail, text)?;
            if value.get("uuid").is_some_and(Value::is_string) {
                Ok(())
            } else {
                Err(fail.missing("add a string uuid key with the instance id"))
            }
        }
        TemplateKind::OpenStackNetworkData => check_network_data(&fail, text),
        TemplateKind::Kickstart => check_kickstart(&fail, text),
        TemplateKind::Preseed => check_preseed(&fail, text),
        TemplateKind::Container => ContainerSpec::from_json(text).map(|_| ()),
    }
}

/// Rejects a template source that starts with a UTF-8 byte-order mark or
/// contains a control character other than tab, line feed and carriage
/// return. No template format needs them, and installers read them
/// inconsistently. A NUL, for example, ends a C string early.
pub fn check_source_characters(template: &str, source: &str) -> Result<(), TemplateError> {
    match find_bad_character(source) {
        Some(bad) => Err(TemplateError::Syntax {
            template: template.to_owned(),
            line: bad.line,
            column: bad.column,
            reason: bad.problem,
        }),
        None => Ok(()),
    }
}

/// A character that [`find_bad_character`] rejects, with its 1-based line
/// and column (counted in characters).
struct BadCharacter {
    line: usize,
    column: usize,
    problem: String,
}

fn find_bad_character(text: &str) -> Option<BadCharacter> {
    if text.starts_with('\u{feff}') {
        return Some(BadCharacter {
            line: 1,
            column: 1,
            problem: "the text starts with a UTF-8 byte-order mark (U+FEFF); remove the byte-order mark, for example by saving the file as UTF-8 without BOM".to_owned(),
        });
    }
    for (index, line) in text.lines().enumerate() {
        let found = line
            .chars()
            .enumerate()
            .find(|(_, c)| c.is_control() && !matches!(c, '\t' | '\r'));
        if let Some((column, c)) = found {
            return Some(BadCharacter {
                line: index + 1,
                column: column + 1,
                problem: format!(
                    "control character U+{:04X} is not allowed; remove it, because tab, line feed and carriage return are the only control characters a template may contain",
                    u32::from(c)
                ),
            });
        }
    }
    None
}

struct Failure<'a> {
    template: &'a str,
    kind: TemplateKind,
}

impl Failure<'_> {
    fn at(&self, line: usize, text: &str, problem: &str) -> TemplateError {
        TemplateError::Format {
            template: self.template.to_owned(),
            kind: self.kind.name(),
            line,
            text: redact_hashes(text).chars().take(120).collect(),
            problem: problem.to_owned(),
        }
    }

    fn line(&self, document: &str, line: usize, problem: &str) -> TemplateError {
        let text = document
            .lines()
            .nth(line.saturating_sub(1))
            .unwrap_or_default();
        self.at(line, text, problem)
    }

    fn missing(&self, problem: &str) -> TemplateError {
        TemplateError::Missing {
            template: self.template.to_owned(),
            kind: self.kind.name(),
            problem: problem.to_owned(),
        }
    }
}

fn parse_json(fail: &Failure<'_>, text: &str) -> Result<Value, TemplateError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| fail.line(text, error.line(), &format!("invalid JSON: {error}")))?;
    if value.is_object() {
        Ok(value)
    } else {
        Err(fail.missing("the document must be a JSON object"))
    }
}

/// Top-level keys with their value text, from JSON or linted YAML.
fn yaml_or_json_keys(
    fail: &Failure<'_>,
    text: &str,
) -> Result<Vec<(String, String)>, TemplateError> {
    if text.trim_start().starts_with('{') {
        let value = parse_json(fail, text)?;
        let map = value.as_object().map(|map| {
            map.iter()
                .map(|(key, value)| (key.clone(), value.to_string()))
                .collect()
        });
        return Ok(map.unwrap_or_default());
    }
    lint_yaml(text, 1).map_err(|(line, problem)| fail.line(text, line, &problem))
}

fn check_network_config(fail: &Failure<'_>, text: &str) -> Result<(), TemplateError> {
    if text.trim_start().starts_with('{') {
        let value = parse_json(fail, text)?;
        let version = value
            .get("network")
            .and_then(|network| network.get("version"))
            .or_else(|| value.get("version"));
        return if version == Some(&Value::from(2)) {
            Ok(())
        } else {
            Err(fail.missing("set \"version\": 2 at the top level or inside \"network\""))
        };
    }

    let keys = lint_yaml(text, 1).map_err(|(line, problem)| fail.line(text, line, &problem))?;
    let top_level = keys
        .iter()
        .any(|(key, value)| key == "version" && value == "2");
    let nested = keys.iter().any(|(key, _)| key == "network")
        && text.lines().any(|line| {
            let trimmed = line.trim_start();
            line.len() > trimmed.len() && strip_comment(trimmed).trim_end() == "version: 2"
        });
    if top_level || nested {
        Ok(())
    } else {
        Err(fail.missing("set version: 2 at the top level or under network:"))
    }
}

fn check_network_data(fail: &Failure<'_>, text: &str) -> Result<(), TemplateError> {
    let value = parse_json(fail, text)?;
    let (Some(links), Some(networks)) = (
        value.get("links").and_then(Value::as_array),
        value.get("networks").and_then(Value::as_array),
    ) else {
        return Err(fail.missing("give \"links\" and \"networks\" lists"));
    };
    let link_ids: Vec<&str> = links
        .iter()
        .filter_map(|link| link.get("id").and_then(Value::as_str))
        .collect();
    for network in networks {
        let id = network.get("id").and_then(Value::as_str);
        let kind = network.get("type").and_then(Value::as_str);
        let link = network.get("link").and_then(Value::as_str);
        let (Some(id), Some(_), Some(link)) = (id, kind, link) else {
            return Err(
                fail.missing("give every network string \"id\", \"type\" and \"link\" keys")
            );
        };
        if !link_ids.contains(&link) {
            return Err(fail.missing(&format!(
                "network {id:?} names link {link:?}, but no entry of \"links\" has that id"
            )));
        }
    }
    Ok(())
}

/// Checks kickstart text:
///
/// - every `%section` (`%packages`, `%pre`, `%post`, `%addon`, `%anaconda`,
///   `%onerror`) ends with `%end` before the next one opens;
/// - the command section has `network`, `rootpw --iscrypted`, `bootloader`,
///   an install source (`url`, `cdrom`, `nfs`, `harddrive`, `liveimg` or
///   `ostreesetup`) and partitioning (`autopart`, `part` or `reqpart`);
/// - a `%post` section exists for the callback.
///
/// `rootpw` without `--iscrypted` or with `--plaintext` is rejected, because
/// the plain password must never appear in a rendered file.
fn check_kickstart(fail: &Failure<'_>, text: &str) -> Result<(), TemplateError> {
    let mut open_section: Option<(usize, &str)> = None;
    let mut commands: Vec<&str> = Vec::new();
    let mut has_post = false;

    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = line.trim();
        let word = trimmed.split_whitespace().next().unwrap_or_default();
        if word == "%end" {
            if open_section.take().is_none() {
                return Err(fail.at(
                    number,
                    line,
                    "%end without an open section; remove it or open a section",
                ));
            }
            continue;
        }
        if word.starts_with('%') && !word.starts_with("%include") && !word.starts_with("%ksappend")
        {
            if let Some((start, name)) = open_section {
                return Err(fail.at(
                    start,
                    name,
                    "section is not closed; add %end before the next section",
                ));
            }
            has_post |= word == "%post";
            open_section = Some((number, line));
            continue;
        }
        if open_section.is_some() || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if word == "rootpw" {
            let words: Vec<&str> = trimmed.split_whitespace().collect();
            if !words.contains(&"--iscrypted") || words.contains(&"--plaintext") {
                return Err(fail.at(number, "rootpw …", "use rootpw --iscrypted {{root_password_hash}}; a plain password must not be written"));
            }
        }
        // `user --password` and `sshpw` take plain text unless marked
        // crypted, and the served file is readable with the boot's token.
        let words: Vec<&str> = trimmed.split_whitespace().collect();
        let plain_user = word == "user"
            && words.iter().any(|w| w.starts_with("--password"))
            && !words.contains(&"--iscrypted");
        let plain_sshpw = word == "sshpw" && !words.contains(&"--iscrypted");
        if plain_user || plain_sshpw {
            return Err(fail.at(
                number,
                word,
                "add --iscrypted and give a crypt hash (mkpasswd -m sha-512); a plain password must not be written",
            ));
        }
        commands.push(word);
    }
    if let Some((start, name)) = open_section {
        return Err(fail.at(start, name, "section is not closed; add %end"));
    }

    let required: [(&[&str], &str); 5] = [
        (&["network"], "add a network command"),
        (&["rootpw"], "add rootpw --iscrypted {{root_password_hash}}"),
        (&["bootloader"], "add a bootloader command"),
        (
            &["url", "cdrom", "nfs", "harddrive", "liveimg", "ostreesetup"],
            "add an install source such as url --url={{image.repository_url}}",
        ),
        (
            &["autopart", "part", "reqpart"],
            "add partitioning such as clearpart --all and autopart",
        ),
    ];
    for (names, fix) in required {
        if !names.iter().any(|name| commands.contains(name)) {
            return Err(fail.missing(fix));
        }
    }
    if !has_post {
        return Err(fail.missing("add a %post section that calls {{callback_url}}"));
    }
    Ok(())
}

/// Value types that debconf accepts in a preseed line.
const PRESEED_TYPES: [&str; 9] = [
    "string",
    "boolean",
    "select",
    "multiselect",
    "note",
    "password",
    "text",
    "title",
    "error",
];

/// Checks preseed text. Lines ending in `\` are joined first. Every line
/// that is not blank or a `#` comment must be `owner question type [value]`,
/// with an owner without `/`, a question containing `/` and a debconf type.
/// The plain-text `passwd/root-password` and `passwd/root-password-again`
/// questions are rejected in favour of `passwd/root-password-crypted`, and
/// `passwd/user-password(-again)` in favour of
/// `passwd/user-password-crypted`.
fn check_preseed(fail: &Failure<'_>, text: &str) -> Result<(), TemplateError> {
    let mut logical = String::new();
    let mut start = 0;
    for (index, line) in text.lines().enumerate() {
        if logical.is_empty() {
            start = index + 1;
        }
        if let Some(head) = line.strip_suffix('\\') {
            logical.push_str(head);
            continue;
        }
        logical.push_str(line);
        check_preseed_line(fail, start, &logical)?;
        logical.clear();
    }
    if !logical.is_empty() {
        return Err(fail.at(
            start,
            &logical,
            "the last line ends with \\ but nothing follows",
        ));
    }
    Ok(())
}

fn check_preseed_line(fail: &Failure<'_>, number: usize, line: &str) -> Result<(), TemplateError> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(());
    }
    let mut fields = trimmed.split_whitespace();
    let owner = fields.next().unwrap_or_default();
    let question = fields.next().unwrap_or_default();
    let kind = fields.next().unwrap_or_default();
    if owner.contains('/') || !question.contains('/') || !PRESEED_TYPES.contains(&kind) {
        return Err(fail.at(
            number,
            line,
            "write owner question type value, e.g. d-i netcfg/get_hostname string {{hostname}}",
        ));
    }
    if matches!(
        question,
        "passwd/root-password" | "passwd/root-password-again"
    ) {
        return Err(fail.at(
            number,
            question,
            "use passwd/root-password-crypted password {{root_password_hash}}; a plain password must not be written",
        ));
    }
    // The served file is readable by anyone on the provisioning network
    // who has the boot's token, so no account gets a plain password.
    if matches!(
        question,
        "passwd/user-password" | "passwd/user-password-again"
    ) {
        return Err(fail.at(
            number,
            question,
            "use passwd/user-password-crypted password with a crypt hash (mkpasswd -m sha-512); a plain password must not be written",
        ));
    }
    Ok(())
}

/// Replaces each `$6$…` word with `[redacted hash]`, so an error about a
/// line that contains the root password hash does not carry it into logs.
fn redact_hashes(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("$6$") {
        output.push_str(&rest[..start]);
        output.push_str("[redacted hash]");
        let after = &rest[start..];
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | ','))
            .unwrap_or(after.len());
        rest = &after[end..];
    }
    output.push_str(rest);
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_in_output_is_rejected_with_line_and_column() {
        let error = check_output("t", TemplateKind::CloudConfig, "#cloud-config\nx: 1\0\n")
            .expect_err("a NUL must be rejected");
        let message = error.to_string();
        assert!(message.contains("rendered line 2"), "{message}");
        assert!(message.contains("column 5"), "{message}");
        assert!(message.contains("U+0000"), "{message}");
    }

    #[test]
    fn control_character_is_rejected_for_every_kind() {
        let kinds = [
            TemplateKind::CloudConfig,
            TemplateKind::MetaData,
            TemplateKind::NetworkConfig,
            TemplateKind::OpenStackMetaData,
            TemplateKind::OpenStackNetworkData,
            TemplateKind::Kickstart,
            TemplateKind::Preseed,
            TemplateKind::Container,
        ];
        for kind in kinds {
            let error = check_output("t", kind, "a\u{1b}b\n").expect_err("ESC must be rejected");
            let message = error.to_string();
            assert!(message.contains("U+001B"), "{kind}: {message}");
        }
    }

    #[test]
    fn tab_and_crlf_pass_the_character_check() {
        assert!(find_bad_character("a\tb\r\nc\n").is_none());
    }

    #[test]
    fn source_nul_names_line_and_column() {
        let error = check_source_characters("rack", "#cloud-config\nx: 1\0\n")
            .expect_err("a NUL must be rejected");
        assert_eq!(
            error.to_string(),
            "template \"rack\" line 2, column 5: control character U+0000 is not allowed; remove it, because tab, line feed and carriage return are the only control characters a template may contain"
        );
    }

    #[test]
    fn source_byte_order_mark_is_rejected() {
        let error = check_source_characters("rack", "\u{feff}#cloud-config\n")
            .expect_err("a byte-order mark must be rejected");
        let message = error.to_string();
        assert!(message.contains("line 1, column 1"), "{message}");
        assert!(message.contains("remove the byte-order mark"), "{message}");
    }

    #[test]
    fn second_cloud_config_document_is_rejected() {
        let text = "#cloud-config\nhostname: a\n---\nruncmd: [reboot]\n";

        let error = check_output("cc", TemplateKind::CloudConfig, text).expect_err("two documents");

        assert!(
            error.to_string().contains("second YAML document"),
            "{error}"
        );
    }

    #[test]
    fn plain_kickstart_user_password_is_rejected() {
        for line in [
            "user --name=admin --password=Secret123",
            "sshpw --username=root Secret123",
        ] {
            let text = format!("{line}\n");

            let error = check_output("ks", TemplateKind::Kickstart, &text).expect_err(line);

            assert!(error.to_string().contains("--iscrypted"), "{line}: {error}");
        }
    }

    #[test]
    fn plain_user_password_in_preseed_is_rejected() {
        let text = "d-i passwd/user-password password secret\n";

        let error = check_output("ps", TemplateKind::Preseed, text).expect_err("plain password");

        assert!(
            error.to_string().contains("passwd/user-password-crypted"),
            "{error}"
        );
    }

    #[test]
    fn hash_is_redacted_from_error_text() {
        let line = "d-i passwd/root-password-crypted passwd $6$salt$abcdef tail";
        assert_eq!(
            redact_hashes(line),
            "d-i passwd/root-password-crypted passwd [redacted hash] tail"
        );
    }
}
