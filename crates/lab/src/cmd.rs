//! Running external commands (iproute2) with errors that name the failing command.

use std::process::{Command, Output};

use crate::error::LabError;

/// Renders a command line for error messages (arguments with spaces are quoted).
pub(crate) fn render(program: &str, args: &[&str]) -> String {
    let mut line = String::from(program);
    for arg in args {
        line.push(' ');
        if arg.is_empty() || arg.contains(char::is_whitespace) {
            line.push('\'');
            line.push_str(arg);
            line.push('\'');
        } else {
            line.push_str(arg);
        }
    }
    line
}

/// Runs `program args...` to completion; returns its stdout on success.
///
/// A non-zero exit becomes [`LabError::Command`] carrying the command line and its stderr.
pub(crate) fn run(program: &str, args: &[&str]) -> Result<String, LabError> {
    let output = output(program, args)?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(LabError::Command {
        command: render(program, args),
        status: output.status.to_string(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs `program args...` and returns its raw output whatever the exit status.
pub(crate) fn output(program: &str, args: &[&str]) -> Result<Output, LabError> {
    Command::new(program)
        .args(args)
        .output()
        .map_err(|source| LabError::Spawn {
            command: render(program, args),
            source,
        })
}

/// Runs `ip args...`.
pub(crate) fn ip(args: &[&str]) -> Result<String, LabError> {
    run("ip", args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_arguments_with_spaces() {
        assert_eq!(render("ip", &["-n", "a b", ""]), "ip -n 'a b' ''");
    }

    #[test]
    fn failing_command_names_itself_and_its_stderr() {
        let err = run("sh", &["-c", "echo oops >&2; exit 3"]).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("sh -c"), "{text}");
        assert!(text.contains("oops"), "{text}");
        assert!(text.contains('3'), "{text}");
    }

    #[test]
    fn missing_program_is_a_spawn_error() {
        let err = run("/nonexistent/srmig-no-such-binary", &[]).expect_err("must fail");
        assert!(matches!(err, LabError::Spawn { .. }));
    }
}
