//! Terminal output: colours (honouring `NO_COLOR`), aligned tables, JSON, number formatting.

use std::fmt::Write as _;
use std::io::{IsTerminal, Write};

use serde::Serialize;

use crate::error::{CliError, CliResult};

/// Whether to colour a stream: a terminal, `NO_COLOR` unset or empty, `TERM` not `dumb`.
pub fn color_enabled(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
    is_terminal && !no_color && !dumb
}

/// Colours for one stream.
#[derive(Debug, Clone, Copy)]
pub struct Paint {
    on: bool,
}

impl Paint {
    /// Colours for stdout.
    pub fn stdout() -> Self {
        Self {
            on: color_enabled(std::io::stdout().is_terminal()),
        }
    }

    /// Colours for stderr.
    pub fn stderr() -> Self {
        Self {
            on: color_enabled(std::io::stderr().is_terminal()),
        }
    }

    /// Whether colours are on.
    pub fn on(self) -> bool {
        self.on
    }

    fn wrap(self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Bold.
    pub fn bold(self, text: &str) -> String {
        self.wrap("1", text)
    }
    /// Red, bold.
    pub fn red(self, text: &str) -> String {
        self.wrap("1;31", text)
    }
    /// Green.
    pub fn green(self, text: &str) -> String {
        self.wrap("32", text)
    }
    /// Yellow, bold.
    pub fn yellow(self, text: &str) -> String {
        self.wrap("1;33", text)
    }
    /// Cyan.
    pub fn cyan(self, text: &str) -> String {
        self.wrap("36", text)
    }
    /// Dimmed.
    pub fn dim(self, text: &str) -> String {
        self.wrap("2", text)
    }
}

/// Prints `error: …` and `hint: …` on stderr.
pub fn print_error(err: &CliError) {
    if err.message.is_empty() {
        return;
    }
    let p = Paint::stderr();
    let mut out = format!("{} {}\n", p.red("error:"), err.message);
    if let Some(hint) = &err.hint {
        let _ = writeln!(out, "{} {hint}", p.cyan("hint:"));
    }
    let _ = std::io::stderr().write_all(out.as_bytes());
}

/// Prints a warning line on stderr.
pub fn print_warning(message: &str) {
    let p = Paint::stderr();
    eprintln!("{} {message}", p.yellow("warning:"));
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print_stdout(text: &str) -> CliResult<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::failure(format!("cannot write to stdout: {e}"))),
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) -> CliResult<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| CliError::failure(format!("cannot encode JSON output: {e}")))?;
    print_stdout(&(text + "\n"))
}

/// Column alignment in a [`Table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Left aligned (text).
    Left,
    /// Right aligned (numbers).
    Right,
}

/// An aligned text table: a header row, then rows; columns padded to their widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    align: Vec<Align>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers; each column is `Left` or `Right` aligned.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Self {
            headers: columns.iter().map(|(h, _)| (*h).to_owned()).collect(),
            align: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells are blank, extra cells are dropped).
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Renders the table; headers bold when `paint` is on.
    pub fn render(&self, paint: Paint) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cells: &[String], out: &mut String, header: bool| {
            let mut text = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                let last = i + 1 == cells.len();
                let padded = match self.align[i] {
                    Align::Right => format!("{}{cell}", " ".repeat(pad)),
                    Align::Left if last => cell.clone(),
                    Align::Left => format!("{cell}{}", " ".repeat(pad)),
                };
                if i > 0 {
                    text.push_str("  ");
                }
                text.push_str(&padded);
            }
            let text = text.trim_end().to_owned();
            out.push_str(&if header { paint.bold(&text) } else { text });
            out.push('\n');
        };
        line(&self.headers, &mut out, true);
        for row in &self.rows {
            line(row, &mut out, false);
        }
        out
    }
}

/// A rate in 0..=1 as a percentage, `96.0%`.
pub fn percent(rate: f64) -> String {
    format!("{:.1}%", rate * 100.0)
}

/// US dollars: four decimals under a dollar (`$0.0123`), two from there (`$12.50`).
pub fn usd(v: f64) -> String {
    if v.abs() >= 1.0 {
        format!("${v:.2}")
    } else {
        format!("${v:.4}")
    }
}

/// Milliseconds, human-sized: `850 ms`, `12.3 s`.
pub fn millis(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

/// Bytes, human-sized: `512 B`, `1.5 KiB`, `3.2 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A JSON value shown in a table cell: numbers as they are, strings bare, null as `-`.
pub fn cell(value: Option<&serde_json::Value>) -> String {
    match value {
        None | Some(serde_json::Value::Null) => "-".to_owned(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&[("model", Align::Left), ("calls", Align::Right)]);
        t.row(vec!["qwen3:30b".into(), "5".into()]);
        t.row(vec!["m".into(), "1234".into()]);
        let text = t.render(Paint { on: false });
        assert_eq!(
            text,
            "model      calls\nqwen3:30b      5\nm           1234\n"
        );
    }

    #[test]
    fn human_numbers() {
        assert_eq!(percent(0.962), "96.2%");
        assert_eq!(millis(850.4), "850 ms");
        assert_eq!(millis(1500.0), "1.50 s");
        assert_eq!(millis(12_345.0), "12.3 s");
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(cell(Some(&serde_json::json!(0.5))), "0.50");
        assert_eq!(cell(None), "-");
    }
}
