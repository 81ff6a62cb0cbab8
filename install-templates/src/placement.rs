//! Checks where a template places its `{{expression}}`s, for the formats
//! whose escaping holds only in some positions.
//!
//! A YAML-quoted value is safe as a whole scalar, but inside a block scalar
//! or a longer plain scalar its quotes become literal text, and cloud-init
//! passes `runcmd` strings to a shell. A preseed `*_command` line is a shell
//! command, so its values need `{{shell …}}`.

use crate::TemplateError;
use crate::operator::TemplateKind;

/// One output expression: its 1-based line, byte range in that line and the
/// text between the braces.
struct Expression<'a> {
    line: usize,
    start: usize,
    end: usize,
    inner: &'a str,
}

/// Runs the placement rule of `kind` on the template source.
pub(crate) fn check_placement(
    template: &str,
    kind: TemplateKind,
    source: &str,
) -> Result<(), TemplateError> {
    let rule = match kind {
        TemplateKind::CloudConfig | TemplateKind::MetaData | TemplateKind::NetworkConfig => {
            check_yaml_placement(source)
        }
        TemplateKind::Preseed => check_preseed_placement(source),
        _ => Ok(()),
    };
    rule.map_err(|(line, fix)| TemplateError::ExpressionPlacement {
        template: template.to_owned(),
        line,
        fix,
    })
}

/// Lists the expressions of `line` that write output; blocks (`{{#…}}`,
/// `{{/…}}`, `{{else}}`, `{{^…}}`) and comments (`{{!…}}`) are skipped.
fn output_expressions(number: usize, line: &str) -> Vec<Expression<'_>> {
    let mut found = Vec::new();
    let mut offset = 0;
    while let Some(open) = line[offset..].find("{{") {
        let start = offset + open;
        let Some(close) = line[start..].find("}}") else {
            break;
        };
        let end = start + close + 2;
        let inner = line[start + 2..end - 2].trim_matches(|c| c == '~' || c == ' ');
        let structural = inner.starts_with(['#', '/', '^', '!', '>']) || inner == "else";
        let escaped = start > 0 && line.as_bytes()[start - 1] == b'\\';
        if !structural && !escaped {
            found.push(Expression {
                line: number,
                start,
                end,
                inner,
            });
        }
        offset = end;
    }
    found
}

/// Each expression must be a whole scalar: a mapping key or value, a
/// sequence item or a flow collection item, and never inside a block scalar.
fn check_yaml_placement(source: &str) -> Result<(), (usize, &'static str)> {
    let mut block_scalar_indent: Option<usize> = None;
    for (index, line) in source.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let content = line.trim();
        let expressions = output_expressions(index + 1, line);

        if let Some(block_indent) = block_scalar_indent {
            if content.is_empty() || indent > block_indent {
                if let Some(expression) = expressions.first() {
                    return Err((
                        expression.line,
                        "an expression inside a | or > block scalar is not quoted; make it a whole value such as `- {{name}}` outside the block",
                    ));
                }
                continue;
            }
            block_scalar_indent = None;
        }

        for expression in &expressions {
            let before = line[..expression.start].trim_end_matches(' ');
            let after = line[expression.end..].trim_start_matches(' ');
            let before_valid = before.trim_start().chars().all(|c| c == '-' || c == ' ')
                || before.ends_with(':') && line[..expression.start].ends_with(' ')
                || before.ends_with(['[', ',', '{']);
            let after_valid = after.is_empty()
                || after.starts_with([',', ']', '}', ':'])
                || after.starts_with('#') && line[expression.end..].starts_with(' ');
            if !(before_valid && after_valid) {
                return Err((
                    expression.line,
                    "an expression must be a whole YAML value or key, because its quotes are literal text inside a longer scalar; write `key: {{name}}` or `- {{name}}`",
                ));
            }
        }

        let value_end =
            content.trim_end_matches(|c: char| c == '-' || c == '+' || c.is_ascii_digit());
        if value_end.ends_with(": |")
            || value_end.ends_with(": >")
            || value_end == "|"
            || value_end == ">"
            || value_end.ends_with("- |")
            || value_end.ends_with("- >")
        {
            block_scalar_indent = Some(indent);
        }
    }
    Ok(())
}

/// In `*_command` questions every expression must use the `shell` helper.
fn check_preseed_placement(source: &str) -> Result<(), (usize, &'static str)> {
    let mut in_command = false;
    let mut continues = false;
    for (index, line) in source.lines().enumerate() {
        if !continues {
            let question = line.split_whitespace().nth(1).unwrap_or_default();
            in_command = question.ends_with("_command");
        }
        continues = line.ends_with('\\');
        if !in_command {
            continue;
        }
        for expression in output_expressions(index + 1, line) {
            if !expression.inner.starts_with("shell ") {
                return Err((
                    expression.line,
                    "a value in a *_command line runs in a shell; write {{shell name}} so it is one quoted word",
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_yaml_values_accepted() {
        let source =
            "a: {{x}}\n- {{x}}\n  - - {{x}} # note\nb: [{{x}}, {{y}}]\n{{k}}:\n{{#each l}}\n";
        assert_eq!(check_yaml_placement(source), Ok(()));
    }

    #[test]
    fn yaml_expression_inside_plain_scalar_rejected() {
        let source = "runcmd:\n  - echo {{x}}\n";
        assert_eq!(
            check_yaml_placement(source).map_err(|(line, _)| line),
            Err(2)
        );
    }

    #[test]
    fn yaml_expression_inside_block_scalar_rejected() {
        let source = "write_files:\n  - content: |\n      host {{x}}\n    path: /etc/x\n";
        assert_eq!(
            check_yaml_placement(source).map_err(|(line, _)| line),
            Err(3)
        );
    }

    #[test]
    fn multibyte_text_after_expression_rejected() {
        let source = "a: {{x}}é\n";
        assert_eq!(
            check_yaml_placement(source).map_err(|(line, _)| line),
            Err(1)
        );
    }

    #[test]
    fn yaml_expression_after_block_scalar_accepted() {
        let source = "a: |\n  text\nb: {{x}}\n";
        assert_eq!(check_yaml_placement(source), Ok(()));
    }

    #[test]
    fn preseed_command_needs_shell_helper() {
        let source = "d-i preseed/late_command string \\\n  echo {{x}}\n";
        assert_eq!(
            check_preseed_placement(source).map_err(|(line, _)| line),
            Err(2)
        );
    }

    #[test]
    fn preseed_command_with_shell_helper_accepted() {
        let source = "d-i preseed/late_command string echo {{shell x}}\nd-i netcfg/get_hostname string {{x}}\n";
        assert_eq!(check_preseed_placement(source), Ok(()));
    }
}
