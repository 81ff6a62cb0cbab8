//! A line-by-line check of block-style YAML, used on rendered operator
//! templates because this crate has no YAML parser.

/// Removes a trailing ` #comment` outside quotes.
pub(crate) fn strip_comment(text: &str) -> &str {
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
}
