//! The user namespace of a daemon started as non-root in the namespace sandbox:
//! `--uid-map` / `--gid-map` (`:INSIDE:OUTSIDE:COUNT:`, the Rust virtiofsd's syntax).
//!
//! Without a map, the daemon's own uid and gid become 0 inside (it may then mount, and a guest
//! root's files are the daemon user's on the host and root's in the guest). A map that is one
//! range of count 1 whose outside id is the daemon's own is written by the daemon itself (the
//! kernel allows that unprivileged); any other needs the setuid helpers `newuidmap(1)` /
//! `newgidmap(1)` (Debian's `uidmap` package), which check the ranges against `/etc/subuid` and
//! `/etc/subgid`. They must run outside the new namespace (a setuid-root program is not
//! setuid in a namespace that does not map host root), so a helper process is forked before
//! the `unshare` and runs them on the daemon's pid once the namespace exists.
//!
//! Inside, the daemon then becomes uid and gid 0 (`setresuid`/`setresgid`), so the map must
//! give 0 an outside id; it serves the guest as root of its namespace, switching to the guest
//! caller's ids, which must be mapped too (an unmapped one is EINVAL for that request).

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::Command;
use std::str::FromStr;

use nix::unistd::{fork, getpid, ForkResult, Gid, Pid, Uid};

use crate::Error;

/// One `--uid-map`/`--gid-map` range: `COUNT` ids from `OUTSIDE` (host) appear from `INSIDE`
/// in the daemon's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsRange {
    /// First id inside the namespace.
    pub inside: u32,
    /// First id outside (on the host).
    pub outside: u32,
    /// How many.
    pub count: u32,
}

impl FromStr for NsRange {
    type Err = String;

    /// `:INSIDE:OUTSIDE:COUNT:`; the delimiter is the last character, which must not be a
    /// letter or digit, and must open the map too.
    fn from_str(s: &str) -> Result<Self, String> {
        const HOW: &str = "expected :namespace_id:host_id:count: (three numbers)";
        let sep = s
            .chars()
            .last()
            .filter(|c| !c.is_alphanumeric())
            .ok_or(HOW)?;
        let inner = s[..s.len() - sep.len_utf8()].strip_prefix(sep).ok_or(HOW)?;
        let fields = inner
            .split(sep)
            .map(|f| f.parse::<u32>().map_err(|_| HOW.to_string()))
            .collect::<Result<Vec<u32>, String>>()?;
        let [inside, outside, count] = fields[..] else {
            return Err(HOW.into());
        };
        if count == 0 {
            return Err("the count must be at least 1".into());
        }
        if inside.checked_add(count).is_none() || outside.checked_add(count).is_none() {
            return Err("the range passes 4294967294, the highest id".into());
        }
        Ok(NsRange {
            inside,
            outside,
            count,
        })
    }
}

impl fmt::Display for NsRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{}:{}:{}:", self.inside, self.outside, self.count)
    }
}

/// `--uid-map` and `--gid-map` (empty: the daemon's own id as 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsIdMaps {
    /// User id ranges.
    pub uid: Vec<NsRange>,
    /// Group id ranges.
    pub gid: Vec<NsRange>,
}

impl NsIdMaps {
    /// No map was given.
    pub fn is_empty(&self) -> bool {
        self.uid.is_empty() && self.gid.is_empty()
    }
}

/// How one of the two maps gets written.
enum MapWrite {
    /// By the daemon into its own `/proc/self/{uid,gid}_map`: this line.
    Direct(String),
    /// By the helper program (`newuidmap`/`newgidmap`) with these arguments after the pid.
    Helper(Vec<String>),
}

fn plan(ranges: &[NsRange], own: u32) -> MapWrite {
    match ranges {
        [] => MapWrite::Direct(format!("0 {own} 1")),
        [r] if r.outside == own && r.count == 1 => {
            MapWrite::Direct(format!("{} {} 1", r.inside, r.outside))
        }
        _ => MapWrite::Helper(
            ranges
                .iter()
                .flat_map(|r| [r.inside, r.outside, r.count].map(|n| n.to_string()))
                .collect(),
        ),
    }
}

/// What [`prepare`] set up before the `unshare`: a forked helper waiting to write the maps
/// that need a privileged program.
pub(crate) struct Pending {
    uid: MapWrite,
    gid: MapWrite,
    helper: Option<Helper>,
}

struct Helper {
    pid: Pid,
    go: OwnedFd,
    result: OwnedFd,
}

/// Plans the maps for a non-root daemon, and forks the helper if one is needed (call while
/// the process has a single thread, before `unshare(CLONE_NEWUSER)`).
pub(crate) fn prepare(maps: &NsIdMaps, uid: Uid, gid: Gid) -> Result<Pending, Error> {
    let uid_w = plan(&maps.uid, uid.as_raw());
    let gid_w = plan(&maps.gid, gid.as_raw());
    let needs_helper = matches!(uid_w, MapWrite::Helper(_)) || matches!(gid_w, MapWrite::Helper(_));
    let helper = if needs_helper {
        let target = getpid();
        let (go_r, go_w) = nix::unistd::pipe().map_err(|e| Error::sys("pipe", e))?;
        let (res_r, res_w) = nix::unistd::pipe().map_err(|e| Error::sys("pipe", e))?;
        // SAFETY: the caller guarantees a single-threaded process; the child only reads a pipe,
        // runs programs and exits.
        match unsafe { fork() }.map_err(|e| Error::sys("fork the id map helper", e))? {
            ForkResult::Child => {
                drop((go_w, res_r));
                let message = run_helpers(go_r, target, &uid_w, &gid_w);
                let mut out = std::fs::File::from(res_w);
                let _ = out.write_all(message.as_bytes());
                // SAFETY: leave at once, running no destructor of the parent's state.
                unsafe { libc::_exit(0) };
            }
            ForkResult::Parent { child } => Some(Helper {
                pid: child,
                go: go_w,
                result: res_r,
            }),
        }
    } else {
        None
    };
    Ok(Pending {
        uid: uid_w,
        gid: gid_w,
        helper,
    })
}

/// In the helper: waits for the go (the namespace exists), runs the programs; returns "" or
/// one line saying what failed.
fn run_helpers(go: OwnedFd, target: Pid, uid: &MapWrite, gid: &MapWrite) -> String {
    let mut byte = [0u8; 1];
    if std::fs::File::from(go).read_exact(&mut byte).is_err() {
        return String::new(); // the daemon gave up before unsharing
    }
    for (program, w) in [("newuidmap", uid), ("newgidmap", gid)] {
        let MapWrite::Helper(args) = w else { continue };
        let option = if program == "newuidmap" {
            "--uid-map"
        } else {
            "--gid-map"
        };
        match Command::new(program)
            .arg(target.to_string())
            .args(args)
            .output()
        {
            Err(e) => {
                return format!(
                    "{option}: cannot run {program} ({e}; it comes with the uidmap package)"
                )
            }
            Ok(out) if !out.status.success() => {
                let said = String::from_utf8_lossy(&out.stderr);
                let said = said.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
                return format!(
                    "{option}: {program} {} failed ({}): {said}",
                    args.join(" "),
                    out.status
                );
            }
            Ok(_) => {}
        }
    }
    String::new()
}

/// After `unshare(CLONE_NEWUSER)`: writes the maps (the helper's first, then the daemon's own),
/// then becomes uid and gid 0 inside.
pub(crate) fn write_maps(p: Pending) -> Result<(), Error> {
    if let Some(h) = p.helper {
        let Helper { pid, go, result } = h;
        let mut go = std::fs::File::from(go);
        go.write_all(b"g")
            .map_err(|e| Error::Io("start the id map helper".into(), e))?;
        drop(go);
        let mut message = String::new();
        let _ = std::fs::File::from(result).read_to_string(&mut message);
        let _ = nix::sys::wait::waitpid(pid, None);
        if !message.is_empty() {
            return Err(Error::UserNs(message));
        }
        if !maps_written(&p.uid, &p.gid) {
            return Err(Error::UserNs(
                "the id map helper ended without writing the maps".into(),
            ));
        }
    }
    if let MapWrite::Direct(line) = &p.gid {
        // Unprivileged, a gid map may be written only once setgroups is denied.
        write("/proc/self/setgroups", "deny")?;
        write("/proc/self/gid_map", line)?;
    }
    if let MapWrite::Direct(line) = &p.uid {
        write("/proc/self/uid_map", line)?;
    }
    // Root of the namespace: the passthrough switches to each caller's ids from there.
    // SAFETY: raw system calls on this (only) thread.
    let (rg, ru) = unsafe {
        (
            libc::syscall(libc::SYS_setresgid, 0, 0, 0),
            libc::syscall(libc::SYS_setresuid, 0, 0, 0),
        )
    };
    if rg != 0 || ru != 0 {
        return Err(Error::UserNs(
            "--uid-map/--gid-map must map id 0 of the namespace: the daemon runs as its root"
                .into(),
        ));
    }
    Ok(())
}

/// Whether the helper's maps are in place (a helper that died says nothing).
fn maps_written(uid: &MapWrite, gid: &MapWrite) -> bool {
    let written = |file: &str| std::fs::read_to_string(file).is_ok_and(|s| !s.trim().is_empty());
    (!matches!(uid, MapWrite::Helper(_)) || written("/proc/self/uid_map"))
        && (!matches!(gid, MapWrite::Helper(_)) || written("/proc/self/gid_map"))
}

fn write(path: &str, text: &str) -> Result<(), Error> {
    std::fs::write(path, text).map_err(|e| Error::Io(format!("write {path}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_parse_in_the_rust_virtiofsd_syntax() {
        let r: NsRange = ":0:100000:65536:".parse().unwrap();
        assert_eq!(
            r,
            NsRange {
                inside: 0,
                outside: 100000,
                count: 65536
            }
        );
        assert_eq!(r.to_string(), ":0:100000:65536:");
        assert_eq!("/1/2/3/".parse::<NsRange>().unwrap().outside, 2);
        for bad in [
            "",
            ":0:100000:",
            "0:1:2",
            ":0:1:2:3:",
            ":a:1:2:",
            "x0x1x2x",
            ":0:1:0:",
            ":4294967295:1:1:",
        ] {
            assert!(bad.parse::<NsRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_a_single_own_id_is_written_without_the_helpers() {
        let own = 1000;
        let r = |inside, outside, count| NsRange {
            inside,
            outside,
            count,
        };
        assert!(matches!(plan(&[], own), MapWrite::Direct(l) if l == "0 1000 1"));
        assert!(matches!(plan(&[r(5, own, 1)], own), MapWrite::Direct(l) if l == "5 1000 1"));
        for ranges in [
            vec![r(0, own, 2)],
            vec![r(0, 1001, 1)],
            vec![r(0, own, 1), r(1, 100000, 65536)],
        ] {
            let MapWrite::Helper(args) = plan(&ranges, own) else {
                panic!("{ranges:?} needs newuidmap");
            };
            assert_eq!(args.len(), ranges.len() * 3);
            assert_eq!(args[1], ranges[0].outside.to_string());
        }
    }
}
