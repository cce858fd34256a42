//! The one place where every engine error becomes an HTTP status and Docker's `{"message": ...}` body.
//!
//! Handlers return `Result<_, ApiError>`; module errors convert into it with `From`, so the status a
//! client sees for, say, a digest mismatch is decided here and nowhere else.

use berth_image::ImageError;
use berth_registry::RegistryError;
use http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400: the request itself is wrong (bad JSON, bad query value, invalid reference).
    #[error("{0}")]
    BadParameter(String),
    /// 401: credentials were refused (docker login, pulls from a private registry).
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the request is understood but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such image, container, endpoint...
    #[error("{0}")]
    NotFound(String),
    /// 409: the request conflicts with current state (image in use, name taken).
    #[error("{0}")]
    Conflict(String),
    /// 503: what Docker answers for swarm endpoints on a node that is not in a swarm.
    #[error("{0}")]
    Unavailable(String),
    /// 501: an endpoint Docker has but Berth does not implement yet.
    #[error("{0}")]
    NotImplemented(String),
    /// 500: a failure of the daemon or of something it depends on.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParameter(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadParameter(msg.into())
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        ApiError::Internal(msg.to_string())
    }
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let msg = e.to_string();
        match e {
            ImageError::InvalidReference(_) => ApiError::BadParameter(msg),
            ImageError::NotFound(_) => ApiError::NotFound(msg),
            ImageError::Ambiguous(_) => ApiError::BadParameter(msg),
            ImageError::Conflict(_) => ApiError::Conflict(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        let msg = e.to_string();
        match e {
            RegistryError::Unauthorized(_) => ApiError::Unauthorized(msg),
            RegistryError::NotFound(_) => ApiError::NotFound(msg),
            RegistryError::InvalidReference(_) => ApiError::BadParameter(msg),
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<berth_image::archive::ArchiveError> for ApiError {
    fn from(e: berth_image::archive::ArchiveError) -> Self {
        // A bad upload is the client's fault; I/O trouble on our side is not, but an archive error
        // almost always means the former, and Docker answers 400/500 inconsistently here.
        ApiError::BadParameter(e.to_string())
    }
}

impl From<crate::volumes::VolumeError> for ApiError {
    fn from(e: crate::volumes::VolumeError) -> Self {
        use crate::volumes::VolumeError as V;
        let msg = e.to_string();
        match e {
            V::NotFound(_) => ApiError::NotFound(msg),
            V::InUse { .. } => ApiError::Conflict(msg),
            V::InvalidName(_) | V::InvalidOptions { .. } => ApiError::BadParameter(msg),
            V::Driver(_) => ApiError::NotFound(msg),
            V::Mount { .. } | V::Io { .. } => ApiError::Internal(msg),
        }
    }
}

impl From<crate::networks::NetworkError> for ApiError {
    fn from(e: crate::networks::NetworkError) -> Self {
        use crate::networks::NetworkError as N;
        let msg = e.to_string();
        match e {
            N::NotFound(_) => ApiError::NotFound(msg),
            N::NameInUse(_) | N::AlreadyConnected { .. } => ApiError::Conflict(msg),
            N::Predefined(_) | N::ActiveEndpoints { .. } | N::Overlap => ApiError::Forbidden(msg),
            N::Invalid(_) | N::NotConnected { .. } => ApiError::BadParameter(msg),
            N::Plumbing(berth_network::NetError::Invalid(_) | berth_network::NetError::AddressInUse(_)) => ApiError::BadParameter(msg),
            N::PortAllocated { .. } | N::Plumbing(_) | N::Io { .. } => ApiError::Internal(msg),
        }
    }
}

impl From<crate::images::BodyError> for ApiError {
    fn from(e: crate::images::BodyError) -> Self {
        // Too large, too slow or cut off: the client's request is at fault. Docker answers its
        // unreadable bodies with 400 too (and clients only read the message).
        ApiError::BadParameter(e.to_string())
    }
}

impl From<serde_json::Error> for ApiError {
    fn from(e: serde_json::Error) -> Self {
        ApiError::BadParameter(format!("invalid JSON: {e}"))
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(format!("internal task failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_docker() {
        assert_eq!(ApiError::bad("x").status(), 400);
        assert_eq!(ApiError::NotFound("x".into()).status(), 404);
        assert_eq!(ApiError::Conflict("x".into()).status(), 409);
        assert_eq!(ApiError::internal("x").status(), 500);
        let e: ApiError = ImageError::InvalidReference("UPPER".into()).into();
        assert_eq!(e.status(), 400);
        let e: ApiError = RegistryError::Unauthorized("no".into()).into();
        assert_eq!(e.status(), 401);
        let e: ApiError = crate::images::BodyError::TooLarge { limit: 10 }.into();
        assert_eq!((e.status().as_u16(), e.to_string().as_str()), (400, "request body is larger than 10 bytes"));
    }
}
