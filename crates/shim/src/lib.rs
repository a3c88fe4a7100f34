//! `containerd-shim-sandvm-v2`: containerd's task API (v2, containerd 1.6)
//! on sandvm VMs, runtime name `io.containerd.sandvm.v2`.
//!
//! One shim per sandbox: a container of its own, or every container of a
//! pod (CRI's `io.kubernetes.cri.sandbox-id`), runs in one VM that the
//! shim boots through the runtime library (`runtime::Qemu`). Root
//! filesystems reach the guest over virtio-fs ([`share`]); the guest agent
//! (`sandvm-agent`, over `sandvm-agent-protocol`) runs the processes; their
//! standard I/O is pumped between containerd's FIFOs and the agent ([`io`]).
//! The task pid containerd sees is QEMU's, as in Kata. `docs/containerd.md`
//! is the user's guide.

pub mod actions;
pub mod bundle;
pub mod config;
pub mod container;
pub mod create;
pub mod error;
pub mod events;
pub mod factory;
pub mod ids;
pub mod io;
pub mod logging;
pub mod mounts;
pub mod network;
pub mod process;
pub mod sandbox;
pub mod service;
pub mod share;
pub mod shim;
pub mod spec;
pub mod task;
pub mod vmcache;

pub use shim::{RUNTIME_NAME, SandvmShim, shim_config};
