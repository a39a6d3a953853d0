//! Resolving a Docker `user` string ("", "name", "uid", "uid:gid", "name:group", "uid:group")
//! against the image's own /etc/passwd and /etc/group. The agent is a static binary and must not
//! use NSS (getpwnam), and the files that count are the container's, not the initramfs's.

use std::path::Path;

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership of the user name).
    pub groups: Vec<u32>,
    /// Home directory from /etc/passwd ("/" when unknown), used for HOME.
    pub home: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry {
    pub name: String,
    pub gid: u32,
    pub members: Vec<String>,
}

/// Parse /etc/passwd text; malformed lines are skipped.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

/// Parse /etc/group text; malformed lines are skipped.
pub fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// Resolve `user` against parsed passwd/group entries, the way Docker (runc's libcontainer/user)
/// does: numeric ids need no entry; names must exist.
pub fn resolve(
    user: &str,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<Identity, UserError> {
    let user = user.trim();
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd
            .iter()
            .find(|p| p.uid == uid)
            .cloned()
            .map(Ok)
            .unwrap_or(Ok(PasswdEntry {
                name: String::new(),
                uid,
                gid: 0,
                home: "/".into(),
            }))?,
        Err(_) => passwd
            .iter()
            .find(|p| p.name == u)
            .cloned()
            .ok_or_else(|| UserError::NoUser(u.to_string()))?,
    };
    let (gid, explicit_group) = match g.filter(|g| !g.is_empty()) {
        None => (entry.gid, false),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => (gid, true),
            Err(_) => (
                groups
                    .iter()
                    .find(|e| e.name == g)
                    .ok_or_else(|| UserError::NoGroup(g.to_string()))?
                    .gid,
                true,
            ),
        },
    };
    // Supplementary groups: the user's memberships, only when no explicit group was given (as runc).
    let mut sup = vec![gid];
    if !explicit_group && !entry.name.is_empty() {
        for e in groups {
            if e.members.iter().any(|m| m == &entry.name) && !sup.contains(&e.gid) {
                sup.push(e.gid);
            }
        }
    }
    let home = if entry.home.is_empty() {
        "/".to_string()
    } else {
        entry.home
    };
    Ok(Identity {
        uid: entry.uid,
        gid,
        groups: sup,
        home,
    })
}

/// Resolve `user` against `<root>/etc/passwd` and `<root>/etc/group` (missing files are empty),
/// with the groups of `group_add` added to its supplementary ones.
pub fn resolve_in_root(
    root: &Path,
    user: &str,
    group_add: &[String],
) -> Result<Identity, UserError> {
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap_or_default();
    let group = std::fs::read_to_string(root.join("etc/group")).unwrap_or_default();
    let groups = parse_group(&group);
    let mut ident = resolve(user, &parse_passwd(&passwd), &groups)?;
    add_groups(&mut ident, group_add, &groups)?;
    Ok(ident)
}

/// Docker's `--group-add`: each a number, or a name the image's /etc/group has.
pub fn add_groups(
    ident: &mut Identity,
    group_add: &[String],
    groups: &[GroupEntry],
) -> Result<(), UserError> {
    for g in group_add {
        let gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|e| &e.name == g)
                    .ok_or_else(|| UserError::NoGroup(g.clone()))?
                    .gid
            }
        };
        if !ident.groups.contains(&gid) {
            ident.groups.push(gid);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          app:x:1000:1000:App:/home/app:/bin/sh\nnohome:x:1001:1001\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:app\n";

    #[test]
    fn resolve_cases() {
        let p = parse_passwd(PASSWD);
        let g = parse_group(GROUP);
        assert_eq!(p.len(), 4);
        let id = |uid, gid, groups: &[u32], home: &str| Identity {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        };
        let cases: Vec<(&str, Result<Identity, UserError>)> = vec![
            ("", Ok(id(0, 0, &[0], "/root"))),
            ("root", Ok(id(0, 0, &[0], "/root"))),
            ("app", Ok(id(1000, 1000, &[1000, 10, 50], "/home/app"))),
            ("1000", Ok(id(1000, 1000, &[1000, 10, 50], "/home/app"))),
            ("1000:10", Ok(id(1000, 10, &[10], "/home/app"))),
            ("app:staff", Ok(id(1000, 50, &[50], "/home/app"))),
            ("4242", Ok(id(4242, 0, &[0], "/"))),
            ("4242:4243", Ok(id(4242, 4243, &[4243], "/"))),
            ("nohome", Ok(id(1001, 1001, &[1001], "/"))),
            ("nobody", Err(UserError::NoUser("nobody".into()))),
            ("app:nogroup", Err(UserError::NoGroup("nogroup".into()))),
        ];
        for (i, (user, want)) in cases.into_iter().enumerate() {
            assert_eq!(resolve(user, &p, &g), want, "test[{i}] user={user:?}");
        }
    }

    #[test]
    fn added_groups_by_number_or_name() {
        let g = parse_group(GROUP);
        let mut ident = resolve("app", &parse_passwd(PASSWD), &g).unwrap();
        add_groups(
            &mut ident,
            &["1001".into(), "wheel".into(), "root".into()],
            &g,
        )
        .unwrap();
        assert_eq!(ident.groups, [1000, 10, 50, 1001, 0]);
        assert_eq!(
            add_groups(&mut ident, &["audio".into()], &g),
            Err(UserError::NoGroup("audio".into()))
        );
    }

    #[test]
    fn empty_files() {
        assert_eq!(resolve("", &[], &[]).unwrap().uid, 0);
        assert!(resolve("www-data", &[], &[]).is_err());
    }
}
