//! Facts about the host and effects on its processes: the accelerator
//! decision (and its KVM probe), process identity, exits and signals,
//! security (SELinux labels, QEMU's identity, the BPF JIT hint) and
//! resource figures from procfs.

pub mod accel;
pub mod process;
pub mod security;
pub mod spawn;
pub mod stats;
