//! Follows berthd's `GET /events` for the whole app and re-emits each event to the window
//! (`berth:engine-event`), plus link changes (`berth:engine-link`) for the status pill and the
//! tray. When the engine is unreachable it reconnects with a capped back-off: that is a
//! connection retry, not a polling loop; lists refresh only when an event says so.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tauri::{AppHandle, Emitter};

use crate::engine::LineSplitter;
use crate::state::AppState;

pub const EVENT: &str = "berth:engine-event";
pub const LINK: &str = "berth:engine-link";

/// (Re)start the follower for the current socket.
pub fn restart(app: &AppHandle, state: Arc<AppState>) {
    let app2 = app.clone();
    let st = state.clone();
    let task = tauri::async_runtime::spawn(async move { follow(app2, st).await });
    if let Some(old) = state.events_task.lock().expect("events lock").replace(task) {
        old.abort();
    }
}

async fn follow(app: AppHandle, state: Arc<AppState>) {
    let mut delay = Duration::from_millis(250);
    let mut was_up: Option<bool> = None;
    loop {
        let engine = state.engine();
        let result = async {
            let resp = engine.send(Method::GET, "/events", None).await.map_err(|e| e.to_string())?;
            if was_up != Some(true) {
                link(&app, true, None);
                was_up = Some(true);
            }
            let mut body = resp.into_body();
            let mut lines = LineSplitter::default();
            while let Some(frame) = body.frame().await {
                let f = frame.map_err(|e| e.to_string())?;
                if let Some(data) = f.data_ref() {
                    for l in lines.push(data) {
                        if let Ok(v) = serde_json::from_slice::<Value>(&l) {
                            let _ = app.emit(EVENT, v);
                        }
                    }
                }
            }
            Err::<(), String>("the engine closed the event stream".into())
        }
        .await;
        let err = result.err().unwrap_or_default();
        if was_up != Some(false) {
            tracing::info!("engine event stream down: {err}");
            link(&app, false, Some(err));
            was_up = Some(false);
            delay = Duration::from_millis(250);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(3));
    }
}

fn link(app: &AppHandle, up: bool, error: Option<String>) {
    let _ = app.emit(LINK, json!({"up": up, "error": error}));
    crate::tray::set_status(app, up);
}
