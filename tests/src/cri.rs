//! A CRI client (Kubernetes' runtime.v1, what containerd 1.6's CRI plugin
//! serves) over gRPC on containerd's Unix socket, as a kubelet or `crictl`
//! would speak it, through the k8s-cri crate's generated runtime.v1 client.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// runtime.v1: the messages and the clients.
pub use k8s_cri::v1;

pub use v1::image_service_client::ImageServiceClient;
pub use v1::runtime_service_client::RuntimeServiceClient;

/// A gRPC channel to the Unix socket `socket` (containerd's `--address`).
pub async fn channel(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let socket: PathBuf = socket.to_path_buf();
    // The URI is not used: every connection goes to the socket.
    Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(
                    tokio::net::UnixStream::connect(socket).await?,
                ))
            }
        }))
        .await
}

/// The runtime and image services on one channel to `socket`.
pub async fn connect(
    socket: &Path,
) -> Result<(RuntimeServiceClient<Channel>, ImageServiceClient<Channel>), tonic::transport::Error> {
    let ch = channel(socket).await?;
    Ok((
        RuntimeServiceClient::new(ch.clone()),
        ImageServiceClient::new(ch),
    ))
}
