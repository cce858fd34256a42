//! Issue 5: networks and published ports, with the real `docker` CLI. berthd runs inside the
//! test's loopback-only namespace, so its bridges, veths and nftables table live there and all
//! traffic stays on loopback or on those bridges.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use berth_tests::berthd::Berthd;
use berth_tests::fixtures::Fixtures;
use berth_tests::image::WEB_MARKER;
use berth_tests::netns::NetNs;
use berth_tests::require_berthd;
use berth_tests::world::World;

/// One GET, retried for a while when the relay resets the connection: `docker run -d`
/// returns once the container started, maybe before its server listens (as with Docker), and
/// the relay then finds nothing to connect to.
fn http_get(ns: &NetNs, addr: &str) -> std::io::Result<String> {
    let once = || -> std::io::Result<String> {
        let mut s = ns.connect_tcp(addr).map_err(|e| std::io::Error::other(e.to_string()))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match once() {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(100))
            }
            Ok(out) if out.is_empty() && std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            r => return r,
        }
    }
}

/// Interface names in berthd's namespace.
fn links(ns: &NetNs) -> Vec<String> {
    let out = ns.command("ip").args(["-o", "link"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_string()))
        .collect()
}

fn nft_tables(ns: &NetNs) -> String {
    let out = ns.command("nft").args(["list", "tables"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Wait until no veth is left in berthd's namespace (the kernel removes a stopped container's
/// namespace and its veth pair asynchronously, within milliseconds).
fn no_veths(ns: &NetNs) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let l = links(ns);
        if !l.iter().any(|n| n.starts_with("veth")) {
            return;
        }
        assert!(Instant::now() < deadline, "veths left: {l:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn json(w: &Berthd, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&w.docker_ok(args)).unwrap()
}

#[test]
fn containers_find_each_other_by_name_and_alias_and_networks_are_isolated() {
    require_berthd!();
    let w = World::start();
    let web = w.pulled("web:latest");
    let bb = w.pulled("busybox:latest");
    let d = &w.d;
    let ns = &w.fx.ns;
    d.docker_ok(&["network", "create", "--label", "app=shop", "front"]);
    d.docker_ok(&["network", "create", "--subnet", "10.123.0.0/24", "--gateway", "10.123.0.254", "back"]);
    let r = d.docker(&["network", "create", "front"]).assert_fail();
    assert!(r.stderr.contains("already exists"), "{}", r.stderr);
    d.docker_ok(&["run", "-d", "--name", "web", "--network", "front", "--network-alias", "shop", &web]);
    // By name and by alias, with wget as the issue says.
    for host in ["web", "shop", "WEB"] {
        let out = d.docker_ok(&["run", "--rm", "--network", "front", &bb, "wget", "-qO-", &format!("http://{host}/")]);
        assert!(out.contains(WEB_MARKER), "{host}: {out}");
    }
    // The resolver is Docker's address.
    let resolv = d.docker_ok(&["run", "--rm", "--network", "front", &bb, "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 127.0.0.11"), "{resolv}");
    // Another network: the name does not resolve, and the address is not reachable either.
    let web_ip = json(d, &["inspect", "web"])[0]["NetworkSettings"]["Networks"]["front"]["IPAddress"].as_str().unwrap().to_string();
    assert!(!web_ip.is_empty());
    let r = d.docker(&["run", "--rm", "--network", "back", &bb, "wget", "-qO-", "-T", "2", "http://web/"]);
    assert!(!r.success(), "name resolved across networks: {r:?}");
    let r = d.docker(&["run", "--rm", "--network", "back", &bb, "wget", "-qO-", "-T", "2", &format!("http://{web_ip}/")]);
    assert!(!r.success(), "address reachable across networks: {r:?}");
    // --ip and the gateway of a user network.
    let out = d.docker_ok(&["run", "--rm", "--network", "back", "--ip", "10.123.0.7", &bb, "sh", "-c", "ip -4 -o addr show eth0; ip route"]);
    assert!(out.contains("10.123.0.7/24"), "{out}");
    assert!(out.contains("default via 10.123.0.254"), "{out}");
    // --mac-address: the interface has it, on the default bridge and on a user network, and
    // inspect shows it; a bad one is refused with Docker's words (the CLI checks it too).
    let mac = "02:42:0a:7b:00:99";
    let out = d.docker_ok(&["run", "--rm", "--mac-address", "02:42:0A:7B:00:99", &bb, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(out.trim(), mac);
    let out = d.docker_ok(&["run", "--rm", "--network", "back", "--mac-address", mac, &bb, "cat", "/sys/class/net/eth0/address"]);
    assert_eq!(out.trim(), mac);
    d.docker_ok(&["run", "-d", "--name", "macd", "--mac-address", mac, &bb, "sleep", "600"]);
    let st = &json(d, &["inspect", "macd"])[0]["NetworkSettings"];
    assert_eq!((st["MacAddress"].as_str(), st["Networks"]["bridge"]["MacAddress"].as_str()), (Some(mac), Some(mac)), "{st}");
    d.docker_ok(&["rm", "-f", "macd"]);
    // Before it runs, the configured address is what inspect shows.
    d.docker_ok(&["create", "--name", "macc", "--mac-address", mac, &bb, "true"]);
    assert_eq!(json(d, &["inspect", "macc"])[0]["NetworkSettings"]["Networks"]["bridge"]["MacAddress"], mac);
    d.docker_ok(&["rm", "macc"]);
    for body in [serde_json::json!({"Image": bb, "MacAddress": "01:00:5e:00:00:01"}),
        serde_json::json!({"Image": bb, "NetworkingConfig": {"EndpointsConfig": {"back": {"MacAddress": "02:42:zz:00:00:01"}}}})]
    {
        let r = d.api_post("/v1.47/containers/create", Some(&body)).unwrap();
        assert_eq!(r.status, 400, "{}", r.text());
        assert!(r.json().unwrap()["message"].as_str().unwrap().ends_with("is not a valid mac address"), "{}", r.text());
    }
    // --aux-address: reserved addresses are never handed out, and inspect keeps them.
    d.docker_ok(&["network", "create", "--subnet", "10.124.0.0/29", "--aux-address", "h1=10.124.0.2", "--aux-address", "h2=10.124.0.3", "aux"]);
    let ipam = &json(d, &["network", "inspect", "aux"])[0]["IPAM"]["Config"][0];
    assert_eq!(ipam["AuxiliaryAddresses"], serde_json::json!({"h1": "10.124.0.2", "h2": "10.124.0.3"}), "{ipam}");
    let out = d.docker_ok(&["run", "--rm", "--network", "aux", &bb, "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(out.contains("10.124.0.4/29"), "{out}");
    let r = d.docker(&["run", "--rm", "--network", "aux", "--ip", "10.124.0.2", &bb, "true"]);
    assert!(!r.success() && r.stderr.contains("in use"), "{r:?}");
    d.docker_ok(&["network", "rm", "aux"]);
    // --ip-range: addresses come from the range.
    d.docker_ok(&["network", "create", "--subnet", "10.127.0.0/24", "--ip-range", "10.127.0.128/25", "ranged"]);
    assert_eq!(json(d, &["network", "inspect", "ranged"])[0]["IPAM"]["Config"][0]["IPRange"], "10.127.0.128/25");
    let out = d.docker_ok(&["run", "--rm", "--network", "ranged", &bb, "ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(out.contains("10.127.0.128/24"), "{out}");
    d.docker_ok(&["network", "rm", "ranged"]);
    let r = d.docker(&["network", "create", "--subnet", "10.125.0.0/24", "--aux-address", "h=10.126.0.2", "aux2"]);
    assert!(!r.success() && r.stderr.contains("no matching subnet for aux-address 10.126.0.2"), "{r:?}");
    // connect: a running container joins a second network, and names resolve there at once.
    d.docker_ok(&["run", "-d", "--name", "client", "--network", "back", &bb, "sleep", "600"]);
    d.docker_ok(&["network", "connect", "--alias", "cli", "front", "client"]);
    let out = d.docker_ok(&["exec", "client", "wget", "-qO-", "http://shop/"]);
    assert!(out.contains(WEB_MARKER), "{out}");
    let out = d.docker_ok(&["exec", "web", "nslookup", "cli", "127.0.0.11"]);
    assert!(out.contains("Address"), "{out}");
    let inspect = json(d, &["network", "inspect", "front"]);
    let members = inspect[0]["Containers"].as_object().unwrap();
    assert_eq!(members.len(), 2, "{inspect}");
    assert_eq!(inspect[0]["Labels"]["app"], "shop");
    d.docker_ok(&["network", "disconnect", "front", "client"]);
    let r = d.docker(&["exec", "client", "wget", "-qO-", "-T", "2", "http://shop/"]);
    assert!(!r.success(), "still connected after disconnect: {r:?}");
    // A network in use is not removed.
    let r = d.docker(&["network", "rm", "front"]).assert_fail();
    assert!(r.stderr.contains("active endpoints"), "{}", r.stderr);
    let r = d.docker(&["network", "rm", "bridge"]).assert_fail();
    assert!(r.stderr.contains("pre-defined"), "{}", r.stderr);
    let ls = d.docker_ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    for want in ["bridge bridge", "host host", "none null", "front bridge", "back bridge"] {
        assert!(ls.lines().any(|l| l == want), "{want} missing: {ls}");
    }
    d.docker_ok(&["rm", "-f", "web", "client"]);
    no_veths(ns);
    d.docker_ok(&["network", "rm", "front"]);
    let pruned = d.docker_ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("back"), "{pruned}");
    let ls = d.docker_ok(&["network", "ls", "-q"]);
    assert_eq!(ls.lines().count(), 3, "{ls}");
    let l = links(ns);
    assert!(!l.iter().any(|n| n.starts_with("br-")), "bridges of removed networks left: {l:?}");
}

#[test]
fn published_ports_reach_the_host_and_busy_ports_fail_cleanly() {
    require_berthd!();
    let w = World::start();
    let web = w.pulled("web:latest");
    let bb = w.pulled("busybox:latest");
    let d = &w.d;
    let ns = &w.fx.ns;
    let port = ns.free_port().unwrap();
    let events = d.api_get("/events?since=0&until=1").unwrap();
    assert_eq!(events.status, 200);
    d.docker_ok(&["run", "-d", "--name", "pub", "-p", &format!("127.0.0.1:{port}:80"), &web]);
    let page = http_get(ns, &format!("127.0.0.1:{port}")).unwrap();
    assert!(page.contains(WEB_MARKER), "{page}");
    // What the VM host agent reads: exact HostIp/HostPort.
    let c = &json(d, &["inspect", "pub"])[0];
    assert_eq!(c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostIp"], "127.0.0.1");
    assert_eq!(c["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"], port.to_string());
    assert_eq!(c["HostConfig"]["PortBindings"]["80/tcp"][0]["HostPort"], port.to_string());
    assert_eq!(d.docker_ok(&["port", "pub", "80"]).trim(), format!("127.0.0.1:{port}"));
    let ps = d.docker_ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");

    // The same port again: Docker's error, and nothing of the second container is left.
    let before = links(ns);
    let r = d.docker(&["run", "-d", "--name", "clash", "-p", &format!("127.0.0.1:{port}:80"), &web]);
    assert!(!r.success());
    assert!(r.stderr.contains("port is already allocated"), "{}", r.stderr);
    let st = json(d, &["inspect", "clash"]);
    assert_ne!(st[0]["State"]["Status"], "running");
    std::thread::sleep(Duration::from_millis(300));
    let after = links(ns);
    assert_eq!(before.iter().filter(|n| n.starts_with("veth")).count(), after.iter().filter(|n| n.starts_with("veth")).count(), "{before:?} -> {after:?}");
    let netns_dir = d.exec_root().join("netns");
    assert_eq!(std::fs::read_dir(&netns_dir).unwrap().count(), 1, "only pub's namespace file");
    d.docker_ok(&["rm", "clash"]);

    // -P: a free port from the image's EXPOSE, reported by `docker port`; UDP too.
    d.docker_ok(&["run", "-d", "--name", "all", "-P", "-p", "5353/udp", &web]);
    let out = d.docker_ok(&["port", "all", "80/tcp"]);
    let hp: u16 = out.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(hp >= 1024, "{out}");
    let page = http_get(ns, &format!("127.0.0.1:{hp}")).unwrap();
    assert!(page.contains(WEB_MARKER), "{page}");
    // Without a host IP the port is on [::] too, as with Docker: `localhost` as ::1 connects.
    assert_eq!(out.lines().collect::<Vec<_>>(), vec![format!("0.0.0.0:{hp}"), format!("[::]:{hp}")], "{out}");
    let page = http_get(ns, &format!("[::1]:{hp}")).unwrap();
    assert!(page.contains(WEB_MARKER), "{page}");
    assert!(d.docker_ok(&["port", "all"]).contains("5353/udp"));

    // host.docker.internal through host-gateway, --add-host, and the none/host/container modes.
    let out = d.docker_ok(&["run", "--rm", "--add-host", "host.docker.internal:host-gateway", "--add-host", "db:10.1.2.3", &bb, "cat", "/etc/hosts"]);
    let gw = json(d, &["network", "inspect", "bridge"])[0]["IPAM"]["Config"][0]["Gateway"].as_str().unwrap().to_string();
    assert!(out.contains(&format!("{gw}\thost.docker.internal")), "{out}");
    assert!(out.contains("10.1.2.3\tdb"), "{out}");
    let out = d.docker_ok(&["run", "--rm", "--network", "none", &bb, "ip", "-o", "link"]);
    assert_eq!(out.lines().count(), 1, "{out}");
    let out = d.docker_ok(&["run", "--rm", "--network", "container:pub", &bb, "wget", "-qO-", "http://127.0.0.1/"]);
    assert!(out.contains(WEB_MARKER), "{out}");
    // The default bridge: own address, default route via its gateway.
    let out = d.docker_ok(&["run", "--rm", &bb, "ip", "route"]);
    assert!(out.contains(&format!("default via {gw}")), "{out}");

    // Events the host agent forwards ports on: start/die plus network connect/disconnect.
    d.docker_ok(&["rm", "-f", "pub", "all"]);
    let ev = d.docker_ok(&["events", "--since", "0", "--until", &format!("{}", chrono_now() + 1), "--filter", "type=network", "--format", "{{.Action}}"]);
    assert!(ev.lines().any(|l| l == "connect") && ev.lines().any(|l| l == "disconnect"), "{ev}");
    // The port is free again after rm.
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    ns.bind_tcp(&format!("127.0.0.1:{port}")).expect("published port released at rm");
    no_veths(ns);
    assert_eq!(std::fs::read_dir(&netns_dir).unwrap().count(), 0);
}

fn chrono_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// Internal networks, DNS forwarding to an upstream on loopback, live-restore of DNS and ports
/// across a berthd restart and a kill -9, and a clean host after the daemon stops.
#[test]
fn internal_forwarding_live_restore_and_nothing_left() {
    require_berthd!();
    let fx = Fixtures::start().unwrap();
    // A fake upstream resolver on the test namespace's loopback: answers every A query.
    let up = fx.ns.run(|| std::net::UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    let up_addr = up.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = up.recv_from(&mut buf) {
            // Reply: same header with QR set, one answer pointing at the question (0xc00c).
            let mut r = buf[..n].to_vec();
            r[2] |= 0x80;
            r[7] = 1;
            r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 9, 9]);
            let _ = up.send_to(&r, from);
        }
    });
    let mut d = Berthd::start_with_args(&fx.ns, &[fx.registry.addr()], &["--dns", &up_addr.to_string()]).unwrap();
    let r = fx.reference("web:latest");
    d.docker_ok(&["pull", "-q", &r]);
    let bb = fx.reference("busybox:latest");
    d.docker_ok(&["pull", "-q", &bb]);
    let ns = &fx.ns;
    // Names outside go to the upstream (which is on loopback: nothing leaves the namespace).
    d.docker_ok(&["network", "create", "apps"]);
    let out = d.docker_ok(&["run", "--rm", "--network", "apps", &bb, "nslookup", "outside.test"]);
    assert!(out.contains("10.9.9.9"), "{out}");
    // --internal: members talk to each other, but get no default route and no NAT.
    d.docker_ok(&["network", "create", "--internal", "sealed"]);
    d.docker_ok(&["run", "-d", "--name", "inner", "--network", "sealed", &r]);
    let out = d.docker_ok(&["run", "--rm", "--network", "sealed", &bb, "sh", "-c", "wget -qO- http://inner/; ip route"]);
    assert!(out.contains(WEB_MARKER), "{out}");
    assert!(!out.contains("default"), "internal network with a default route: {out}");
    let rules = ns.command("nft").args(["list", "table", "ip", "berth"]).output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert!(rules.contains("masquerade"), "{rules}");

    // Live-restore: a running container keeps its address, its name and its published port.
    let port = ns.free_port().unwrap();
    d.docker_ok(&["run", "-d", "--name", "keep", "--network", "apps", "-p", &format!("127.0.0.1:{port}:80"), &r]);
    let ip_before = json(&d, &["inspect", "keep"])[0]["NetworkSettings"]["Networks"]["apps"]["IPAddress"].clone();
    d.restart().unwrap();
    assert!(http_get(ns, &format!("127.0.0.1:{port}")).unwrap().contains(WEB_MARKER));
    let out = d.docker_ok(&["run", "--rm", "--network", "apps", &bb, "wget", "-qO-", "http://keep/"]);
    assert!(out.contains(WEB_MARKER), "{out}");
    assert_eq!(json(&d, &["inspect", "keep"])[0]["NetworkSettings"]["Networks"]["apps"]["IPAddress"], ip_before);
    // kill -9, the container dies meanwhile, restart: everything of it is cleaned up.
    d.kill9();
    let pid = {
        let c = berth_tests::berthd::api_request(&d.socket(), "GET", "/containers/keep/json", None);
        assert!(c.is_err(), "daemon still answering after kill -9");
        let st: serde_json::Value = serde_json::from_slice(&std::fs::read(d.data_root().join("containers").join(find_id(&d, "keep")).join("container.json")).unwrap()).unwrap();
        st["state"]["pid"].as_i64().unwrap()
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    d.restart().unwrap();
    let st = json(&d, &["inspect", "keep"]);
    assert_eq!(st[0]["State"]["Status"], "exited", "{st}");
    ns.bind_tcp(&format!("127.0.0.1:{port}")).expect("the dead container's port is free");
    // Stop the rest; then a stopped daemon leaves no bridge, veth, namespace file or rule.
    d.docker_ok(&["rm", "-f", "keep", "inner"]);
    no_veths(ns);
    d.sigterm();
    let l = links(ns);
    assert!(!l.iter().any(|n| n.starts_with("br-") || n == "berth0" || n.starts_with("veth")), "{l:?}");
    assert!(!nft_tables(ns).contains("berth"), "{}", nft_tables(ns));
    assert_eq!(std::fs::read_dir(d.exec_root().join("netns")).map(|r| r.count()).unwrap_or(0), 0);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&d.exec_root().display().to_string()), "mounts left under the exec root");
    // Networks themselves persist and come back with the daemon.
    d.restart().unwrap();
    let ls = d.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(ls.lines().any(|l| l == "apps") && ls.lines().any(|l| l == "sealed"), "{ls}");
    d.docker_ok(&["network", "rm", "apps", "sealed"]);
    drop(d);
    drop(fx);
}

fn find_id(d: &Berthd, name: &str) -> String {
    for e in std::fs::read_dir(d.data_root().join("containers")).unwrap().flatten() {
        if let Ok(b) = std::fs::read(e.path().join("container.json")) {
            let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
            if v["name"] == name {
                return v["id"].as_str().unwrap().to_string();
            }
        }
    }
    panic!("no container {name}");
}

/// A datagram to a published UDP port reaches the container and its answer comes back to the
/// sender, on the host IP given and, without one, on `[::]` as well.
#[test]
fn published_udp_ports_relay_datagrams_both_ways() {
    require_berthd!();
    let w = World::start();
    let bb = w.pulled("busybox:latest");
    let d = &w.d;
    let ns = &w.fx.ns;
    let echo = berth_tests::probe::probes().unwrap().udp_echo.display().to_string();
    let (p1, p2) = (ns.free_port().unwrap(), ns.free_port().unwrap());
    d.docker_ok(&["run", "-d", "--name", "udp", "-p", &format!("127.0.0.1:{p1}:7/udp"), "-p", &format!("{p2}:7/udp"), &bb, "sleep", "300"]);
    d.docker_ok(&["cp", &echo, "udp:/udp-echo"]);
    d.docker_ok(&["exec", "-d", "udp", "/udp-echo", "7"]);
    let ask = |to: &str, msg: &str| -> String {
        let local = if to.starts_with('[') { "[::1]:0" } else { "127.0.0.1:0" };
        let s = ns.run(move || std::net::UdpSocket::bind(local).unwrap()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        // Retried: the echo server may not be bound yet right after `exec -d`.
        for _ in 0..30 {
            s.send_to(msg.as_bytes(), to).unwrap();
            let mut buf = [0u8; 1500];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return String::from_utf8_lossy(&buf[..n]).into_owned();
            }
        }
        panic!("no answer from {to}");
    };
    assert_eq!(ask(&format!("127.0.0.1:{p1}"), "one"), "echo:one");
    assert_eq!(ask(&format!("127.0.0.1:{p2}"), "two"), "echo:two");
    assert_eq!(ask(&format!("[::1]:{p2}"), "three"), "echo:three");
    let out = d.docker_ok(&["port", "udp", "7/udp"]);
    assert!(out.contains(&format!("127.0.0.1:{p1}")) && out.contains(&format!("[::]:{p2}")), "{out}");
    d.docker_ok(&["rm", "-f", "udp"]);
}
