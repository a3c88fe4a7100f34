//! sandvm runtime: Kata-style config, the [`Hypervisor`](hypervisor::Hypervisor)
//! trait and its QEMU backend, sandbox state on disk.

pub mod config;
pub mod state;
