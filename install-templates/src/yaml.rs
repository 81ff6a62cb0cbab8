//! A small YAML writer for the fixed documents this crate renders, and the
//! quoting rules shared with operator templates.
//!
//! Every string is written as a double-quoted scalar, so no value can start
//! a comment, a mapping, an alias or a new line of the document.

use serde_json::Value;

/// Quotes `value` as a YAML double-quoted scalar.
///
/// Control characters, DEL, the C1 range, U+2028/U+2029 (YAML 1.1 line
/// breaks) and U+FEFF are written as `\uXXXX`. The result is also a valid
/// JSON string, which the tests use to check it.
pub fn quote_scalar(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for character in value.chars() {
        match character {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                quoted.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Writes `value` as a block-style YAML document ending in a newline.
///
/// Objects keep their key order (serde_json's `preserve_order` is off in
/// this workspace, so keys come out sorted). Keys made of ASCII letters,
/// digits, `_` and `-` are written plain and all other keys quoted.
pub fn to_yaml(value: &Value) -> String {
    let mut output = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_mapping(&mut output, map, 0),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut output, items, 0),
        other => {
            output.push_str(&inline(other));
            output.push('\n');
        }
    }
    output
}

fn write_mapping(output: &mut String, map: &serde_json::Map<String, Value>, indent: usize) {
    for (key, value) in map {
        output.push_str(&" ".repeat(indent));
        output.push_str(&key_text(key));
        output.push(':');
        write_value_after_marker(output, value, indent + 2);
    }
}

fn write_sequence(output: &mut String, items: &[Value], indent: usize) {
    for item in items {
        output.push_str(&" ".repeat(indent));
        output.push('-');
        match item {
            // A mapping inside a sequence starts on the dash's line and its
            // other keys line up under the first one.
            Value::Object(map) if !map.is_empty() => {
                let mut nested = String::new();
                write_mapping(&mut nested, map, indent + 2);
                output.push(' ');
                output.push_str(nested.trim_start_matches(' '));
            }
            other => write_value_after_marker(output, other, indent + 2),
        }
    }
}

fn write_value_after_marker(output: &mut String, value: &Value, indent: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            output.push('\n');
            write_mapping(output, map, indent);
        }
        Value::Array(items) if !items.is_empty() => {
            output.push('\n');
            write_sequence(output, items, indent);
        }
        other => {
            output.push(' ');
            output.push_str(&inline(other));
            output.push('\n');
        }
    }
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => quote_scalar(text),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

fn key_text(key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !matches!(key, "true" | "false" | "null" | "yes" | "no" | "on" | "off")
        && key.parse::<f64>().is_err();
    if plain {
        key.to_owned()
    } else {
        quote_scalar(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn quoted_scalar_reads_back_as_json() {
        let hostile = [
            "plain",
            "a\"b",
            "back\\slash",
            "new\nline: injected",
            "# comment",
            "key: value",
            "&anchor *alias !tag",
            "$(reboot) `id`",
            "tab\tand\rreturn\u{7f}\u{85}\u{2028}",
        ];
        for value in hostile {
            let quoted = quote_scalar(value);
            let back: String = serde_json::from_str(&quoted).expect("quoted scalar is JSON");
            assert_eq!(back, value);
        }
    }

    #[test]
    fn quoted_scalar_stays_on_one_line() {
        let quoted = quote_scalar("a\nb\rc\u{2028}d");
        assert!(!quoted.contains(['\n', '\r', '\u{2028}']), "{quoted}");
    }

    #[test]
    fn nested_document_layout() {
        let document = json!({
            "version": 2,
            "ethernets": {"id0": {"addresses": ["192.0.2.10/24"], "dhcp4": false}},
            "list": [{"a": 1, "b": "x"}, "y", []],
            "empty": {},
        });
        let expected = "empty: {}\n\
ethernets:\n  id0:\n    addresses:\n      - \"192.0.2.10/24\"\n    dhcp4: false\n\
list:\n  - a: 1\n    b: \"x\"\n  - \"y\"\n  - []\n\
version: 2\n";
        assert_eq!(to_yaml(&document), expected);
    }

    #[test]
    fn ambiguous_keys_are_quoted() {
        let document = json!({"yes": 1, "10": 2, "a b": 3});
        assert_eq!(to_yaml(&document), "\"10\": 2\n\"a b\": 3\n\"yes\": 1\n");
    }
}
