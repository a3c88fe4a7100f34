//! `containerd-shim-sandvm-v2`: containerd runs it with `start`, `delete`,
//! or (as the server) with `-socket`. See the `sandvm_shim` library.

use sandvm_shim::{RUNTIME_NAME, SandvmShim, shim_config};

#[tokio::main]
async fn main() {
    containerd_shim::asynchronous::run::<SandvmShim>(RUNTIME_NAME, Some(shim_config())).await;
}
