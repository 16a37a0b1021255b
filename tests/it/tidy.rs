//! Tidy checks on the source tree: every Rust file starts with a `//!` module doc
//! (STYLE.md §5), and no test is ignored or marked should_panic (STYLE.md §6).

use std::path::Path;

use crate::common::repo;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" && name != "corpus" && name != "artifacts" {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_has_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["src", "parsers", "tests", "benches"] {
        rust_files(&repo().join(dir), &mut files);
    }
    assert!(files.len() > 10);
    let missing: Vec<String> = files
        .iter()
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(missing.is_empty(), "files without a //! doc: {missing:#?}");
}

#[test]
fn no_ignored_tests() {
    let mut files = Vec::new();
    for dir in ["src", "parsers/src", "tests"] {
        rust_files(&repo().join(dir), &mut files);
    }
    let banned = [concat!("#[", "ignore"), concat!("#[", "should_panic")];
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for pattern in banned {
            assert!(!text.contains(pattern), "{} contains {pattern}", path.display());
        }
    }
}
