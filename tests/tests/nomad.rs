//! What Nomad's QEMU driver and Monogon's launcher offer, in sandvm: user-mode
//! networking with port forwards, fw_cfg blobs, graceful-shutdown timeout and
//! raw extra arguments.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;
use std::io::{Read, Write};
use std::time::Duration;

fn boot(env: &Env, extra: &str, id: &str) {
    env.boot(&env.config(&format!("{id}.toml"), extra), id);
}

#[test]
fn port_forward_reaches_a_service_in_the_guest() {
    let env = Env::new("portfwd");
    boot(
        &env,
        "port_map = [{ guest = 8080 }, { guest = 5353, protocol = \"udp\" }]\n",
        "pf",
    );
    let st = json(&env.ok(&["status", "pf", "--json"]));
    let ports = st["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 2, "{st}");
    let tcp = ports.iter().find(|p| p["protocol"] == "tcp").unwrap();
    assert_eq!(tcp["guest"], 8080);
    let host = tcp["host"].as_u64().unwrap() as u16;
    assert!(host > 0, "the bound host port is reported: {st}");

    // The guest sees a virtio NIC with the slirp defaults; serve a page on it.
    let setup = "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && mkdir -p /tmp/www \
                 && echo hello-from-guest > /tmp/www/index.html && httpd -p 8080 -h /tmp/www && echo up";
    assert_eq!(env.guest("pf", setup), "up");
    let mac = env.guest("pf", "cat /sys/class/net/eth0/address");
    let first = u8::from_str_radix(&mac[..2], 16).unwrap();
    assert_eq!(
        first & 0x03,
        0x02,
        "a locally administered unicast MAC: {mac}"
    );

    let mut body = String::new();
    let fetched = eventually(Duration::from_secs(30), || {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", host)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
        body.clear();
        s.read_to_string(&mut body).is_ok() && body.contains("hello-from-guest")
    });
    assert!(fetched, "no reply through 127.0.0.1:{host}: {body:?}");
    env.ok(&["stop", "pf"]);
    env.assert_clean();
}

#[test]
fn fw_cfg_blobs_and_extra_args_reach_the_guest() {
    let env = Env::new("fwcfg");
    let blob = env.root.join("blob.txt");
    std::fs::write(&blob, "blob-from-file").unwrap();
    let extra = format!(
        "fw_cfg = [{{ name = \"opt/org.sandvm/file\", file = \"{}\" }}, {{ name = \"opt/org.sandvm/str\", string = \"a,b=c\" }}]\n\
         qemu_extra_args = [\"-smbios\", \"type=1,serial=sandvm-extra-7\"]\ngraceful_shutdown_timeout = 0\n",
        blob.display()
    );
    boot(&env, &extra, "fw");
    let d = "/sys/firmware/qemu_fw_cfg/by_name/opt/org.sandvm";
    assert_eq!(
        env.guest("fw", &format!("cat {d}/file/raw")),
        "blob-from-file"
    );
    assert_eq!(env.guest("fw", &format!("cat {d}/str/raw")), "a,b=c");
    assert_eq!(
        env.guest("fw", "cat /sys/class/dmi/id/product_serial"),
        "sandvm-extra-7"
    );
    // graceful_shutdown_timeout = 0: stop kills at once.
    env.ok(&["stop", "fw"]);
    env.assert_clean();
}
