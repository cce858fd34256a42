//! berth-image: the image side of berthd's storage.
//!
//! References and digests, a crash-safe content-addressed blob store, safe
//! layer unpacking for overlayfs, image metadata, tags and garbage collection.
//! Every API is synchronous: the engine calls it from `spawn_blocking`.

pub mod archive;
pub mod digest;
pub mod error;
pub mod reference;
pub mod store;
mod sys;
pub mod unpack;

pub use digest::{Digest, Hasher};
pub use error::ImageError;
pub use reference::{looks_like_id, Reference};
pub use store::{
    Compression, GcStats, ImageRecord, Ingest, LayerInfo, Lease, Store, StoreLimits,
};
