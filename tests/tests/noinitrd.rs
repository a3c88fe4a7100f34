//! Kata's image-only boot, no initrd: the no-initrd kernel (every driver built
//! in, `scripts/build-kernel.sh`) mounts the root image itself and runs the
//! image's own `/sbin/init`, which prints the ready line and keeps the console
//! shell. Real QEMU (TCG), the real guest, the real CLI; each test asks the
//! guest where its `/` is and ends with the leak check.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sandvm_tests::*;

/// What the guest reports about its `/`.
#[derive(Debug)]
struct Root {
    /// The block device, from the root mount's major:minor in
    /// `/proc/self/mountinfo` looked up in `/sys/dev/block` (a root the kernel
    /// mounted itself is named `/dev/root` in `/proc/mounts`).
    dev: String,
    /// The file system type, from `/proc/mounts`.
    fstype: String,
    /// The mount options, from `/proc/mounts`.
    opts: Vec<String>,
}

impl Root {
    fn has(&self, opt: &str) -> bool {
        self.opts.iter().any(|o| o == opt)
    }
}

/// Ask the guest's shell where `/` is mounted.
fn guest_root(env: &Env, id: &str) -> Root {
    let out = env.guest(
        id,
        "d=$(awk '$5==\"/\"{print $3}' /proc/self/mountinfo | tail -1); \
         echo DEV=$(sed -n 's/^DEVNAME=//p' /sys/dev/block/$d/uevent); \
         awk '$2==\"/\"{print \"MNT=\" $3 \" \" $4}' /proc/mounts | tail -1",
    );
    let field = |key: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in the guest's answer: {out:?}"))
            .to_string()
    };
    let mnt = field("MNT=");
    let (fstype, opts) = mnt.split_once(' ').unwrap_or((&mnt, ""));
    Root {
        dev: field("DEV="),
        fstype: fstype.to_string(),
        opts: opts.split(',').map(str::to_string).collect(),
    }
}

/// Boot `cfg` as sandbox `id` and check what every no-initrd boot shows: QEMU
/// got the no-initrd kernel and no `-initrd`, the guest runs that kernel
/// (its release string), and that kernel has no module support, so nothing
/// was loaded from anywhere: the drivers that reached the root are built in.
fn boot_without_initrd(env: &Env, cfg: &std::path::Path, id: &str) {
    env.boot(cfg, id);
    let pid = env.qemu_pid(id);
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert!(
        !argv.iter().any(|a| a == "-initrd"),
        "QEMU got an initrd: {argv:?}"
    );
    let kernel = argv
        .iter()
        .position(|a| a == "-kernel")
        .map(|i| &argv[i + 1]);
    assert_eq!(
        kernel.map(String::as_str),
        noinitrd_kernel().to_str(),
        "{argv:?}"
    );
    let release = std::fs::read_to_string(repo().join("build/guest/vmlinuz-noinitrd.release"))
        .expect("build/guest/vmlinuz-noinitrd.release is missing: run `make guest`");
    assert_eq!(env.guest(id, "uname -r"), release.trim());
    assert_eq!(
        env.guest(id, "[ -e /proc/modules ] && echo modules || echo built-in"),
        "built-in"
    );
}

/// A shipped config with the guest's assets by absolute path, under TCG, with
/// `extra` lines appended (the file ends in its `[hypervisor.qemu]` table).
fn shipped(env: &Env, file: &str, extra: &str) -> std::path::PathBuf {
    let kernel = noinitrd_kernel();
    let dir = kernel.parent().unwrap().to_path_buf();
    let _ = guest();
    let text = std::fs::read_to_string(repo().join("configs").join(file))
        .unwrap()
        .replace("../build/guest/", &format!("{}/", dir.display()))
        .replace("accelerator = \"auto\"", "accelerator = \"tcg\"");
    let cfg = env.root.join(file);
    std::fs::write(&cfg, format!("{text}{extra}")).unwrap();
    cfg
}

#[test]
fn image_on_nvdimm_is_the_dax_root_without_initrd() {
    let env = Env::new("ni-nvdimm");
    let cfg = shipped(&env, "qemu-x86_64-noinitrd.toml", "");
    boot_without_initrd(&env, &cfg, "n1");
    let root = guest_root(&env, "n1");
    assert_eq!(root.dev, "pmem0p1", "{root:?}");
    assert_eq!(root.fstype, "ext4", "{root:?}");
    assert!(root.has("ro"), "root is not read-only: {root:?}");
    assert!(
        root.opts
            .iter()
            .any(|o| o == "dax" || o.starts_with("dax=")),
        "root is not mounted with DAX: {root:?}"
    );
    assert_eq!(env.guest("n1", "ls /dev | grep -c '^vd' || true"), "0");
    env.ok(&["stop", "n1"]);
    env.assert_clean();
}

#[test]
fn image_on_virtio_blk_is_the_read_only_root_without_initrd() {
    let env = Env::new("ni-blk");
    let cfg = shipped(
        &env,
        "qemu-x86_64-noinitrd.toml",
        "disable_image_nvdimm = true\n",
    );
    boot_without_initrd(&env, &cfg, "b1");
    assert_blk_root(&env, "b1");
    env.ok(&["stop", "b1"]);
    env.assert_clean();
}

#[test]
fn microvm_image_on_virtio_blk_is_the_read_only_root_without_initrd() {
    let env = Env::new("ni-microvm");
    let cfg = shipped(&env, "qemu-microvm.toml", "");
    // The shipped microvm config boots the initramfs: swap in the no-initrd
    // kernel and the image.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let dir = noinitrd_kernel().parent().unwrap().display().to_string();
    let from = format!("kernel = \"{dir}/vmlinuz\"\ninitrd = \"{dir}/initramfs.cpio.gz\"\n");
    let to = format!("kernel = \"{dir}/vmlinuz-noinitrd\"\nimage = \"{dir}/rootfs-dax.img\"\n");
    assert!(
        text.contains(&from),
        "configs/qemu-microvm.toml changed: {text}"
    );
    std::fs::write(&cfg, text.replace(&from, &to)).unwrap();
    boot_without_initrd(&env, &cfg, "m1");
    let state = std::fs::read_to_string(env.root.join("m1/state.json")).unwrap();
    assert!(state.contains("microvm,"), "{state}");
    assert_blk_root(&env, "m1");
    env.ok(&["stop", "m1"]);
    env.assert_clean();
}

/// `/` is the first partition of the first virtio disk, read-only both as a
/// mount and as a disk (Kata attaches the image read-only), and no nvdimm.
fn assert_blk_root(env: &Env, id: &str) {
    let root = guest_root(env, id);
    assert_eq!(root.dev, "vda1", "{root:?}");
    assert_eq!(root.fstype, "ext4", "{root:?}");
    assert!(root.has("ro"), "root is not mounted read-only: {root:?}");
    assert_eq!(env.guest(id, "cat /sys/block/vda/ro"), "1");
    assert_eq!(
        env.guest(id, "ls /dev | grep -c '^pmem' || true"),
        "0",
        "an nvdimm besides the disk"
    );
}
