//! Builds the front end (ui/ -> ui/dist) before Tauri embeds it, so that a plain
//! `cargo build --workspace` yields a complete app (CI builds the GUI once, this way).

use std::path::Path;
use std::process::Command;

fn main() {
    let ui = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui");
    for p in ["src", "index.html", "package.json", "package-lock.json", "vite.config.ts", "tsconfig.json"] {
        println!("cargo:rerun-if-changed={}", ui.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=BERTH_UI_SKIP_BUILD");
    let embedded = std::env::var_os("CARGO_FEATURE_CUSTOM_PROTOCOL").is_some();
    if embedded && std::env::var_os("BERTH_UI_SKIP_BUILD").is_none() {
        build_ui(&ui);
    }
    tauri_build::build()
}

fn build_ui(ui: &Path) {
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if !ui.join("node_modules").is_dir() {
        run(Command::new(npm).arg("ci").arg("--no-audit").arg("--no-fund").current_dir(ui), "npm ci");
    }
    run(Command::new(npm).args(["run", "build"]).current_dir(ui), "npm run build");
}

fn run(cmd: &mut Command, what: &str) {
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("`{what}` in ui/ failed ({s}); the app embeds ui/dist (set BERTH_UI_SKIP_BUILD=1 to use an existing one)"),
        Err(e) => panic!("cannot run `{what}` in ui/ ({e}): Node.js and npm are needed to build the front end"),
    }
}
