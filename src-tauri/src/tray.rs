//! The tray icon: engine status and quick actions (open a screen, stop all containers, quit).

use std::sync::Arc;

use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager};

use crate::state::AppState;

/// The status line of the tray menu, kept to update it.
pub struct TrayStatus(pub MenuItem<tauri::Wry>);

pub fn build(app: &AppHandle) -> tauri::Result<()> {
    let status = MenuItem::with_id(app, "status", "Engine: connecting…", false, None::<&str>)?;
    let open = MenuItem::with_id(app, "open", "Open Berth", true, None::<&str>)?;
    let containers = MenuItem::with_id(app, "nav:containers", "Containers", true, None::<&str>)?;
    let images = MenuItem::with_id(app, "nav:images", "Images", true, None::<&str>)?;
    let engine = MenuItem::with_id(app, "nav:engine", "Engine…", true, None::<&str>)?;
    let stop_all = MenuItem::with_id(app, "stop-all", "Stop all containers", true, None::<&str>)?;
    let quit = MenuItem::with_id(app, "quit", "Quit Berth", true, None::<&str>)?;
    let sep = PredefinedMenuItem::separator(app)?;
    let sep2 = PredefinedMenuItem::separator(app)?;
    let menu = Menu::with_items(app, &[&status, &sep, &open, &containers, &images, &engine, &sep2, &stop_all, &quit])?;
    let icon = tauri::image::Image::from_bytes(include_bytes!("../icons/tray.png"))?;
    TrayIconBuilder::with_id("berth")
        .icon(icon)
        .tooltip("Berth")
        .menu(&menu)
        .on_menu_event(|app, ev| on_menu(app, ev.id().as_ref()))
        .build(app)?;
    app.manage(TrayStatus(status));
    Ok(())
}

fn show_main(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.show();
        let _ = w.unminimize();
        let _ = w.set_focus();
    }
}

fn on_menu(app: &AppHandle, id: &str) {
    match id {
        "open" => show_main(app),
        "quit" => app.exit(0),
        "stop-all" => {
            let state = app.state::<Arc<AppState>>().inner().clone();
            tauri::async_runtime::spawn(async move {
                let engine = state.engine();
                if let Ok(list) = engine.get("/containers/json").await {
                    for c in list.as_array().into_iter().flatten() {
                        if let Some(id) = c["Id"].as_str() {
                            let _ = engine.post(&format!("/containers/{id}/stop"), None).await;
                        }
                    }
                }
            });
        }
        other => {
            if let Some(screen) = other.strip_prefix("nav:") {
                show_main(app);
                let _ = app.emit("berth:navigate", screen);
            }
        }
    }
}

/// Reflect the event stream's link state in the tray menu (no-op when there is no tray).
pub fn set_status(app: &AppHandle, up: bool) {
    if let Some(s) = app.try_state::<TrayStatus>() {
        let _ = s.0.set_text(if up { "Engine: running" } else { "Engine: unreachable" });
    }
    if let Some(t) = app.tray_by_id("berth") {
        let _ = t.set_tooltip(Some(if up { "Berth: engine running" } else { "Berth: engine unreachable" }));
    }
}
