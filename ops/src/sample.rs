//! Sample builds: tar.gz artifacts with Teletraan hook scripts, for the demo and the tests.

use std::io::Write;

use sha2::{Digest, Sha256};

/// Builds a tar.gz holding `VERSION` and one executable `teletraan/<STAGE>` per hook.
pub fn artifact(version: &str, hooks: &[(&str, String)]) -> std::io::Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, mode: u32, body: &[u8]| -> std::io::Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_cksum();
        tar.append_data(&mut header, path, body)
    };
    add("VERSION", 0o644, format!("{version}\n").as_bytes())?;
    for (stage, script) in hooks {
        add(&format!("teletraan/{stage}"), 0o755, script.as_bytes())?;
    }
    let gz = tar.into_inner()?;
    let mut bytes = gz.finish()?;
    bytes.flush()?;
    Ok(bytes)
}

/// A well-formed SHA-256 (that of no bytes at all) for builds no agent ever downloads, those of
/// simulated fleets and benchmarks: the server requires a digest on every build by default.
pub const UNDOWNLOADED_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Hex SHA-256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The demo's hooks: each says what it does; RESTARTING takes a moment so the rollout can be
/// watched, and starts nothing (the demo has no real service).
pub fn demo_hooks(version: &str) -> Vec<(&'static str, String)> {
    let say = |what: &str| {
        format!("#!/bin/sh\necho \"[$ENV_NAME/$STAGE_NAME] {what} (build {version}, deploy $DEPLOY_ID)\"\n")
    };
    vec![
        ("PRE_DOWNLOAD", say("preparing to download a new build")),
        ("PRE_RESTART", say("draining traffic")),
        (
            "RESTARTING",
            format!(
                "#!/bin/sh\necho \"[$ENV_NAME/$STAGE_NAME] restarting on {version}\"\nsleep 2\necho {version} > \"$(dirname \"$TARGET\")/$ENV_NAME.running\"\n"
            ),
        ),
        ("POST_RESTART", say("health check passed; taking traffic")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_holds_the_hooks_executable() {
        let bytes = artifact("v1", &demo_hooks("v1")).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().to_string();
            if path.starts_with("teletraan/") {
                assert_eq!(entry.header().mode().unwrap() & 0o111, 0o111, "{path} is executable");
            }
            names.push(path);
        }
        assert!(names.contains(&"teletraan/RESTARTING".to_string()));
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(sha256_hex(b""), UNDOWNLOADED_SHA256);
    }
}
