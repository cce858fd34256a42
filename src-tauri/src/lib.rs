//! Berth's desktop app: a thin Tauri v2 shell. Its commands call berthd's Engine API over the
//! docker socket (the same API the docker CLI uses) and, where there is one, the host agent.
//! The front end lives in ui/ and is embedded from ui/dist.

pub mod agent;
pub mod bench;
pub mod commands;
pub mod engine;
pub mod error;
pub mod events;
pub mod platform;
pub mod settings;
pub mod state;
pub mod tray;

use std::sync::Arc;

use tauri::Manager;

use crate::state::AppState;

pub fn run() {
    bench::stamp("main");
    platform::prepare_env();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .try_init();
    tauri::Builder::default()
        .setup(|app| {
            bench::stamp("setup");
            let settings_path = app
                .path()
                .app_config_dir()
                .map(|d| d.join("settings.json"))
                .unwrap_or_else(|_| std::env::temp_dir().join("berth-desktop-settings.json"));
            let state = Arc::new(AppState::new(settings_path));
            app.manage(state.clone());
            // A missing tray host (e.g. a bare X server) must not keep the app from starting.
            if std::env::var_os("BERTH_NO_TRAY").is_none() {
                if let Err(e) = tray::build(app.handle()) {
                    tracing::warn!("no tray icon: {e}");
                }
            }
            events::restart(app.handle(), state);
            Ok(())
        })
        .invoke_handler(tauri::generate_handler![
            commands::engine_status,
            commands::set_docker_host,
            commands::agent_action,
            commands::agent_settings,
            commands::containers_list,
            commands::container_inspect,
            commands::container_action,
            commands::container_remove,
            commands::container_run,
            commands::container_logs,
            commands::container_stats,
            commands::unsubscribe,
            commands::exec_open,
            commands::exec_input,
            commands::exec_resize,
            commands::exec_close,
            commands::images_list,
            commands::image_inspect,
            commands::image_remove,
            commands::images_prune,
            commands::image_pull,
            commands::volumes_list,
            commands::volume_create,
            commands::volume_inspect,
            commands::volume_remove,
            commands::volumes_prune,
            commands::networks_list,
            commands::network_create,
            commands::network_inspect,
            commands::network_remove,
            commands::networks_prune,
            commands::open_url,
            commands::bench_config,
            commands::bench_mark,
        ])
        .run(tauri::generate_context!())
        .expect("error while running Berth");
}
