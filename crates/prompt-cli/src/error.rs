//! The errors of the `prompt` command: one line each, an optional hint, and an exit code.

use std::fmt;
use std::process::ExitCode;

/// How a command failed; decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command line is wrong (exit code 2).
    Usage,
    /// The command could not do its work (exit code 1).
    Failure,
    /// Interrupted by Ctrl-C (exit code 130).
    Interrupted,
}

/// An error of the `prompt` command: a one-line message and an optional hint saying how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// Usage error, failure or interruption.
    pub kind: ErrorKind,
    /// What is wrong, on one line.
    pub message: String,
    /// How to fix it, on one line.
    pub hint: Option<String>,
}

impl CliError {
    /// A usage error (exit code 2).
    pub fn usage(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Usage, message)
    }

    /// A failure (exit code 1).
    pub fn failure(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Failure, message)
    }

    /// An interruption by Ctrl-C (exit code 130).
    pub fn interrupted(message: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Interrupted, message)
    }

    fn new(kind: ErrorKind, message: impl fmt::Display) -> Self {
        Self {
            kind,
            message: one_line(&message.to_string()),
            hint: None,
        }
    }

    /// Adds the hint line.
    #[must_use]
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.hint = Some(one_line(&hint.to_string()));
        self
    }

    /// The process exit code: 2 usage, 1 failure, 130 interrupted.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The exit code as a number.
    pub fn code(&self) -> u8 {
        match self.kind {
            ErrorKind::Usage => 2,
            ErrorKind::Failure => 1,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// Joins the lines of a message with "; " so every error stays on one line.
pub(crate) fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The result type of the commands.
pub type CliResult<T> = Result<T, CliError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_one_line_messages() {
        let e = CliError::usage("bad\n  thing\n").hint("do\nthat");
        assert_eq!(e.code(), 2);
        assert_eq!(e.message, "bad; thing");
        assert_eq!(e.hint.as_deref(), Some("do; that"));
        assert_eq!(CliError::failure("x").code(), 1);
        assert_eq!(CliError::interrupted("x").code(), 130);
    }
}
