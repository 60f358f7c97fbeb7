//! How results reach the user: with `--json`, exactly one JSON document on stdout per command
//! (errors too) and nothing else; otherwise short human lines and tables on stdout, notes and
//! progress on stderr. Nothing here writes escape codes: only the progress bar does, and only
//! on a terminal (`follow::Progress`).

use std::io::IsTerminal as _;

use serde_json::Value;

use super::error::ClientError;

#[derive(Debug, Clone, Copy)]
pub struct Output {
    json: bool,
}

impl Output {
    pub fn new(json: bool) -> Self {
        Output { json }
    }

    pub fn is_json(self) -> bool {
        self.json
    }

    /// Whether a progress bar may be drawn: on a terminal, and not for scripts.
    pub fn interactive(self) -> bool {
        !self.json && std::io::stderr().is_terminal()
    }

    /// The command's result: `value` as JSON, or what `human` makes of it.
    pub fn result(self, value: &Value, human: impl FnOnce(&Value) -> String) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(value).unwrap_or_default()
            );
        } else {
            let text = human(value);
            if !text.is_empty() {
                println!("{}", text.trim_end());
            }
        }
    }

    /// A remark for a person (stderr), left out with `--json`.
    pub fn note(self, message: impl std::fmt::Display) {
        if !self.json {
            eprintln!("{message}");
        }
    }

    pub fn error(self, error: &ClientError) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&error.to_json()).unwrap_or_default()
            );
            return;
        }
        eprintln!("error: {error}");
        if let ClientError::Api {
            errors, request_id, ..
        } = error
        {
            for field in errors {
                eprintln!("  {}: {} ({})", field.field, field.message, field.code);
            }
            if let Some(id) = request_id {
                eprintln!("  request id: {id}");
            }
        }
    }
}

/// `value[name]` as text for a table cell: strings bare, null as `-`.
pub fn cell(value: &Value, name: &str) -> String {
    match &value[name] {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Rows aligned in columns under `header`.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, value) in widths.iter_mut().zip(row) {
            *width = (*width).max(value.chars().count());
        }
    }
    let line = |values: Vec<String>| {
        let cells: Vec<String> = values
            .iter()
            .zip(&widths)
            .map(|(value, width)| format!("{value:<width$}"))
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().map(|row| line(row.clone())));
    out.join("\n")
}

/// `text` cut to `max` characters, with an ellipsis when cut; line breaks as spaces.
pub fn shorten(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns_and_cells_show_nulls_as_dashes() {
        let rows = vec![
            vec!["a".to_owned(), cell(&serde_json::json!({"x": null}), "x")],
            vec!["longer".to_owned(), "2".to_owned()],
        ];
        assert_eq!(
            table(&["id", "n"], &rows),
            "id      n\na       -\nlonger  2"
        );
        assert_eq!(shorten("a\nbcdef", 4), "a b…");
    }
}
