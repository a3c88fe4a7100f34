//! Kata keys that change the QEMU command line, checked against real QEMU
//! started paused: the disks' sector sizes and independent iothreads, and the
//! extra monitor socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod qemu_support;

use qemu_config::{Drive, QmpSocket, ScsiHd, VirtioBlk};
use qemu_support::*;
use runtime::tools::files;
use sandvm_tests::*;
use serde_json::json;

/// `block_device_logical_sector_size` / `block_device_physical_sector_size`
/// on the two disk devices the runtime cold- and hotplugs (virtio-blk on a
/// root port, scsi-hd on the `scsi0` controller it renders): real QEMU starts
/// paused with them and reports the sizes on both devices. With
/// `indep_iothreads`, QEMU has the iothreads the runtime rendered and the
/// virtio-blk disk runs on the first.
#[tokio::test(flavor = "current_thread")]
async fn disk_sector_sizes_and_iothreads_reach_qemu() {
    let env = Env::new("acc-sectors");
    let (dir, kernel) = paused_scratch(&env);
    let bin = qemu("qemu-system-x86_64");
    let toml = format!(
        "[hypervisor.qemu]\npath = \"{}\"\nkernel = \"{}\"\nmachine_type = \"q35\"\n\
         default_memory = 256\ndefault_maxmemory = 1024\npcie_root_port = 1\n\
         shared_fs = \"none\"\naccelerator = \"tcg\"\nblock_device_driver = \"virtio-scsi\"\n\
         block_device_logical_sector_size = 512\nblock_device_physical_sector_size = 4096\n\
         enable_iothreads = true\nindep_iothreads = 2\n",
        bin.display(),
        kernel.display(),
    );
    let cfg = hypervisor_config(&env.root, &toml);
    let (logical, physical) = (
        cfg.block.logical_sector_size,
        cfg.block.physical_sector_size,
    );
    assert_eq!((logical, physical), (Some(512), Some(4096)));
    let mut config = plan_tcg(&cfg, &dir);
    qmp_on_fd3(&mut config);
    config.kernel = None;
    config.knobs.stopped = true;
    for id in ["drive-blk", "drive-hd"] {
        let disk = env.root.join(format!("{id}.img"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(4 * MIB)
            .unwrap();
        config
            .drives
            .push(Drive::raw(id, disk.display().to_string()));
    }
    config.devices.push(
        VirtioBlk {
            id: "blk".into(),
            drive: "drive-blk".into(),
            bus: Some("rp0".into()),
            iothread: Some("indep_iothread_0".into()),
            logical_block_size: logical,
            physical_block_size: physical,
            ..Default::default()
        }
        .into(),
    );
    config.devices.push(
        ScsiHd {
            id: "hd".into(),
            drive: "drive-hd".into(),
            bus: Some("scsi0.0".into()),
            scsi_id: Some(0),
            lun: Some(0),
            logical_block_size: logical,
            physical_block_size: physical,
        }
        .into(),
    );
    let (q, client) = start(
        &bin,
        &config,
        &dir.join(files::QMP),
        &env.root.join("qemu.log"),
    )
    .await;
    for id in ["blk", "hd"] {
        let path = format!("/machine/peripheral/{id}");
        let l = client.qom_get(&path, "logical_block_size").await.unwrap();
        let p = client.qom_get(&path, "physical_block_size").await.unwrap();
        assert_eq!((l, p), (json!(512), json!(4096)), "{id}: argv {:?}", q.argv);
    }
    let objects = qom_children(&client, "/objects").await;
    for t in ["indep_iothread_0", "indep_iothread_1"] {
        assert!(objects.contains(t), "{t}: {objects:?}");
    }
    let io = client
        .qom_get("/machine/peripheral/blk", "iothread")
        .await
        .unwrap();
    assert_eq!(io, json!("/objects/indep_iothread_0"), "argv {:?}", q.argv);
    quit(q, client).await;
}

/// `extra_monitor_socket = "qmp"` (with `enable_debug`): real QEMU started
/// paused serves a second QMP monitor on the rendered socket in the sandbox
/// folder, and it answers.
#[tokio::test(flavor = "current_thread")]
async fn the_extra_monitor_socket_answers_qmp() {
    let env = Env::new("acc-extra-mon");
    let (dir, kernel) = paused_scratch(&env);
    let bin = qemu("qemu-system-x86_64");
    let toml = format!(
        "[hypervisor.qemu]\npath = \"{}\"\nkernel = \"{}\"\nmachine_type = \"q35\"\n\
         default_memory = 256\ndefault_maxmemory = 1024\nshared_fs = \"none\"\n\
         accelerator = \"tcg\"\nenable_debug = true\nextra_monitor_socket = \"qmp\"\n",
        bin.display(),
        kernel.display(),
    );
    let cfg = hypervisor_config(&env.root, &toml);
    let mut config = plan_tcg(&cfg, &dir);
    let extra = config.qmp.pop().expect("the extra monitor");
    let path = dir.join(files::EXTRA_MONITOR);
    assert_eq!(
        extra.socket,
        QmpSocket::Path(path.display().to_string()),
        "{extra:?}"
    );
    qmp_on_fd3(&mut config);
    config.qmp.push(extra);
    config.kernel = None;
    config.knobs.stopped = true;
    let (q, client) = start(
        &bin,
        &config,
        &dir.join(files::QMP),
        &env.root.join("qemu.log"),
    )
    .await;
    let opts = qmp::ClientOptions {
        handshake_timeout: QMP_TIMEOUT,
        command_timeout: Some(QMP_TIMEOUT),
        ..Default::default()
    };
    let second = qmp::Client::connect_with(&path, opts)
        .await
        .unwrap_or_else(|e| panic!("extra monitor {}: {e}\n{}", path.display(), q.log()));
    let status = second.query_status().await.unwrap();
    assert_eq!(status.status, qmp::commands::RunState::Prelaunch);
    drop(second);
    quit(q, client).await;
}
