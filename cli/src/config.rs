//! Stored contexts (a server's URL and a token, by name, like kubectl's), in
//! `$TELETRAAN_CLI_CONFIG`, else `$XDG_CONFIG_HOME/teletraan/config.toml`, else
//! `~/.config/teletraan/config.toml`; written with permissions 0600 (its directory 0700).
//! `--url`/`TELETRAAN_URL` and `--token`/`TELETRAAN_TOKEN` override the context's.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::args::ClientArgs;
use crate::error::CliError;

/// The configuration file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The context used when none is named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    /// Contexts by name.
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// A server and a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// The server's URL.
    pub url: String,
    /// The token.
    pub token: String,
}

/// Where the configuration lives.
pub fn path() -> Result<PathBuf, CliError> {
    if let Some(p) = std::env::var_os("TELETRAAN_CLI_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|p| !p.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => match std::env::var_os("HOME").filter(|p| !p.is_empty()) {
            Some(home) => PathBuf::from(home).join(".config"),
            None => return Err(CliError::usage("no HOME: set TELETRAAN_CLI_CONFIG to a file for the contexts")),
        },
    };
    Ok(base.join("teletraan").join("config.toml"))
}

impl Config {
    /// Reads the file (none yet: an empty configuration).
    pub fn load(path: &Path) -> Result<Config, CliError> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map_err(|e| CliError::usage(format!("{}: {}", path.display(), e.message().trim()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(e) => Err(CliError::usage(format!("{}: {e}", path.display()))),
        }
    }

    /// Writes the file readable by its owner only, replacing it at once (a crash leaves the old
    /// one or the new one).
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let fail = |e: std::io::Error| CliError::failed(format!("{}: {e}", path.display()));
        let text =
            toml::to_string(self).map_err(|e| CliError::failed(format!("cannot write the configuration: {e}")))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let mut builder = std::fs::DirBuilder::new();
            builder.recursive(true);
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder.create(dir).map_err(fail)?;
        }
        let tmp = path.with_extension("toml.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(fail)?;
        // The mode applies to new files only: an older file keeps its own unless set again.
        #[cfg(unix)]
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o600)).map_err(fail)?;
        file.write_all(text.as_bytes()).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, path).map_err(fail)
    }
}

/// The server and token a command uses: flags and environment first, then the context.
pub fn resolve(args: &ClientArgs) -> Result<Context, CliError> {
    let (url, token) = (args.url.clone().filter(|u| !u.is_empty()), args.token.clone().filter(|t| !t.is_empty()));
    if let (Some(url), Some(token)) = (&url, &token) {
        return Ok(Context { url: url.clone(), token: token.clone() });
    }
    let path = path()?;
    let config = Config::load(&path)?;
    let name = args.context.clone().or(config.current.clone());
    let stored = match &name {
        Some(name) => Some(config.contexts.get(name).ok_or_else(|| {
            CliError::usage(format!("no context {name:?} in {} (see: teletraan context list)", path.display()))
        })?),
        None => None,
    };
    let url = url.or_else(|| stored.map(|c| c.url.clone())).ok_or_else(|| {
        CliError::usage("no server: run `teletraan login URL`, or set TELETRAAN_URL and TELETRAAN_TOKEN")
    })?;
    let token = token
        .or_else(|| stored.map(|c| c.token.clone()))
        .ok_or_else(|| CliError::usage("no token: run `teletraan login URL`, or set TELETRAAN_TOKEN"))?;
    Ok(Context { url, token })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_in_a_file_only_its_owner_reads() {
        let dir = std::env::temp_dir().join(format!("teletraan-cli-config-{}", std::process::id()));
        let path = dir.join("nested").join("config.toml");
        let mut config = Config::default();
        config
            .contexts
            .insert("prod".into(), Context { url: "https://deploy.example.com".into(), token: "s3cret".into() });
        config.current = Some("prod".into());
        config.save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        }
        std::fs::write(&path, "current = 3").unwrap();
        let err = Config::load(&path).unwrap_err();
        assert_eq!(err.exit, crate::exit::USAGE, "{err}");
        assert_eq!(Config::load(&dir.join("none.toml")).unwrap(), Config::default());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
