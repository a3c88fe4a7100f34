//! What Nomad's QEMU driver and Monogon's launcher offer, in sandvm: user-mode
//! networking with TCP and UDP port forwards, fw_cfg blobs, graceful-shutdown
//! timeout and raw extra arguments.
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

/// A UDP echo server for the guest, whose busybox has no UDP server (its
/// `nc` speaks TCP only): it answers each datagram with `echo:` and the
/// datagram, to the sender. Built static by the host's C compiler.
const UDP_ECHO_C: &str = r#"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
  struct sockaddr_in a = {0};
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  a.sin_family = AF_INET;
  a.sin_port = htons(argc > 1 ? atoi(argv[1]) : 0);
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) < 0) {
    perror("udp-echo");
    return 1;
  }
  printf("udp-echo: listening\n");
  fflush(stdout);
  for (;;) {
    char in[1500], out[1505];
    struct sockaddr_in from;
    socklen_t n = sizeof from;
    ssize_t len = recvfrom(s, in, sizeof in, 0, (struct sockaddr *)&from, &n);
    if (len < 0)
      continue;
    memcpy(out, "echo:", 5);
    memcpy(out + 5, in, len);
    sendto(s, out, len + 5, 0, (struct sockaddr *)&from, n);
  }
}
"#;

/// The UDP echo server built static into a raw disk image (padded to whole
/// sectors); returns the image and the binary's size.
fn udp_echo_disk(env: &Env) -> (std::path::PathBuf, u64) {
    let src = env.root.join("udp-echo.c");
    let bin = env.root.join("udp-echo");
    std::fs::write(&src, UDP_ECHO_C).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-static", "-Os", "-s", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cc: {e}: run `make setup` (a C compiler and static libc)"));
    assert!(
        cc.status.success(),
        "cc -static failed (run `make setup`): {}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let size = std::fs::metadata(&bin).unwrap().len();
    let img = env.root.join("udp-echo.img");
    std::fs::copy(&bin, &img).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    f.set_len(size.div_ceil(512) * 512).unwrap();
    (img, size)
}

#[test]
fn udp_port_forward_carries_a_datagram_to_the_guest_and_back() {
    let env = Env::new("udpfwd");
    let (img, size) = udp_echo_disk(&env);
    let cfg = env.config(
        "u.toml",
        "port_map = [{ guest = 5353, protocol = \"udp\" }]\nblock_device_driver = \"virtio-blk\"\n",
    );
    let disk = format!("{}:ro", img.display());
    env.ok(&[
        "create",
        "--config",
        cfg.to_str().unwrap(),
        "--id",
        "u1",
        "--disk",
        &disk,
    ]);
    env.ok(&["start", "u1"]);
    env.wait_ready("u1");
    let st = json(&env.ok(&["status", "u1", "--json"]));
    let udp = &st["ports"].as_array().unwrap()[0];
    assert_eq!(udp["protocol"], "udp", "{st}");
    assert_eq!(udp["guest"], 5353, "{st}");
    let host = udp["host"].as_u64().unwrap() as u16;
    assert!(host > 0, "the bound host port is reported: {st}");

    // The server comes off the disk; the guest's NIC gets the slirp address.
    let setup = format!(
        "for i in $(seq 50); do [ -b /dev/vda ] && break; usleep 200000; done; \
         head -c {size} /dev/vda > /tmp/udp-echo && chmod +x /tmp/udp-echo && \
         ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && \
         (/tmp/udp-echo 5353 > /tmp/udp-echo.log 2>&1 &) && \
         for i in $(seq 50); do grep -q listening /tmp/udp-echo.log && break; usleep 200000; done; \
         cat /tmp/udp-echo.log"
    );
    assert_eq!(env.guest("u1", &setup), "udp-echo: listening");

    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    // UDP may drop a datagram: send again until one comes back.
    let echoed = eventually(Duration::from_secs(60), || {
        sock.send_to(b"ping-from-host-42", ("127.0.0.1", host))
            .unwrap();
        let mut buf = [0u8; 1500];
        match sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                answer = String::from_utf8_lossy(&buf[..n]).into_owned();
                true
            }
            Err(_) => false,
        }
    });
    assert!(echoed, "no answer through udp 127.0.0.1:{host}");
    assert_eq!(answer, "echo:ping-from-host-42");
    env.ok(&["stop", "u1"]);
    env.assert_clean();
}

/// The test guest as one bootable disk (`make guest`), for a config with an
/// image and no kernel.
fn boot_disk() -> std::path::PathBuf {
    let p = repo().join("build/guest/boot-disk.img");
    assert!(
        p.exists(),
        "{} is missing: run `make setup` and `make guest`",
        p.display()
    );
    p
}

#[test]
fn a_whole_disk_boots_through_the_firmware_and_its_poweroff_is_the_exit() {
    let env = Env::new("diskboot");
    let cfg = env.root.join("disk.toml");
    std::fs::write(
        &cfg,
        format!(
            "[hypervisor.qemu]\npath = \"{}\"\nimage = \"{}\"\ndefault_vcpus = 1\n\
             default_maxvcpus = 1\ndefault_memory = 256\nshared_fs = \"none\"\naccelerator = \"tcg\"\n",
            qemu("qemu-system-x86_64").display(),
            boot_disk().display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    // The firmware boots the image: no kernel, no initrd, no command line.
    let argv: Vec<String> =
        serde_json::from_value(json(&env.ok(&["cmdline", "--config", c, "--json"]))).unwrap();
    for flag in ["-kernel", "-initrd", "-append"] {
        assert!(!argv.iter().any(|a| a == flag), "{flag} in {argv:?}");
    }
    let disk = argv
        .iter()
        .find(|a| a.contains("drive=rootdisk"))
        .unwrap_or_else(|| panic!("no boot disk in {argv:?}"));
    assert!(disk.contains("bootindex=0"), "{disk}");

    env.boot(&cfg, "d1");
    assert_eq!(env.guest("d1", "echo $((6*7))"), "42");
    // The kernel came off the disk: syslinux's LINUX line, not QEMU's -kernel.
    let cmdline = env.guest("d1", "cat /proc/cmdline");
    assert!(cmdline.contains("BOOT_IMAGE=/vmlinuz"), "{cmdline}");

    // The guest powers itself off: that is the VM's exit, for `wait` and `status`.
    let waiter = env.spawn(&["wait", "d1", "--json"]);
    let _ = env.sandvm(&["console", "d1", "--send", "poweroff -f"]);
    let out = finish(waiter, "sandvm wait");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(json(&stdout)["reason"], "guest-powered-off", "{stdout}");
    // The supervisor records the exit a moment after QEMU is gone.
    let recorded = eventually(Duration::from_secs(30), || {
        json(&env.ok(&["status", "d1", "--json"]))["exit"]["reason"] == "guest-powered-off"
    });
    let st = json(&env.ok(&["status", "d1", "--json"]));
    assert!(recorded, "{st}");
    assert_eq!(st["state"], "stopped", "{st}");
    env.ok(&["stop", "d1"]);
    env.assert_clean();
}
