//! The systemd units of the server's roles (`ops/systemd/teletraan-{api,gateway,worker}.service`)
//! start commands the binary has, with settings it reads.

mod support;

use std::path::Path;
use std::process::Command;

use support::binary;

/// The values of `key=` lines of a unit.
fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines().filter_map(|l| l.strip_prefix(key)?.strip_prefix('=')).collect()
}

#[test]
fn each_role_unit_runs_a_command_of_the_binary_with_settings_it_reads() {
    for role in ["api", "gateway", "worker"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("systemd/teletraan-{role}.service"));
        let unit = std::fs::read_to_string(&path).unwrap();
        let mut commands = values(&unit, "ExecStart");
        commands.extend(values(&unit, "ExecStartPre"));
        assert_eq!(values(&unit, "ExecStart"), [format!("/usr/local/bin/teletraan {role}").as_str()], "{role}");
        for command in commands {
            let args: Vec<&str> = command.split_whitespace().skip(1).collect();
            let out = Command::new(binary("teletraan")).args(&args).arg("--help").output().unwrap();
            assert!(out.status.success(), "{role}: {command} is not a command of the binary");
            let help = String::from_utf8_lossy(&out.stdout);
            for setting in values(&unit, "Environment") {
                let name = setting.split('=').next().unwrap();
                assert!(help.contains(name), "{role}: `{command}` does not read {name}");
            }
        }
        assert_eq!(values(&unit, "KillSignal"), ["SIGTERM"], "{role}");
        assert!(values(&unit, "User") == ["teletraan"] && values(&unit, "NoNewPrivileges") == ["yes"], "{role}");
    }
}
