//! sandvm runtime: Kata-style config, the [`Hypervisor`](hypervisor::Hypervisor)
//! trait and its QEMU backend, sandbox state on disk.

pub mod accel;
pub mod config;
pub mod hypervisor;
pub mod process;
pub mod qemu;
pub mod security;
pub mod state;
pub mod stats;
pub mod supervise;

pub use hypervisor::{Hypervisor, HypervisorError};
pub use qemu::Qemu;
