//! Staging on-disk states for the crash tests: what a crash at a chosen moment leaves.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::Path;

/// Copies the tree at `from` to `to`, creating `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
