//! The hook user: the account hook scripts run as when `hook_user` is set, looked up once at
//! start (`getpwnam_r`, so `/etc/passwd` and any other configured user database), and the
//! minimal environment a hook starts from.

use std::ffi::{CStr, CString};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// Search path given to hooks when the agent itself has no `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Largest buffer offered to `getpwnam_r` before the lookup is given up.
const MAX_PASSWD_BUFFER: usize = 1 << 20;

/// A user that exists on this machine: its name, ids and home directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
}

impl HookUser {
    /// Looks `name` up in the user database; an unknown or malformed name is a configuration
    /// error that says so.
    pub fn lookup(name: &str) -> Result<HookUser> {
        let name = name.trim();
        if name.is_empty() || name.contains(['/', ':', ',']) || name.chars().any(char::is_whitespace) {
            return Err(Error::Config(format!("hook_user {name:?} is not a valid user name")));
        }
        let c_name =
            CString::new(name).map_err(|_| Error::Config(format!("hook_user {name:?} is not a valid user name")))?;
        match getpwnam(&c_name)? {
            Some(user) => Ok(user),
            None => Err(Error::Config(format!(
                "hook_user {name:?} does not exist on this machine (not in /etc/passwd); create it or choose another"
            ))),
        }
    }

    /// The user name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// The primary group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Whom the builds are given to: this user and its primary group.
    pub fn owner(&self) -> crate::ownership::Owner {
        crate::ownership::Owner { uid: self.uid, gid: self.gid }
    }

    /// The home directory.
    pub fn home(&self) -> &std::path::Path {
        &self.home
    }

    /// The environment a hook of this user starts from: `PATH` (the agent's own, else
    /// [`DEFAULT_PATH`]), `HOME`, `USER`, `LOGNAME`, and `LANG` when the agent has one.
    pub fn base_environment(&self, agent_path: Option<String>, lang: Option<String>) -> Vec<(String, String)> {
        let mut vars = vec![
            ("PATH".to_string(), agent_path.filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PATH.to_string())),
            ("HOME".to_string(), self.home.to_string_lossy().into_owned()),
            ("USER".to_string(), self.name.clone()),
            ("LOGNAME".to_string(), self.name.clone()),
        ];
        if let Some(lang) = lang {
            vars.push(("LANG".to_string(), lang));
        }
        vars
    }
}

/// `getpwnam_r` with a buffer grown until the entry fits.
fn getpwnam(name: &CStr) -> Result<Option<HookUser>> {
    let mut size = 1024;
    loop {
        let mut buf = vec![0u8; size];
        // SAFETY: an all-zero `passwd` is a valid value (null pointers, zero ids); it is only
        // read after getpwnam_r filled it.
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call: `name` is NUL-terminated, `buf` is
        // writable for `buf.len()` bytes, `entry` and `found` are live locals.
        let rc = unsafe { libc::getpwnam_r(name.as_ptr(), &mut entry, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
        if rc == libc::ERANGE && size < MAX_PASSWD_BUFFER {
            size *= 4;
            continue;
        }
        if rc != 0 {
            let e = std::io::Error::from_raw_os_error(rc);
            return Err(Error::Config(format!("cannot look up hook_user {name:?}: {e}")));
        }
        if found.is_null() {
            return Ok(None);
        }
        // SAFETY: on success the strings point into `buf`, which is still alive, and are
        // NUL-terminated (or null, which `text` handles).
        let (user, home) = unsafe { (text(entry.pw_name), text(entry.pw_dir)) };
        return Ok(Some(HookUser { name: user, uid: entry.pw_uid, gid: entry.pw_gid, home: PathBuf::from(home) }));
    }
}

/// A C string as text (empty for a null pointer).
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that outlives the call.
unsafe fn text(p: *const libc::c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: guaranteed by the caller.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_found_with_its_ids() {
        let root = HookUser::lookup("root").unwrap();
        assert_eq!((root.name(), root.uid(), root.gid()), ("root", 0, 0));
        assert!(!root.home().as_os_str().is_empty());
    }

    #[test]
    fn unknown_and_malformed_names_are_clear_errors() {
        let err = HookUser::lookup("no-such-user-teletraan").unwrap_err().to_string();
        assert!(err.contains("no-such-user-teletraan") && err.contains("does not exist"), "{err}");
        for bad in ["", "a b", "a:b", "a/b", "a\0b"] {
            let err = HookUser::lookup(bad).unwrap_err().to_string();
            assert!(err.contains("not a valid user name"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_base_environment_is_minimal() {
        let u = HookUser { name: "app".into(), uid: 10, gid: 20, home: "/home/app".into() };
        let env = u.base_environment(None, None);
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["PATH", "HOME", "USER", "LOGNAME"]);
        assert_eq!(env[0].1, DEFAULT_PATH);
        assert_eq!(env[1].1, "/home/app");
        let env = u.base_environment(Some("/opt/bin:/usr/bin".into()), Some("C.UTF-8".into()));
        assert_eq!(env[0].1, "/opt/bin:/usr/bin");
        assert_eq!(env.last().unwrap(), &("LANG".to_string(), "C.UTF-8".to_string()));
    }
}
