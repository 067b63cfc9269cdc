//! Comparing directory trees in tests.

use std::path::Path;

/// Every file under `a` (or `a` itself, a file) equals the one at the same
/// place under `b`.
pub fn assert_same_tree(a: &Path, b: &Path) {
    if a.is_file() {
        assert!(
            std::fs::read(a).unwrap() == std::fs::read(b).unwrap(),
            "{} differs from {}",
            b.display(),
            a.display()
        );
        return;
    }
    for e in std::fs::read_dir(a).unwrap() {
        let e = e.unwrap();
        assert_same_tree(&e.path(), &b.join(e.file_name()));
    }
}
