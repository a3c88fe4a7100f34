//! Length-prefixed JSON messages on the agent <-> launcher sync socket
//! (blocking; used by the launcher and, off the async runtime, the agent).

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest message (a launch config with a large environment).
pub const MAX_MSG: usize = 4 << 20;

/// Writes one message.
pub fn send<W: Write, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let len = u32::try_from(body.len()).map_err(io::Error::other)?;
    let mut buf = len.to_be_bytes().to_vec();
    buf.extend_from_slice(&body);
    w.write_all(&buf)
}

/// Reads one message; `Ok(None)` on a clean end of stream before it.
pub fn recv<R: Read, T: DeserializeOwned>(r: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MSG {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message of {len} bytes"),
        ));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::LauncherMsg;

    #[test]
    fn round_trip_and_clean_eof() {
        let mut buf = Vec::new();
        send(&mut buf, &LauncherMsg::Pid(42)).unwrap();
        send(&mut buf, &LauncherMsg::Error("x".into())).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Pid(42))
        );
        assert_eq!(
            recv::<_, LauncherMsg>(&mut r).unwrap(),
            Some(LauncherMsg::Error("x".into()))
        );
        assert_eq!(recv::<_, LauncherMsg>(&mut r).unwrap(), None);
        let huge = (MAX_MSG as u32 + 1).to_be_bytes();
        assert!(recv::<_, LauncherMsg>(&mut &huge[..]).is_err());
    }
}
