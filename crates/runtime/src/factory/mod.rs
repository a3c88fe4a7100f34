//! The factory: how sandboxes come to be, above the backend. Today, VM
//! templates (Kata's `[factory] enable_template`): make a template, create
//! clones of it. It drives the [`Hypervisor`](crate::Hypervisor) trait and
//! the [`Qemu`](crate::Qemu) handle; the backend never calls into it.

pub mod template;

pub use template::{Found, TemplateMeta, create_options, inspect};
