//! Cables: two running sandboxes joined by `sandvm link` (a socketpair as a
//! NIC in each) ping each other over guest-internal addresses, with no host
//! network. Real QEMU (TCG), the real guest, the real CLI.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;

fn boot(env: &Env, id: &str) {
    env.boot(&env.config(&format!("{id}.toml"), ""), id);
}

/// Wait in the guest for the NIC with `mac`, bring it up with `addr`; prints its name.
fn configure(env: &Env, id: &str, mac: &str, addr: &str) -> String {
    let find = format!("grep -l {mac} /sys/class/net/*/address 2>/dev/null | cut -d/ -f5");
    env.guest(
        id,
        &format!(
            "i=0; while [ -z \"$({find})\" ] && [ $i -lt 300 ]; do sleep 0.2; i=$((i+1)); done; \
             n=$({find}); ip link set $n up && ip addr add {addr}/24 dev $n && echo $n"
        ),
    )
}

#[test]
fn linked_sandboxes_ping_each_other() {
    let env = Env::new("cable");
    boot(&env, "ca");
    boot(&env, "cb");
    let (mac_a, mac_b) = ("02:5a:00:00:00:01", "02:5a:00:00:00:02");
    let r = json(&env.ok(&[
        "link", "ca", "cb", "--mac-a", mac_a, "--mac-b", mac_b, "--json",
    ]));
    assert_eq!(r["id"], "cable0", "{r}");
    assert_eq!(r["a"]["mac"], mac_a, "{r}");
    assert_eq!(r["b"]["mac"], mac_b, "{r}");
    for (id, peer) in [("ca", "cb"), ("cb", "ca")] {
        let devs = json(&env.ok(&["devices", id, "--json"]));
        let d = &devs["devices"][0];
        assert_eq!(d["id"], "cable0", "{devs}");
        assert_eq!(d["info"]["cable"], peer, "{devs}");
        assert!(d["slot"].is_object(), "on a bridge slot: {devs}");
    }
    // Linking a sandbox to itself is refused.
    let out = env.sandvm(&["link", "ca", "ca"]);
    assert!(!out.status.success());

    let na = configure(&env, "ca", mac_a, "192.168.77.1");
    let nb = configure(&env, "cb", mac_b, "192.168.77.2");
    assert!(!na.is_empty() && !nb.is_empty(), "{na:?} {nb:?}");
    let ping = env.guest(
        "ca",
        "ping -c 3 -W 5 192.168.77.2 >/tmp/p 2>&1; echo rc=$?; cat /tmp/p",
    );
    assert!(ping.contains("rc=0"), "ping over the cable failed:\n{ping}");
    assert!(ping.contains("3 packets received"), "{ping}");

    // Unplug one end; the other goes with stop.
    env.ok(&["unplug", "cb", "cable0"]);
    let devs = json(&env.ok(&["devices", "cb", "--json"]));
    assert!(devs["devices"].as_array().unwrap().is_empty(), "{devs}");
    env.ok(&["stop", "ca"]);
    env.ok(&["stop", "cb"]);
    env.assert_clean();
}
