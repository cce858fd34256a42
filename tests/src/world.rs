//! The usual test setup: seeded registries in a loopback-only namespace, and a berthd that
//! trusts both of them.

use crate::berthd::Berthd;
use crate::fixtures::Fixtures;

/// A daemon plus the seeded registries. Field order matters: berthd stops before the namespace
/// (owned by `fx`) goes.
pub struct World {
    pub d: Berthd,
    pub fx: Fixtures,
}

impl World {
    /// Start fixtures and berthd; panics with the failing step's message (this is test setup).
    pub fn start() -> World {
        let fx = Fixtures::start().expect("start fixtures");
        let d = Berthd::start(&fx.ns, &[fx.registry.addr(), fx.auth_registry.addr()]).expect("start berthd");
        World { d, fx }
    }

    /// Pull the fixture image `repo_tag` (e.g. "busybox:latest") and return its reference.
    pub fn pulled(&self, repo_tag: &str) -> String {
        let r = self.fx.reference(repo_tag);
        self.d.docker_ok(&["pull", "-q", &r]);
        r
    }
}
