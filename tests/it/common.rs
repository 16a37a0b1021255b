//! Helpers shared by the integration tests: running the binary, reading corpora.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A corpus file under tests/data/corpus.
pub fn corpus(name: &str) -> PathBuf {
    repo().join("tests/data/corpus").join(name)
}

/// `tlsledger` with `args`, run in the repository root, `stdin` fed in.
pub fn tlsledger(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tlsledger"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run tlsledger");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        // The child may exit before reading everything; that is not an error here.
        let _ = input.write_all(&data);
    });
    let output = child.wait_with_output().expect("wait for tlsledger");
    writer.join().expect("stdin writer");
    output
}

/// `tlsledger parse --output none --tls-logging on --trusted-files --state STATE EXTRA… INPUT`
/// (`INPUT` `-` reads `stdin`): the reputation state of a log whose lines count as trusted.
/// Panics with tlsledger's stderr when it fails.
pub fn parse_into_state(state: &Path, input: &str, stdin: &[u8], extra: &[&str]) -> Output {
    let state = state.to_str().expect("UTF-8 state path");
    let mut args = vec!["parse", "--output", "none", "--tls-logging", "on", "--trusted-files", "--state", state];
    args.extend_from_slice(extra);
    args.push(input);
    let output = tlsledger(&args, stdin);
    assert!(output.status.success(), "tlsledger {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// The JSON objects of `stdout`, one per line.
pub fn observations(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect()
}

/// The value of counter `label` in a `--stats` report.
pub fn stat(stderr: &[u8], label: &str) -> u64 {
    let text = String::from_utf8_lossy(stderr);
    text.lines()
        .find_map(|line| {
            let (name, value) = line.trim_end().rsplit_once(' ')?;
            (name.trim() == label).then(|| value.trim().parse().ok()).flatten()
        })
        .unwrap_or_else(|| panic!("no counter {label:?} in:\n{text}"))
}

/// The lines of a corpus file without our `#` provenance comments and blank lines.
pub fn corpus_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()).map(str::to_owned).collect()
}
