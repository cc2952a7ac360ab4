//! Progress on the terminal: spinners and byte bars on a TTY, plain lines otherwise (CI logs).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// Reports the steps of a long operation.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    tty: bool,
    quiet: bool,
}

impl Progress {
    /// Draws bars when stderr is a terminal, plain lines otherwise.
    pub fn stderr() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            quiet: false,
        }
    }

    /// Says nothing (library use, tests).
    pub fn quiet() -> Self {
        Progress {
            tty: false,
            quiet: true,
        }
    }

    /// A step of unknown length: a spinner on a terminal.
    pub fn step(&self, message: String) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        if !self.tty {
            eprintln!("  {message}");
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner().with_message(message);
        bar.set_style(
            ProgressStyle::with_template("  {spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A step over `total` bytes.
    pub fn bytes(&self, message: String, total: u64) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        if !self.tty {
            eprintln!("  {message}");
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total).with_message(message);
        bar.set_style(
            ProgressStyle::with_template(
                "  {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    }

    /// Finishes a step with a closing line.
    pub fn done(&self, bar: ProgressBar, message: String) {
        if self.quiet {
            return;
        }
        if self.tty {
            bar.finish_and_clear();
        }
        eprintln!("  ✓ {message}");
    }

    pub fn line(&self, message: String) {
        if !self.quiet {
            eprintln!("{message}");
        }
    }
}
