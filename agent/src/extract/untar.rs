//! tar entries (plain or already decompressed) into a [`Tree`].

use std::io::Read;

use tar::EntryType;

use super::tree::{Tree, refuse};
use crate::error::{Error, Result};

/// Unpacks every entry of the tar stream `reader` into `tree`.
pub(super) fn unpack(reader: Box<dyn Read>, tree: &mut Tree<'_>) -> Result<()> {
    let mut ar = tar::Archive::new(reader);
    let entries = ar.entries().map_err(|e| Error::Archive(e.to_string()))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::Archive(e.to_string()))?;
        tree.count_entry()?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = tree.relative(&name, &raw)?;
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644);
        if rel.as_os_str().is_empty() {
            if kind == EntryType::Directory {
                continue;
            }
            return Err(refuse(&name, "empty path"));
        }
        match kind {
            EntryType::Directory => tree.dir(&name, &rel, mode)?,
            EntryType::Regular | EntryType::Continuous => {
                tree.check_declared(entry.size())?;
                tree.file(&name, &rel, mode, &mut entry)?;
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|t| t.into_owned()).unwrap_or_default();
                tree.symlink(&name, &rel, &target)?;
            }
            EntryType::Link => return Err(refuse(&name, "hard links are not allowed")),
            EntryType::Char | EntryType::Block => return Err(refuse(&name, "device files are not allowed")),
            EntryType::Fifo => return Err(refuse(&name, "fifos are not allowed")),
            EntryType::XGlobalHeader | EntryType::XHeader | EntryType::GNULongName | EntryType::GNULongLink => {}
            other => return Err(refuse(&name, &format!("unsupported entry type {other:?}"))),
        }
    }
    Ok(())
}
