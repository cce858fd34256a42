//! One call that sets up the standard offline world: a namespace, an open registry and an
//! auth registry, seeded with the fixture images.

use std::collections::BTreeMap;

use crate::image::{self, Image};
use crate::netns::NetNs;
use crate::push::{ManifestFormat, Pushed, Target};
use crate::registry::{Credentials, Registry};
use crate::Result;

/// User of the auth registry.
pub const AUTH_USER: &str = "berth";
/// Password of the auth registry.
pub const AUTH_PASSWORD: &str = "s3cret";

/// Repos seeded on the plain registry: (repo:tag, image, format).
pub const PLAIN_IMAGES: &[&str] = &[
    "busybox:latest",
    "busybox:oci",
    "busybox:index",
    "layered:latest",
    "web:latest",
];
/// Repo seeded on the auth registry.
pub const PRIVATE_IMAGE: &str = "private/busybox:latest";

/// The seeded world. Field order matters: registries drop (are killed) before the namespace.
pub struct Fixtures {
    pub registry: Registry,
    pub auth_registry: Registry,
    /// What was pushed, keyed by `repo:tag` (e.g. `busybox:index`, `private/busybox:latest`).
    pub pushed: BTreeMap<String, Pushed>,
    /// The images themselves, keyed by fixture name (`busybox`, `layered`, `web`).
    pub images: BTreeMap<String, Image>,
    pub ns: NetNs,
}

fn join<T>(h: std::thread::ScopedJoinHandle<'_, Result<T>>) -> Result<T> {
    h.join().unwrap_or_else(|_| {
        Err(crate::Error::Command {
            command: "registry start".into(),
            detail: "thread panicked".into(),
        })
    })
}

impl Fixtures {
    /// Start everything and seed. Well under 2 s on the test machine.
    pub fn start() -> Result<Fixtures> {
        let ns = NetNs::new()?;
        // Both registries boot and the images build at the same time: startup dominates.
        let (registry, auth_registry, images) = std::thread::scope(|s| {
            let plain = s.spawn(|| Registry::start(&ns));
            let auth = s.spawn(|| {
                Registry::start_with_auth(&ns, Credentials::new(AUTH_USER, AUTH_PASSWORD))
            });
            let images =
                (|| Ok::<_, crate::Error>((image::busybox()?, image::layered()?, image::web()?)))();
            (join(plain), join(auth), images)
        });
        let (registry, auth_registry) = (registry?, auth_registry?);
        let (busybox, layered, web) = images?;
        let mut pushed = BTreeMap::new();
        {
            let plain = Target {
                ns: &ns,
                addr: registry.addr(),
                auth: None,
            };
            pushed.insert(
                "busybox:latest".into(),
                plain.push_image("busybox", "latest", &busybox, ManifestFormat::DockerSchema2)?,
            );
            pushed.insert(
                "busybox:oci".into(),
                plain.push_image("busybox", "oci", &busybox, ManifestFormat::Oci)?,
            );
            pushed.insert(
                "busybox:index".into(),
                plain.push_image("busybox", "index", &busybox, ManifestFormat::OciIndex)?,
            );
            pushed.insert(
                "layered:latest".into(),
                plain.push_image("layered", "latest", &layered, ManifestFormat::Oci)?,
            );
            pushed.insert(
                "web:latest".into(),
                plain.push_image("web", "latest", &web, ManifestFormat::DockerSchema2)?,
            );
            let private = Target {
                ns: &ns,
                addr: auth_registry.addr(),
                auth: auth_registry.credentials(),
            };
            pushed.insert(
                PRIVATE_IMAGE.into(),
                private.push_image(
                    "private/busybox",
                    "latest",
                    &busybox,
                    ManifestFormat::DockerSchema2,
                )?,
            );
        }
        let images = BTreeMap::from([
            ("busybox".to_string(), busybox),
            ("layered".to_string(), layered),
            ("web".to_string(), web),
        ]);
        Ok(Fixtures {
            registry,
            auth_registry,
            pushed,
            images,
            ns,
        })
    }

    /// Full reference on the plain registry, e.g. `reference("busybox:oci")` ->
    /// `127.0.0.1:PORT/busybox:oci`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.registry.addr())
    }

    /// Full reference on the auth registry.
    pub fn private_reference(&self) -> String {
        format!("{}/{PRIVATE_IMAGE}", self.auth_registry.addr())
    }

    /// What was pushed for `repo:tag`. Panics on an unknown key (a test bug).
    pub fn pushed(&self, repo_tag: &str) -> &Pushed {
        self.pushed
            .get(repo_tag)
            .unwrap_or_else(|| panic!("no fixture {repo_tag}"))
    }

    /// Fixture image by name. Panics on an unknown name (a test bug).
    pub fn image(&self, name: &str) -> &Image {
        self.images
            .get(name)
            .unwrap_or_else(|| panic!("no fixture image {name}"))
    }

    /// Push client for the plain registry.
    pub fn plain_target(&self) -> Target<'_> {
        Target {
            ns: &self.ns,
            addr: self.registry.addr(),
            auth: None,
        }
    }

    /// Push client for the auth registry (with the right credentials).
    pub fn auth_target(&self) -> Target<'_> {
        Target {
            ns: &self.ns,
            addr: self.auth_registry.addr(),
            auth: self.auth_registry.credentials(),
        }
    }
}
