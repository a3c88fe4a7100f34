//! The container's /etc/passwd and /etc/group, parsed by hand: the agent is
//! static and must not use NSS (getpwnam) inside a container's root.

/// A passwd entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: String,
}

/// Parses passwd text (`name:x:uid:gid:gecos:home:shell`); bad lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// The groups whose member list (`name:x:gid:a,b`) names `user`.
pub fn groups_of(group_text: &str, user: &str) -> Vec<u32> {
    group_text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let gid: u32 = f[2].parse().ok()?;
            f[3].split(',').any(|m| m.trim() == user).then_some(gid)
        })
        .collect()
}

/// Looks a group name up (`name:x:gid:...`).
pub fn group_gid(group_text: &str, name: &str) -> Option<u32> {
    group_text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

/// Resolved identity of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Supplementary groups: the spec's, then the user's from /etc/group.
    pub groups: Vec<u32>,
    /// Home directory for `HOME` when the env has none.
    pub home: String,
}

/// Resolves a process's user against the container's files. `username`
/// (`name`, `uid`, `name:group` or `uid:gid`) wins over `uid`/`gid` when set;
/// an unknown name is an error, an unknown uid is fine (runc's rules).
pub fn resolve(
    passwd: &str,
    group: &str,
    uid: u32,
    gid: u32,
    extra: &[u32],
    username: Option<&str>,
) -> Result<Identity, String> {
    let users = parse_passwd(passwd);
    let (mut uid, mut gid) = (uid, gid);
    if let Some(spec) = username {
        let (u, g) = spec
            .split_once(':')
            .map_or((spec, None), |(u, g)| (u, Some(g)));
        if let Ok(n) = u.parse::<u32>() {
            uid = n;
            gid = users.iter().find(|e| e.uid == n).map_or(gid, |e| e.gid);
        } else {
            let e = users
                .iter()
                .find(|e| e.name == u)
                .ok_or_else(|| format!("user {u:?} not found in /etc/passwd"))?;
            (uid, gid) = (e.uid, e.gid);
        }
        if let Some(g) = g {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_gid(group, g)
                    .ok_or_else(|| format!("group {g:?} not found in /etc/group"))?,
            };
        }
    }
    let entry = users.iter().find(|e| e.uid == uid);
    let mut groups: Vec<u32> = extra.to_vec();
    if let Some(e) = entry {
        for g in groups_of(group, &e.name) {
            if !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    let home = entry.map_or_else(|| "/".to_string(), |e| e.home.clone());
    Ok(Identity {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbroken line\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000:Alice,,,:/home/alice:/bin/sh\nbad:x:notanumber:1::/:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:alice,bob\naudio:x:29:bob\nstaff:x:50: alice \nalice:x:1000:\n";

    #[test]
    fn parses_passwd_and_skips_bad_lines() {
        let u = parse_passwd(PASSWD);
        assert_eq!(u.len(), 3);
        assert_eq!(
            u[2],
            PasswdEntry {
                name: "alice".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/alice".into()
            }
        );
    }

    #[test]
    fn resolves_groups_and_home() {
        let id = resolve(PASSWD, GROUP, 1000, 1000, &[5], None).unwrap();
        assert_eq!(
            id,
            Identity {
                uid: 1000,
                gid: 1000,
                groups: vec![5, 10, 50],
                home: "/home/alice".into()
            }
        );
        let unknown = resolve(PASSWD, GROUP, 4242, 4242, &[], None).unwrap();
        assert_eq!((unknown.groups.len(), unknown.home.as_str()), (0, "/"));
    }

    #[test]
    fn resolves_user_names_and_groups_by_name() {
        let id = resolve(PASSWD, GROUP, 0, 0, &[], Some("alice:wheel")).unwrap();
        assert_eq!((id.uid, id.gid), (1000, 10));
        let id = resolve(PASSWD, GROUP, 0, 0, &[], Some("65534")).unwrap();
        assert_eq!((id.uid, id.gid), (65534, 65534));
        assert!(
            resolve(PASSWD, GROUP, 0, 0, &[], Some("mallory"))
                .unwrap_err()
                .contains("mallory")
        );
        assert!(resolve(PASSWD, GROUP, 0, 0, &[], Some("alice:nogroup")).is_err());
    }
}
