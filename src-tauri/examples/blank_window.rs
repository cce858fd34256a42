//! The memory floor of a Tauri v2 window on this stack (not part of the app): the same tauri, wry
//! and WebKitGTK as berth-desktop, the same config and the same environment set-up
//! (`platform::prepare_env`), but the window shows an empty page and none of the app's Rust side
//! (no engine client, no event follower, no commands) runs. The page is an empty HTML document
//! served through a custom URI scheme, the way Tauri serves the app's own page (`about:blank`
//! would not do: WebKit shows it without starting a web process at all). `BENCH_FLOOR=1 src-tauri/bench/run`
//! builds it in release and measures it beside the app and a plain WebKitGTK window (MiniBrowser),
//! so the report can tell WebKitGTK's and Tauri's fixed cost from what the app adds.

use tauri::WebviewUrl;

fn main() {
    berth_desktop::platform::prepare_env();
    let mut ctx = tauri::generate_context!();
    for w in &mut ctx.config_mut().app.windows {
        w.url = WebviewUrl::CustomProtocol("blank://localhost/".parse().expect("url"));
    }
    tauri::Builder::default()
        .register_uri_scheme_protocol("blank", |_ctx, _req| {
            tauri::http::Response::builder()
                .header("Content-Type", "text/html")
                .body(b"<!doctype html><html><head><title>blank</title></head><body></body></html>".to_vec())
                .expect("response")
        })
        .run(ctx)
        .expect("blank window");
}
