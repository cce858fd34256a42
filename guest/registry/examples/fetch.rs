//! Manual check against a real registry:
//! `cargo run -p berth-registry --example fetch -- REGISTRY REPO REFERENCE [USER PASSWORD]`
//! Logs in (if credentials are given), fetches the manifest, picks the host platform from an
//! index, and downloads (and digest-checks) the config and layers.

use berth_registry::manifest::{self, ParsedManifest};
use berth_registry::{Auth, Client, ClientConfig, Repository};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 3 && args.len() != 5 {
        eprintln!("usage: fetch REGISTRY REPO REFERENCE [USER PASSWORD]");
        std::process::exit(2);
    }
    let auth = if args.len() == 5 {
        Auth::Basic {
            username: args[3].clone(),
            password: args[4].clone(),
        }
    } else {
        Auth::Anonymous
    };
    let client = Client::new(ClientConfig::default())?;
    let repo = Repository {
        registry: args[0].clone(),
        name: args[1].clone(),
    };
    println!("base url: {}", client.base_url(&repo.registry)?);
    if !matches!(auth, Auth::Anonymous) {
        client.login(&repo.registry, &auth).await?;
        println!("login ok");
    }
    let mut m = client.get_manifest(&repo, &args[2], &auth).await?;
    println!(
        "manifest {} {} ({} bytes)",
        m.media_type,
        m.digest,
        m.bytes.len()
    );
    let image = loop {
        match manifest::parse(&m.media_type, &m.bytes)? {
            ParsedManifest::Image(i) => break i,
            ParsedManifest::Index(idx) => {
                let p = manifest::host_platform();
                let d =
                    manifest::select_platform(&idx, &p.os, &p.architecture, p.variant.as_deref())
                        .ok_or("no manifest for host platform")?;
                println!("index -> {}", d.digest);
                m = client.get_manifest(&repo, &d.digest, &auth).await?;
            }
        }
    };
    for d in std::iter::once(&image.config).chain(image.layers.iter()) {
        let mut blob = client.get_blob(&repo, &d.digest, &auth, 0).await?;
        let mut h = Sha256::new();
        let mut n = 0u64;
        while let Some(chunk) = blob.stream.next().await {
            let chunk = chunk?;
            n += chunk.len() as u64;
            h.update(&chunk);
        }
        let got = format!("sha256:{}", hex::encode(h.finalize()));
        println!(
            "blob {} {} bytes digest {}",
            d.media_type,
            n,
            if got == d.digest { "ok" } else { "MISMATCH" }
        );
    }
    Ok(())
}
