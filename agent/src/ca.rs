//! A private certificate authority the agent trusts besides the system's: for a gateway or an
//! artifact server whose certificate a company CA signed (`ca_file`).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The PEM certificates of `ca_file`, read and checked when the configuration loads.
#[derive(Clone, PartialEq, Eq)]
pub struct CaFile {
    /// Where they came from (for messages).
    pub path: PathBuf,
    pem: Vec<u8>,
}

impl CaFile {
    /// Reads `path`; a missing file, or one without a valid PEM certificate, is a configuration
    /// error naming the file.
    pub fn read(path: &Path) -> Result<CaFile> {
        let bad = |why: String| Error::Config(format!("ca_file {}: {why}", path.display()));
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let ca = CaFile { path: path.to_path_buf(), pem };
        let count = ca.certificates()?.len();
        if count == 0 {
            return Err(bad("no PEM certificate in the file".into()));
        }
        Ok(ca)
    }

    /// The certificates, for `reqwest::ClientBuilder::add_root_certificate`.
    pub fn certificates(&self) -> Result<Vec<reqwest::Certificate>> {
        reqwest::Certificate::from_pem_bundle(&self.pem)
            .map_err(|e| Error::Config(format!("ca_file {}: not valid PEM certificates: {e}", self.path.display())))
    }

    /// `builder` trusting these certificates too (the system's roots stay trusted).
    pub fn trust(ca: Option<&CaFile>, mut builder: reqwest::ClientBuilder) -> Result<reqwest::ClientBuilder> {
        if let Some(ca) = ca {
            for cert in ca.certificates()? {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(builder)
    }
}

impl std::fmt::Debug for CaFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaFile({})", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_or_broken_file_is_a_configuration_error() {
        let dir = std::env::temp_dir().join(format!("teletraan-agent-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = CaFile::read(&dir.join("missing.pem")).unwrap_err();
        assert!(matches!(missing, Error::Config(_)) && missing.to_string().contains("missing.pem"), "{missing}");
        std::fs::write(dir.join("empty.pem"), "just text\n").unwrap();
        let empty = CaFile::read(&dir.join("empty.pem")).unwrap_err();
        assert!(empty.to_string().contains("no PEM certificate"), "{empty}");
        std::fs::write(dir.join("broken.pem"), "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap();
        let broken = CaFile::read(&dir.join("broken.pem")).unwrap_err();
        assert!(broken.to_string().contains("broken.pem"), "{broken}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
