//! sandvm's own keys for what Nomad's QEMU driver and Monogon's launcher offer:
//! user-mode networking with port forwards, the graceful-shutdown timeout,
//! fw_cfg blobs and raw extra QEMU arguments. All live in `[hypervisor.qemu]`.

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Seconds `stop` waits after the ACPI powerdown before it kills, when unset.
pub const DEFAULT_GRACEFUL_SHUTDOWN_SECS: u32 = 5;
/// Longest fw_cfg name QEMU takes (FW_CFG_MAX_FILE_PATH - 1).
pub const FW_CFG_MAX_NAME: usize = 55;

/// One `port_map` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPortMap {
    /// Guest port.
    pub guest: Option<i64>,
    /// Host port; missing or 0: any free port.
    pub host: Option<i64>,
    /// `tcp` (default), `udp` or `both`.
    pub protocol: Option<String>,
}

/// One `fw_cfg` entry as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFwCfg {
    /// Name under `/sys/firmware/qemu_fw_cfg/by_name/` (must start with `opt/`).
    pub name: Option<String>,
    /// A file whose content is the blob.
    pub file: Option<String>,
    /// A string that is the blob.
    pub string: Option<String>,
}

/// Transport protocol of a forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// QEMU's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One forward from a host port on 127.0.0.1 to a guest port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortForward {
    /// Protocol.
    pub protocol: Protocol,
    /// Guest port.
    pub guest: u16,
    /// Host port; 0 means any free port, chosen by the kernel when QEMU binds.
    pub host: u16,
}

/// Where an fw_cfg blob comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FwCfgBlob {
    /// A file (absolute).
    File(PathBuf),
    /// A string.
    String(String),
}

/// The checked extras.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Extras {
    /// `graceful_shutdown_timeout`: seconds between the ACPI powerdown and the kill (0: kill at once).
    pub graceful_shutdown_secs: u32,
    /// `qemu_extra_args`: raw QEMU arguments after ours, unchecked.
    pub extra_args: Vec<String>,
    /// `fw_cfg`: blobs for the guest.
    pub fw_cfg: Vec<(String, FwCfgBlob)>,
    /// `port_map`: forwards on a user-mode NIC (none: no such NIC).
    pub port_map: Vec<PortForward>,
    /// `enable_tpm` / `swtpm_path`: the swtpm binary when the guest has a TPM.
    #[serde(default)]
    pub swtpm: Option<PathBuf>,
}

impl Default for Extras {
    fn default() -> Self {
        Extras {
            graceful_shutdown_secs: DEFAULT_GRACEFUL_SHUTDOWN_SECS,
            extra_args: Vec::new(),
            fw_cfg: Vec::new(),
            port_map: Vec::new(),
            swtpm: None,
        }
    }
}

/// swtpm's path when `swtpm_path` is unset.
pub const DEFAULT_SWTPM_PATH: &str = "/usr/bin/swtpm";

/// Check `enable_tpm` and `swtpm_path`: the swtpm binary when the TPM is on.
/// The TPM front end (`tpm-tis`) is x86_64 only.
pub fn swtpm(
    enable: Option<bool>,
    path: Option<&str>,
    arch: super::GuestArch,
    err: &dyn Fn(&str, String) -> ConfigError,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Option<PathBuf>, ConfigError> {
    if !enable.unwrap_or(false) {
        return Ok(None);
    }
    if arch != super::GuestArch::X86_64 {
        return Err(err(
            "enable_tpm",
            format!("a TPM is only supported on x86_64 guests (guest_arch is {arch:?})"),
        ));
    }
    match path {
        None | Some("") => Ok(Some(PathBuf::from(DEFAULT_SWTPM_PATH))),
        Some(p) if p.contains('\n') || p.contains('\0') => {
            Err(err("swtpm_path", "path contains a newline or NUL".into()))
        }
        Some(p) => Ok(Some(resolve(p))),
    }
}

/// Builds an error naming the full key.
type KeyErr<'a> = &'a dyn Fn(&str, String) -> ConfigError;

/// Check the extras. `err(key, reason)` builds an error naming the full key;
/// `resolve` anchors relative paths at the config's folder.
pub fn validate(
    graceful: Option<i64>,
    extra_args: Option<&[String]>,
    fw_cfg: Option<&[RawFwCfg]>,
    port_map: Option<&[RawPortMap]>,
    err: KeyErr<'_>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Extras, ConfigError> {
    let graceful_shutdown_secs = match graceful {
        None => DEFAULT_GRACEFUL_SHUTDOWN_SECS,
        Some(n) if (0..=3600).contains(&n) => n as u32,
        Some(n) => {
            return Err(err(
                "graceful_shutdown_timeout",
                format!("must be 0 to 3600 seconds (got {n})"),
            ));
        }
    };
    let extra_args = extra_args.unwrap_or(&[]).to_vec();
    if let Some(a) = extra_args
        .iter()
        .find(|a| a.contains('\n') || a.contains('\0'))
    {
        return Err(err(
            "qemu_extra_args",
            format!("{a:?} contains a newline or NUL"),
        ));
    }
    Ok(Extras {
        graceful_shutdown_secs,
        extra_args,
        fw_cfg: fw_cfg_blobs(fw_cfg.unwrap_or(&[]), err, resolve)?,
        port_map: port_forwards(port_map.unwrap_or(&[]), err)?,
        swtpm: None,
    })
}

/// `fw_cfg`: names under `opt/`, each once, with exactly one source.
fn fw_cfg_blobs(
    entries: &[RawFwCfg],
    err: KeyErr<'_>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> Result<Vec<(String, FwCfgBlob)>, ConfigError> {
    let mut blobs: Vec<(String, FwCfgBlob)> = Vec::new();
    for (i, b) in entries.iter().enumerate() {
        let key = format!("fw_cfg[{i}]");
        let name = b
            .name
            .clone()
            .ok_or_else(|| err(&key, "needs a name".into()))?;
        if !name.starts_with("opt/")
            || name.len() > FW_CFG_MAX_NAME
            || name.contains(['\n', '\0', ','])
        {
            return Err(err(
                &key,
                format!(
                    "name {name:?} must start with \"opt/\", be at most {FW_CFG_MAX_NAME} bytes and hold no comma"
                ),
            ));
        }
        if blobs.iter().any(|(n, _)| *n == name) {
            return Err(err(
                &key,
                format!("name {name:?} is already used by an earlier fw_cfg entry"),
            ));
        }
        let blob = match (&b.file, &b.string) {
            (Some(f), None) if f.contains(['\n', '\0']) => {
                return Err(err(&key, "file path contains a newline or NUL".into()));
            }
            (Some(f), None) => FwCfgBlob::File(resolve(f)),
            (None, Some(s)) if !s.contains('\0') => FwCfgBlob::String(s.clone()),
            _ => return Err(err(&key, "needs exactly one of file or string".into())),
        };
        blobs.push((name, blob));
    }
    Ok(blobs)
}

/// `port_map`: guest ports, host ports (0: any), protocols expanded; a
/// non-zero host port once per protocol.
fn port_forwards(entries: &[RawPortMap], err: KeyErr<'_>) -> Result<Vec<PortForward>, ConfigError> {
    let mut forwards: Vec<PortForward> = Vec::new();
    for (i, p) in entries.iter().enumerate() {
        let key = format!("port_map[{i}]");
        let port = |v: i64, what: &str| {
            u16::try_from(v).map_err(|_| err(&key, format!("{what} port {v} is not 0 to 65535")))
        };
        let guest = port(
            p.guest
                .ok_or_else(|| err(&key, "needs a guest port".into()))?,
            "guest",
        )?;
        if guest == 0 {
            return Err(err(&key, "guest port must not be 0".into()));
        }
        let host = port(p.host.unwrap_or(0), "host")?;
        let protos: &[Protocol] = match p.protocol.as_deref() {
            None | Some("tcp") => &[Protocol::Tcp],
            Some("udp") => &[Protocol::Udp],
            Some("both") => &[Protocol::Tcp, Protocol::Udp],
            Some(o) => {
                return Err(err(
                    &key,
                    format!("protocol {o:?} must be tcp, udp or both"),
                ));
            }
        };
        for &protocol in protos {
            // QEMU cannot bind one host port twice; 0 (any free port) can repeat.
            if host != 0
                && forwards
                    .iter()
                    .any(|f| f.host == host && f.protocol == protocol)
            {
                return Err(err(
                    &key,
                    format!(
                        "host port {host}/{} is already forwarded by an earlier entry",
                        protocol.as_str()
                    ),
                ));
            }
            forwards.push(PortForward {
                protocol,
                guest,
                host,
            });
        }
    }
    Ok(forwards)
}

/// Host ports QEMU bound for each forward, from HMP `info usernet`
/// (`TCP[HOST_FORWARD] fd 127.0.0.1 <host> 10.0.2.15 <guest> ...`).
pub fn parse_usernet(text: &str) -> Vec<PortForward> {
    let mut out = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let protocol = match f.first() {
            Some(p) if p.starts_with("TCP[HOST_FORWARD]") => Protocol::Tcp,
            Some(p) if p.starts_with("UDP[HOST_FORWARD]") => Protocol::Udp,
            _ => continue,
        };
        if let (Some(host), Some(guest)) = (
            f.get(3).and_then(|v| v.parse().ok()),
            f.get(5).and_then(|v| v.parse().ok()),
        ) {
            out.push(PortForward {
                protocol,
                guest,
                host,
            });
        }
    }
    out
}

/// Whether every fw_cfg file exists (for `check_assets`): the first missing one.
pub fn missing_fw_cfg_file(extras: &Extras) -> Option<(usize, &Path)> {
    extras
        .fw_cfg
        .iter()
        .enumerate()
        .find_map(|(i, (_, b))| match b {
            FwCfgBlob::File(p) if !p.exists() => Some((i, p.as_path())),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, reason: String) -> ConfigError {
        ConfigError::Invalid {
            file: "f".into(),
            key: format!("hypervisor.qemu.{key}"),
            reason,
        }
    }

    fn r(p: &str) -> PathBuf {
        Path::new("/cfg").join(p)
    }

    #[test]
    fn port_maps_expand_protocols_and_default_to_any_port() {
        let pm = [
            RawPortMap {
                guest: Some(8080),
                host: Some(18080),
                protocol: None,
            },
            RawPortMap {
                guest: Some(53),
                host: None,
                protocol: Some("both".into()),
            },
        ];
        let x = validate(None, None, None, Some(&pm), &e, &r).unwrap();
        assert_eq!(x.graceful_shutdown_secs, DEFAULT_GRACEFUL_SHUTDOWN_SECS);
        assert_eq!(
            x.port_map,
            vec![
                PortForward {
                    protocol: Protocol::Tcp,
                    guest: 8080,
                    host: 18080
                },
                PortForward {
                    protocol: Protocol::Tcp,
                    guest: 53,
                    host: 0
                },
                PortForward {
                    protocol: Protocol::Udp,
                    guest: 53,
                    host: 0
                },
            ]
        );
    }

    #[test]
    fn bad_entries_name_their_key() {
        let cases: Vec<(Vec<RawPortMap>, &str)> = vec![
            (
                vec![RawPortMap {
                    guest: None,
                    ..Default::default()
                }],
                "port_map[0]",
            ),
            (
                vec![RawPortMap {
                    guest: Some(70000),
                    ..Default::default()
                }],
                "port_map[0]",
            ),
            (
                vec![RawPortMap {
                    guest: Some(22),
                    protocol: Some("sctp".into()),
                    ..Default::default()
                }],
                "port_map[0]",
            ),
        ];
        for (pm, key) in cases {
            let err = validate(None, None, None, Some(&pm), &e, &r).unwrap_err();
            assert!(err.to_string().contains(key), "{err}");
        }
        let fw = [RawFwCfg {
            name: Some("etc/x".into()),
            string: Some("v".into()),
            file: None,
        }];
        assert!(
            validate(None, None, Some(&fw), None, &e, &r)
                .unwrap_err()
                .to_string()
                .contains("fw_cfg[0]")
        );
        let fw = [RawFwCfg {
            name: Some("opt/x".into()),
            string: Some("v".into()),
            file: Some("f".into()),
        }];
        assert!(validate(None, None, Some(&fw), None, &e, &r).is_err());
        let err = validate(Some(-1), None, None, None, &e, &r).unwrap_err();
        assert!(err.to_string().contains("graceful_shutdown_timeout"));
        let args = ["-device\nx".to_string()];
        assert!(
            validate(None, Some(&args), None, None, &e, &r)
                .unwrap_err()
                .to_string()
                .contains("qemu_extra_args")
        );
    }

    #[test]
    fn fw_cfg_files_resolve_against_the_config_folder() {
        let fw = [RawFwCfg {
            name: Some("opt/org.sandvm/blob".into()),
            file: Some("blob.bin".into()),
            string: None,
        }];
        let x = validate(None, None, Some(&fw), None, &e, &r).unwrap();
        assert_eq!(
            x.fw_cfg[0].1,
            FwCfgBlob::File(PathBuf::from("/cfg/blob.bin"))
        );
    }

    #[test]
    fn usernet_output_gives_the_bound_ports() {
        let text = "Hub -1 (n0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]   8       127.0.0.1 37553       10.0.2.15  8080     0     0\r\n  UDP[HOST_FORWARD]   3       127.0.0.1 33452       10.0.2.15    53     0     0\r\n";
        assert_eq!(
            parse_usernet(text),
            vec![
                PortForward {
                    protocol: Protocol::Tcp,
                    guest: 8080,
                    host: 37553
                },
                PortForward {
                    protocol: Protocol::Udp,
                    guest: 53,
                    host: 33452
                },
            ]
        );
    }
}
