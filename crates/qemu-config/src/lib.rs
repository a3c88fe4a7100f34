//! A typed model of one QEMU invocation, rendered to argv.
//!
//! Pure: no I/O, no async, no host probing. Build a [`Config`] from the
//! per-family types, check it with [`Config::validate`], and render it with
//! [`Config::to_args`]. Every option-list value is escaped (`,` → `,,`) by
//! [`OptList`], so no path or id can inject options.

pub mod boot;
pub mod chardev;
pub mod config;
pub mod cpu;
pub mod device;
pub mod drive;
pub mod error;
pub mod escape;
pub mod fsdev;
pub mod knobs;
pub mod machine;
pub mod memory;
pub mod netdev;
pub mod object;
mod validate;

pub use boot::{FW_CFG_MAX_NAME, FwCfg, FwCfgSource, Kernel, Pflash};
pub use chardev::{Chardev, MonitorMode, QmpMonitor, QmpSocket, Serial, Tpmdev};
pub use config::Config;
pub use cpu::{Cpu, Smp};
pub use device::{
    Device, Generic, IntelIommu, MIN_GUEST_CID, Nvdimm, PciBridge, PciePciBridge, PcieRootPort,
    Pvpanic, PvpanicPci, RefKind, ScsiHd, TpmCrb, TpmTis, Transport, TransportUse,
    VIRTIO_9P_MAX_TAG, VIRTIO_FS_MAX_TAG, VfioPci, VhostUserFs, VhostVsock, VirtConsole,
    VirtSerialPort, Virtio9p, VirtioBalloon, VirtioBlk, VirtioMem, VirtioNet, VirtioRng,
    VirtioScsi, VirtioSerial,
};
pub use drive::Drive;
pub use error::ValidationError;
pub use escape::{OptList, escape};
pub use fsdev::{Fsdev, Multidevs, SecurityModel};
pub use knobs::{
    AddFd, Global, Incoming, Knobs, Rtc, RtcBase, RtcClock, RtcDriftfix, Sandbox, SandboxAction,
};
pub use machine::{Machine, RootBus};
pub use memory::{MAX_RAM_SLOTS, Memory, NumaNode};
pub use netdev::{HostFwd, Netdev, Protocol};
pub use object::{Object, ObjectKind};
pub use validate::is_valid_id;
