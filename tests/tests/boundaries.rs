//! The crate boundaries of ARCHITECTURE.md, checked: for every crate in its table, no
//! crate named in the "must never depend on" column is among its normal dependencies,
//! direct or transitive, as `cargo tree -p <crate> -e normal` resolves them for that crate
//! alone (so a default feature another crate turns on does not hide a violation).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Backticked words of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, w)| w.trim().to_string())
        .collect()
}

/// (crate, forbidden) rows of the boundaries table.
fn table() -> Vec<(String, Vec<String>)> {
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let section = doc
        .split("## Boundaries")
        .nth(1)
        .expect("ARCHITECTURE.md has a Boundaries section");
    let section = section.split("\n## ").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            // "", crate, owns, forbidden, ""
            let name = ticked(cells[1]).remove(0);
            let forbidden = ticked(cells[cells.len() - 2]);
            (name, forbidden)
        })
        .collect()
}

/// Every package in `krate`'s normal dependency tree, resolved for it alone.
fn tree(krate: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            krate,
            "-e",
            "normal",
            "--prefix",
            "none",
            "-f",
            "{p}",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree -p {krate}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn no_crate_depends_on_what_the_architecture_forbids() {
    let rows = table();
    assert!(rows.len() >= 12, "the boundaries table lost rows: {rows:?}");
    let mut broken = Vec::new();
    for (krate, forbidden) in &rows {
        assert!(
            !forbidden.is_empty(),
            "{krate}: no forbidden dependency listed"
        );
        let deps = tree(krate);
        assert!(
            deps.contains(krate),
            "cargo tree did not list {krate} itself"
        );
        for f in forbidden {
            if f != krate && deps.contains(f) {
                broken.push(format!("{krate} depends on {f}"));
            }
        }
    }
    assert!(broken.is_empty(), "boundaries broken: {broken:?}");
}
