//! berth-image: the image side of berthd's storage.
//!
//! References and digests, a crash-safe content-addressed blob store, safe
//! layer unpacking for overlayfs, image metadata, tags and garbage collection.
//! Every API is synchronous: the engine calls it from `spawn_blocking`.
//!
//! Concurrency contract for the engine:
//! - `Store` is Send + Sync; metadata (images, refs) is behind one mutex and
//!   written through to disk atomically before memory is updated.
//! - `begin_ingest` *waits* while another `Ingest` of the same digest is
//!   alive (flock on ingest/<hex>.lock); re-check `has_blob` after it returns.
//!   `try_begin_ingest` fails with `AlreadyInProgress` instead.
//! - `gc` only spares what images reference or what a live `Lease` covers:
//!   take a lease on blobs and chain IDs before writing/unpacking them and
//!   keep it until `put_image` has succeeded.

pub mod archive;
pub mod diff;
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
    now_rfc3339, BlobWriter, Compression, GcStats, ImageRecord, Ingest, LayerInfo, Lease, Store, StoreLimits,
};
