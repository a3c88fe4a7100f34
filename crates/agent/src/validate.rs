//! Checks on what the host sends: ids and paths.

use std::path::{Component, Path, PathBuf};

/// Longest container or exec id.
pub const MAX_ID_LEN: usize = 128;

/// A bad id or path from the host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidInput {
    /// Not a valid id.
    #[error(
        "Invalid {what} {id:?}: ids are 2-128 characters of [a-zA-Z0-9_.-], starting with a letter or digit"
    )]
    Id {
        /// "container id" or "exec id".
        what: &'static str,
        /// The id as sent (truncated).
        id: String,
    },
    /// A path that must be absolute is not, or has `..`.
    #[error("Invalid {what} {path:?}: {why}")]
    Path {
        /// What the path is for.
        what: String,
        /// The path as sent.
        path: PathBuf,
        /// Why it was refused.
        why: &'static str,
    },
}

/// Kata's id rule: `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$`, at most [`MAX_ID_LEN`].
pub fn check_id(what: &'static str, id: &str) -> Result<(), InvalidInput> {
    let b = id.as_bytes();
    let ok = b.len() >= 2
        && b.len() <= MAX_ID_LEN
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(InvalidInput::Id {
            what,
            id: id.chars().take(MAX_ID_LEN + 1).collect(),
        })
    }
}

/// An exec id, where "" names the init process.
pub fn check_exec_id(id: &str) -> Result<(), InvalidInput> {
    if id.is_empty() {
        Ok(())
    } else {
        check_id("exec id", id)
    }
}

/// An absolute path with no `..`, `.` or empty components, lexically normalised.
pub fn clean_absolute(what: &str, p: &Path) -> Result<PathBuf, InvalidInput> {
    let bad = |why| InvalidInput::Path {
        what: what.to_string(),
        path: p.to_path_buf(),
        why,
    };
    if !p.is_absolute() {
        return Err(bad("not absolute"));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(bad("has a '..' component")),
            Component::Prefix(_) => return Err(bad("has a prefix")),
        }
    }
    Ok(out)
}

/// Resolves a bind-mount source against the shared folder: a relative
/// source is taken relative to `shared`; an absolute one must lie inside it.
/// Lexical only (no `..`); [`check_inside`] then checks the real path.
pub fn shared_source(shared: &Path, what: &str, src: &Path) -> Result<PathBuf, InvalidInput> {
    let bad = |why| InvalidInput::Path {
        what: what.to_string(),
        path: src.to_path_buf(),
        why,
    };
    let joined = if src.is_absolute() {
        src.to_path_buf()
    } else {
        Path::new("/").join(src)
    };
    let clean = clean_absolute(what, &joined)?;
    let full = if src.is_absolute() {
        clean
    } else {
        shared.join(clean.strip_prefix("/").unwrap_or(&clean))
    };
    if full.starts_with(shared) && full != shared {
        Ok(full)
    } else {
        Err(bad("not inside the shared folder"))
    }
}

/// Resolves symlinks in `p` (it must exist) and checks the result is still
/// inside `root`: a symlink in the shared folder cannot point out of it.
pub fn check_inside(root: &Path, what: &str, p: &Path) -> Result<PathBuf, InvalidInput> {
    let bad = |why| InvalidInput::Path {
        what: what.to_string(),
        path: p.to_path_buf(),
        why,
    };
    let real = std::fs::canonicalize(p).map_err(|_| bad("does not exist"))?;
    let real_root = std::fs::canonicalize(root).map_err(|_| bad("shared folder missing"))?;
    if real.starts_with(&real_root) {
        Ok(real)
    } else {
        Err(bad("resolves outside the shared folder"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_katas_rule() {
        for ok in ["c1", "abc", "A.b_c-d", "0123456789abcdef", &"a".repeat(128)] {
            check_id("container id", ok).unwrap();
        }
        for bad in [
            "",
            "a",
            ".x",
            "-x",
            "_x",
            "a/b",
            "..",
            "a b",
            "a\0b",
            "ä1",
            &"a".repeat(129),
        ] {
            let e = check_id("container id", bad).unwrap_err();
            assert!(e.to_string().starts_with("Invalid container id"), "{e}");
        }
        check_exec_id("").unwrap();
        check_exec_id("e").unwrap_err();
    }

    #[test]
    fn clean_absolute_refuses_dotdot_and_relative() {
        assert_eq!(
            clean_absolute("m", Path::new("/a/./b//c/")).unwrap(),
            Path::new("/a/b/c")
        );
        assert!(clean_absolute("m", Path::new("a/b")).is_err());
        let e = clean_absolute("mount destination", Path::new("/a/../etc")).unwrap_err();
        assert!(e.to_string().contains("'..'"), "{e}");
    }

    #[test]
    fn shared_sources_stay_inside() {
        let sh = Path::new("/run/kata-containers/shared/containers");
        assert_eq!(
            shared_source(sh, "m", Path::new("c1-resolv.conf")).unwrap(),
            sh.join("c1-resolv.conf")
        );
        assert_eq!(
            shared_source(sh, "m", &sh.join("c1/data")).unwrap(),
            sh.join("c1/data")
        );
        for bad in [
            "/etc/passwd",
            "../x",
            "/run/kata-containers/shared/containers/../x",
            "/run/kata-containers/shared/containersX/a",
        ] {
            assert!(shared_source(sh, "m", Path::new(bad)).is_err(), "{bad}");
        }
        assert!(shared_source(sh, "m", sh).is_err());
    }

    #[test]
    fn symlinks_out_of_the_shared_folder_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let shared = d.path().join("shared");
        std::fs::create_dir_all(shared.join("c1")).unwrap();
        std::fs::write(d.path().join("secret"), "x").unwrap();
        std::os::unix::fs::symlink(d.path().join("secret"), shared.join("c1/escape")).unwrap();
        std::os::unix::fs::symlink("../c1", shared.join("c1/inside")).unwrap();
        let e = check_inside(&shared, "m", &shared.join("c1/escape")).unwrap_err();
        assert!(e.to_string().contains("outside the shared folder"), "{e}");
        check_inside(&shared, "m", &shared.join("c1/inside")).unwrap();
        assert!(check_inside(&shared, "m", &shared.join("nope")).is_err());
    }
}
