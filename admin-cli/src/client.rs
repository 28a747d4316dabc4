//! Connecting to otpd over its Unix socket.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hyper_util::rt::TokioIo;
use otpd_proto::v1::otpd_client::OtpdClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::error::Error;

/// A connected otpd client.
pub type Client = OtpdClient<Channel>;

/// Connects to otpd on `socket`.
///
/// The socket is connected once by hand first, so that a daemon that is not
/// running gives one clear error naming the socket; that same connection
/// then carries the gRPC channel (later reconnects dial the path again).
pub async fn connect(socket: &Path) -> Result<Client, Error> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|source| Error::connect(socket.to_path_buf(), source))?;
    let first = Arc::new(Mutex::new(Some(stream)));
    let path: PathBuf = socket.to_path_buf();

    // The URI is never dialled: the connector below ignores it.
    let channel = Endpoint::from_static("http://[::]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            let ready = first.lock().ok().and_then(|mut s| s.take());
            async move {
                let stream = match ready {
                    Some(stream) => stream,
                    None => UnixStream::connect(path).await?,
                };
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|source| Error::Transport {
            socket: socket.to_path_buf(),
            source,
        })?;
    Ok(OtpdClient::new(channel))
}
