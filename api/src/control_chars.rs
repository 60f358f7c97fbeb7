//! Which characters the text of a request may hold: no C0 control characters (U+0000 to
//! U+001F) and no DEL (U+007F), except line breaks and tabs in the fields written as
//! prose.
//!
//! Postgres refuses a NUL in `text` and `\u0000` in `jsonb`, so before this check such a
//! string was a 500 wherever it reached the database; the other control characters are
//! stored but have no business in an email, a name, an id or a filter, and would end up in
//! logs, emails and the audit timeline. The extractors (`extract`) run this on every JSON
//! body (values and object keys), query string and path before anything else reads them, so
//! the refusal is one 422 naming the field whatever the endpoint.
//!
//! Multi-line fields: `prompt` and `negative_prompt` (top level of a body): prompts are
//! prose and may be pasted with line breaks and indentation. Reasons, names and the rest are
//! one line: they are shown in one-line listings (ledger, audit timeline, CLI output).
//! Passwords are not checked at all: they are only ever hashed.

use serde_json::Value;

use crate::error::FieldError;

/// Top-level JSON fields that may hold `\n`, `\r` and `\t`.
pub const MULTI_LINE_FIELDS: &[&str] = &["prompt", "negative_prompt"];

/// Top-level JSON fields that are secrets: hashed, never stored, shown or logged as text, so
/// any character is theirs to use (a password that was accepted once must keep working).
pub const SECRET_FIELDS: &[&str] = &["password", "new_password"];

const CODE: &str = "control_character";

/// The first forbidden character of `text` and its position (in characters).
pub fn first_control(text: &str, multi_line: bool) -> Option<(usize, char)> {
    text.chars().enumerate().find(|&(_, c)| {
        let allowed = multi_line && matches!(c, '\n' | '\r' | '\t');
        c.is_ascii_control() && !allowed
    })
}

/// The first string of a JSON document, value or object key, holding a forbidden character,
/// as an error naming its path the way validation errors do (`name`, `scopes[1]`, `a.b`;
/// `body` for the document itself).
pub fn check_json(value: &Value) -> Result<(), FieldError> {
    check_value(value, "")
}

fn check_value(value: &Value, path: &str) -> Result<(), FieldError> {
    match value {
        Value::String(text) => check_text(field_name(path), text),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, item)| check_value(item, &format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            if let Some((at, c)) = first_control(key, false) {
                return Err(FieldError::new(
                    &member(path, &printable(key)),
                    CODE,
                    format!(
                        "this key contains a control character ({}) at character {at}",
                        code_point(c)
                    ),
                ));
            }
            check_value(item, &member(path, key))
        }),
        Value::Null | Value::Bool(_) | Value::Number(_) => Ok(()),
    }
}

/// The same for name/value pairs (a query string, path parameters); names may not hold
/// control characters either, and no parameter is multi-line.
pub fn check_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), FieldError> {
    pairs.into_iter().try_for_each(|(name, value)| {
        if let Some((at, c)) = first_control(name, false) {
            return Err(FieldError::new(
                &printable(name),
                CODE,
                format!(
                    "this parameter's name contains a control character ({}) at character {at}",
                    code_point(c)
                ),
            ));
        }
        check_single_line(name, value)
    })
}

fn check_text(field: &str, text: &str) -> Result<(), FieldError> {
    if SECRET_FIELDS.contains(&field) {
        return Ok(());
    }
    if MULTI_LINE_FIELDS.contains(&field) {
        match first_control(text, true) {
            None => Ok(()),
            Some((at, c)) => Err(FieldError::new(
                field,
                CODE,
                format!(
                    "contains a control character ({}) at character {at}; only line breaks and tabs are allowed",
                    code_point(c)
                ),
            )),
        }
    } else {
        check_single_line(field, text)
    }
}

fn check_single_line(field: &str, text: &str) -> Result<(), FieldError> {
    match first_control(text, false) {
        None => Ok(()),
        Some((at, c)) => Err(FieldError::new(
            field,
            CODE,
            format!(
                "contains a control character ({}) at character {at}; line breaks and tabs are allowed only in {}",
                code_point(c),
                MULTI_LINE_FIELDS.join(" and ")
            ),
        )),
    }
}

/// The path of `key` in the object at `path`.
fn member(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn field_name(path: &str) -> &str {
    if path.is_empty() {
        "body"
    } else {
        path
    }
}

fn code_point(c: char) -> String {
    format!("U+{:04X}", u32::from(c))
}

/// `text` with its control characters written as `\u{..}` escapes, fit for a field name.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_control() {
                format!("\\u{{{:x}}}", u32::from(c))
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refused(value: Value) -> FieldError {
        check_json(&value).expect_err("refused")
    }

    #[test]
    fn nul_del_and_other_c0_characters_are_refused_and_printable_text_is_not() {
        for c in (0u8..0x20).chain([0x7f]).map(char::from) {
            assert!(
                first_control(&format!("a{c}b"), false) == Some((1, c)),
                "{c:?}"
            );
        }
        assert_eq!(
            first_control("plain text, ünïcödé ✓ and emoji 🎬", false),
            None
        );
        assert_eq!(
            first_control("\u{85}\u{a0}", false),
            None,
            "C1 and NBSP pass"
        );
    }

    #[test]
    fn line_breaks_and_tabs_are_allowed_only_in_prompts() {
        let prose = "a boat\non a street,\r\n\tat dusk";
        assert!(check_json(&json!({"prompt": prose, "negative_prompt": prose})).is_ok());
        assert_eq!(refused(json!({"prompt": "a\u{7}b"})).field, "prompt");
        assert_eq!(refused(json!({"reason": "two\nlines"})).field, "reason");
        assert_eq!(
            refused(json!({"spec": {"prompt": "nested\nprompt"}})).field,
            "spec.prompt",
            "only the top-level prompt is prose"
        );
    }

    #[test]
    fn the_error_names_the_json_path_of_the_first_offending_string() {
        let error = refused(json!({"name": "ok", "scopes": ["videos:read", "x\u{0}"]}));
        assert_eq!(error.field, "scopes[1]");
        assert_eq!(error.code, "control_character");
        assert!(
            error.message.contains("(U+0000) at character 1"),
            "{}",
            error.message
        );
        assert_eq!(refused(json!({"a": [{"b": "\u{1b}[31m"}]})).field, "a[0].b");
        assert_eq!(refused(json!("\u{0}")).field, "body");
        assert!(check_json(&json!({"n": 1, "b": true, "z": null, "s": ["ok"]})).is_ok());
    }

    #[test]
    fn object_keys_are_checked_and_shown_escaped() {
        let error = refused(json!({"pass\u{0}word": "x"}));
        assert_eq!(error.field, "pass\\u{0}word");
        assert!(error.message.contains("key"), "{}", error.message);
        assert_eq!(refused(json!({"a": {"\n": 1}})).field, "a.\\u{a}");
    }

    #[test]
    fn query_and_path_parameters_are_single_line() {
        assert!(check_pairs([("event_type", "VideoRequested")]).is_ok());
        let error = check_pairs([("limit", "5"), ("event_type", "\u{0}")]).expect_err("NUL");
        assert_eq!(error.field, "event_type");
        let error = check_pairs([("prompt", "a\nb")]).expect_err("no prose in a query");
        assert_eq!(error.field, "prompt");
        let error = check_pairs([("x\u{0}", "ok")]).expect_err("name");
        assert_eq!(error.field, "x\\u{0}");
    }
}
