//! berth-bench: Berth side by side with its peers, measured in one run on one machine.
//!
//! Three groups of subjects, each compared against Berth's own:
//! - daemons: berthd, dockerd 20.10 and podman 4 (its Docker API service), all driven by the
//!   same docker CLI ([`peers`]);
//! - OCI runtimes: berth-oci (Berth's own), crun and runc on one prepared bundle
//!   ([`runtimes`]);
//! - the Berth VM: berthd in the VM through the host agent, against a bare kernel boot on the
//!   same QEMU command line and the same berthd natively ([`vm`]).
//!
//! A [`scenario::Scenario`] is the extension point: [`scenarios`] lists them all. The runner
//! ([`scenario::measure`]) alternates subjects round by round ([`schedule`]), summarizes
//! ([`stats`]) and compares against the reference; [`report`] renders markdown and JSON,
//! [`plot`] the ratio SVG. Everything runs in namespaces the bench creates ([`isolate`]) and
//! [`leaks`] checks that nothing of it is left.

pub mod error;
pub mod exec;
pub mod image;
pub mod isolate;
pub mod leaks;
pub mod machine;
pub mod peers;
pub mod plot;
pub mod procs;
pub mod report;
pub mod runtimes;
pub mod scenario;
pub mod scenarios;
pub mod schedule;
pub mod stats;
pub mod suite;
pub mod vm;

pub use error::{Error, Result};
