//! The one error type the app's commands return; it reaches the front end as
//! `{kind, message, status?}` so screens can show the engine's own text.

use serde::ser::SerializeStruct;

use crate::engine::EngineError;
use crate::settings::SettingsError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A request the app refuses before asking the engine (bad action name, bad URL...).
    #[error("{0}")]
    Invalid(String),
    /// No such stream or exec session (it ended, or the view was closed).
    #[error("{0}")]
    Gone(String),
    /// The host agent is not available or refused.
    #[error("{0}")]
    Agent(String),
}

impl AppError {
    fn kind(&self) -> &'static str {
        match self {
            AppError::Engine(EngineError::Connect { .. }) => "unreachable",
            AppError::Engine(EngineError::Api { .. }) => "engine",
            AppError::Engine(_) => "connection",
            AppError::Settings(_) => "settings",
            AppError::Invalid(_) => "invalid",
            AppError::Gone(_) => "gone",
            AppError::Agent(_) => "agent",
        }
    }
}

impl serde::Serialize for AppError {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("AppError", 3)?;
        st.serialize_field("kind", self.kind())?;
        st.serialize_field("message", &self.to_string())?;
        if let AppError::Engine(EngineError::Api { status, .. }) = self {
            st.serialize_field("status", status)?;
        }
        st.end()
    }
}

pub type AppResult<T> = Result<T, AppError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_engine_message() {
        let e = AppError::Engine(EngineError::Api { status: 409, message: "conflict: name in use".into() });
        assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"kind": "engine", "message": "conflict: name in use", "status": 409}));
        let e = AppError::Invalid("bad".into());
        assert_eq!(serde_json::to_value(&e).unwrap(), serde_json::json!({"kind": "invalid", "message": "bad"}));
    }
}
