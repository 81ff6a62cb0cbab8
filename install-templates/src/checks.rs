//! Format checks on rendered operator templates.
//!
//! This crate has no YAML parser, so YAML output gets `lint_yaml`, a line
//! check of the block-style subset that cloud-init documents use. JSON
//! output is parsed with `serde_json`.

use serde_json::Value;

use crate::TemplateError;
use crate::container::ContainerSpec;
use crate::operator::TemplateKind;

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
pub fn check_output(template: &str, kind: TemplateKind, text: &str) -> Result<(), TemplateError> {
    let fail = Failure { template, kind };
    match kind {
        TemplateKind::CloudConfig => {
            let first = text.lines().next().unwrap_or_default();
            if first.trim_end() != "#cloud-config" {
                return Err(fail.at(1, first, "the first line must be exactly #cloud-config"));
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
/// questions are rejected in favour of `passwd/root-password-crypted`.
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

/// Removes a trailing ` #comment` outside quotes.
fn strip_comment(text: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (index, character) in text.char_indices() {
        match (quote, character) {
            (None, '"' | '\'') => quote = Some(character),
            (Some('"'), '\\') => {}
            (Some(open), c) if c == open && !(open == '"' && previous == '\\') => quote = None,
            (None, '#') if previous == ' ' || index == 0 => return &text[..index],
            _ => {}
        }
        previous = if previous == '\\' && character == '\\' {
            ' '
        } else {
            character
        };
    }
    text
}

/// Checks YAML text line by line, starting at line `first_line`, and returns
/// the top-level keys with their value text.
///
/// Accepted is block-style YAML: `key: value` and `key:` mappings, `- item`
/// sequences (also `- key: value`), quoted and plain scalars on one line,
/// flow collections (`[…]`, `{…}`) closed on their line, block scalars after
/// `|` or `>`, comments and one leading `---`.
///
/// Rejected, with the line number:
///
/// - tabs in indentation;
/// - a quoted scalar or flow collection not closed on its line;
/// - text after a closing quote;
/// - `: ` inside a plain value (an ambiguous nested mapping);
/// - indentation deeper than the line before allows, for example a plain
///   scalar continued on the next line;
/// - a dedent to a column that no enclosing block uses;
/// - a repeated top-level key.
///
/// Anchors, aliases and tags pass unchecked.
pub(crate) fn lint_yaml(
    text: &str,
    first_line: usize,
) -> Result<Vec<(String, String)>, (usize, String)> {
    let mut columns: Vec<usize> = vec![0];
    let mut expect_child = false;
    let mut block_scalar_column: Option<usize> = None;
    let mut seen_content = false;
    let mut top_level = Vec::new();

    for (index, raw) in text.lines().enumerate().skip(first_line - 1) {
        let number = index + 1;
        let indent = raw.len() - raw.trim_start_matches(' ').len();
        let body = strip_comment(&raw[indent..]).trim_end();

        if let Some(column) = block_scalar_column {
            if body.is_empty() || indent > column {
                continue;
            }
            block_scalar_column = None;
        }
        if raw[indent..].starts_with('\t') {
            return Err((
                number,
                "indent with spaces; YAML does not allow tabs in indentation".to_owned(),
            ));
        }
        if body.is_empty() {
            continue;
        }
        if body == "---" && !seen_content && indent == 0 {
            continue;
        }
        seen_content = true;

        // Structure: deeper only after `key:` or `- `, and back only to a
        // column an enclosing block used.
        let top = *columns.last().expect("the root column is never popped");
        if indent > top && !expect_child {
            return Err((number, "unexpected indentation; a value must stay on the line of its key, or use | for multi-line text".to_owned()));
        }
        if indent > top {
            columns.push(indent);
        }
        while columns.last().is_some_and(|&column| column > indent) {
            columns.pop();
        }
        if columns.last() != Some(&indent) {
            return Err((
                number,
                "indentation does not match any enclosing block; align it with its siblings"
                    .to_owned(),
            ));
        }

        // Sequence markers move the content column right.
        let mut column = indent;
        let mut content = body;
        while content == "-" || content.starts_with("- ") {
            let rest = content[1..].trim_start_matches(' ');
            column += content.len() - rest.len();
            content = rest;
            if !content.is_empty() {
                columns.push(column);
            }
        }
        if content.is_empty() {
            expect_child = true;
            continue;
        }

        let (key, value) = split_mapping(content).map_err(|problem| (number, problem))?;
        check_value(value).map_err(|problem| (number, problem))?;
        if value.starts_with('|') || value.starts_with('>') {
            block_scalar_column = Some(indent);
        }
        expect_child = key.is_some() && value.is_empty();

        if let Some(key) = key
            && column == 0
        {
            if top_level
                .iter()
                .any(|(seen, _): &(String, String)| *seen == key)
            {
                return Err((number, format!("duplicate top-level key {key:?}; keep one")));
            }
            top_level.push((key, value.to_owned()));
        }
    }
    Ok(top_level)
}

/// Splits `key: value` (or `key:`) and returns `None` as key for a plain
/// sequence item.
fn split_mapping(content: &str) -> Result<(Option<String>, &str), String> {
    if content.starts_with('"') || content.starts_with('\'') {
        let end = quoted_end(content).ok_or("close the quoted text on the same line")?;
        let after = content[end..].trim_start();
        return match after.strip_prefix(':') {
            Some(rest) if rest.is_empty() || rest.starts_with(' ') => {
                Ok((Some(unquote(&content[..end])), rest.trim_start()))
            }
            _ if after.is_empty() => Ok((None, content)),
            _ => Err("remove the text after the closing quote".to_owned()),
        };
    }
    if content.starts_with('[') || content.starts_with('{') {
        return Ok((None, content));
    }
    if let Some(key) = content.strip_suffix(':') {
        return Ok((Some(key.to_owned()), ""));
    }
    match content.split_once(": ") {
        Some((key, value)) => Ok((Some(key.to_owned()), value.trim_start())),
        None => Ok((None, content)),
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.starts_with('"') || value.starts_with('\'') {
        let end = quoted_end(value).ok_or("close the quoted text on the same line")?;
        if !value[end..].trim().is_empty() {
            return Err("remove the text after the closing quote".to_owned());
        }
        return Ok(());
    }
    if value.starts_with('[') || value.starts_with('{') {
        return check_flow(value);
    }
    if value.starts_with('|') || value.starts_with('>') {
        let indicator_valid = value[1..]
            .chars()
            .all(|c| matches!(c, '-' | '+') || c.is_ascii_digit());
        return if indicator_valid {
            Ok(())
        } else {
            Err("put block text on the lines after | or >".to_owned())
        };
    }
    if value.starts_with('@') || value.starts_with('`') {
        return Err("quote values that start with @ or `".to_owned());
    }
    if value.contains(": ") {
        return Err("quote this value, because ': ' inside it starts a nested mapping".to_owned());
    }
    Ok(())
}

/// Index just past the closing quote of a scalar starting at index 0.
fn quoted_end(text: &str) -> Option<usize> {
    let mut characters = text.char_indices();
    let (_, open) = characters.next()?;
    while let Some((index, character)) = characters.next() {
        if open == '"' && character == '\\' {
            characters.next();
        } else if character == open {
            if open == '\'' && text[index + 1..].starts_with('\'') {
                characters.next();
                continue;
            }
            return Some(index + 1);
        }
    }
    None
}

fn unquote(text: &str) -> String {
    if text.starts_with('"') {
        serde_json::from_str(text).unwrap_or_else(|_| text[1..text.len() - 1].to_owned())
    } else {
        text[1..text.len() - 1].replace("''", "'")
    }
}

/// Brackets of a flow collection balance on the line, outside quotes.
fn check_flow(value: &str) -> Result<(), String> {
    let mut depth: Vec<char> = Vec::new();
    let mut rest = value;
    while let Some(character) = rest.chars().next() {
        if character == '"' || character == '\'' {
            let end = quoted_end(rest).ok_or("close the quoted text on the same line")?;
            rest = &rest[end..];
            continue;
        }
        match character {
            '[' | '{' => depth.push(character),
            ']' | '}' => {
                let open = depth.pop();
                if open != Some(if character == ']' { '[' } else { '{' }) {
                    return Err(format!("unbalanced {character} in the flow collection"));
                }
                if depth.is_empty() && !rest[1..].trim().is_empty() {
                    return Err("remove the text after the closing bracket".to_owned());
                }
            }
            _ => {}
        }
        rest = &rest[character.len_utf8()..];
    }
    if depth.is_empty() {
        Ok(())
    } else {
        Err("close the flow collection on the same line".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_returns_top_level_keys() {
        let text = "---\n# comment\n\"quoted key\": 1\nlist: [a, \"b]\", {c: d}]\nnested:\n  child: x # note\ntext: |\n  line one\n\n  line: two\n";
        let keys = lint_yaml(text, 1).expect("document is accepted");
        let names: Vec<&str> = keys.iter().map(|(key, _)| key.as_str()).collect();
        assert_eq!(names, ["quoted key", "list", "nested", "text"]);
    }

    #[test]
    fn lint_accepts_sequence_of_mappings() {
        let text = "users:\n  - name: root\n    keys:\n      - \"a\"\n  - name: other\nnext: 1\n";
        assert!(lint_yaml(text, 1).is_ok());
    }

    #[test]
    fn lint_rejects_continued_plain_scalar() {
        let text = "key: first part\n  second part\n";
        assert_eq!(lint_yaml(text, 1).map_err(|(line, _)| line), Err(2));
    }

    #[test]
    fn lint_rejects_unclosed_flow() {
        let text = "list: [a, b\n";
        assert_eq!(lint_yaml(text, 1).map_err(|(line, _)| line), Err(1));
    }

    #[test]
    fn comment_inside_quotes_is_kept() {
        assert_eq!(strip_comment("a: \"x # y\" # z"), "a: \"x # y\" ");
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
