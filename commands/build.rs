//! Rebuild when a migration is added or changed: `sqlx::migrate!` embeds the folder at
//! compile time, and Cargo does not watch it on its own.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
