//! `supabase/migrations/` carries the same schema and policies as `migrations/`:
//! every server migration is there verbatim, and the only extra files are the
//! Supabase role grants. `scripts/supabase-sync` refreshes the copies.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;

fn sql_files(dir: &Path) -> BTreeMap<String, String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

#[test]
fn supabase_migrations_match_the_server_migrations() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let server = sql_files(&root.join("migrations"));
    let supabase = sql_files(&root.join("supabase/migrations"));
    assert!(!server.is_empty());
    for (name, text) in &server {
        let copy = supabase
            .get(name)
            .unwrap_or_else(|| panic!("supabase/migrations/{name} is missing: run scripts/supabase-sync"));
        assert!(
            copy == text,
            "supabase/migrations/{name} differs from migrations/{name}: run scripts/supabase-sync"
        );
    }
    let extra: Vec<&String> = supabase.keys().filter(|k| !server.contains_key(*k)).collect();
    assert!(
        extra.iter().all(|k| k.ends_with("_supabase_roles.sql")),
        "unexpected Supabase-only files: {extra:?}"
    );
}
