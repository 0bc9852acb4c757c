//! A Postgres server of a test's own (the Debian package's binaries, a data directory and a
//! port of its own), which the test may restart without disturbing the tests that share the
//! machine's server; stopped and removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The server.
pub struct Postgres {
    bin: PathBuf,
    dir: PathBuf,
    /// The postgres user's uid and gid, when the tests run as root (Postgres refuses root).
    owner: Option<(u32, u32)>,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// The newest installed major version's binaries.
fn bin_dir() -> PathBuf {
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Postgres is installed (/usr/lib/postgresql)")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    versions.sort_unstable();
    let v = versions.last().expect("a Postgres version");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The postgres user's ids, looked up once: later runs switch to them by number, so a test
/// elsewhere rewriting the user database meanwhile cannot make a lookup fail.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    for _ in 0..20 {
        if let (Some(u), Some(g)) = (id("-u"), id("-g")) {
            return (u, g);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("the postgres user exists (the Debian package creates it)");
}

impl Postgres {
    /// Creates the data directory and starts the server on a free port.
    pub fn start() -> Postgres {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the data directory");
        let owner = is_root().then(postgres_ids);
        let pg = Postgres { bin: bin_dir(), dir, port, owner };
        if let Some((uid, gid)) = owner {
            // Postgres refuses to run as root: the data belongs to the postgres user.
            let ok = Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(&pg.dir).status().unwrap();
            assert!(ok.success(), "chown the data directory");
        }
        pg.run(
            "initdb",
            &["-D", &pg.data(), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C"],
        );
        pg.pg_ctl("start");
        pg
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    /// A command running one of the server's programs (as the postgres user when root).
    fn program(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid).current_dir(&self.dir);
        }
        c
    }

    /// Runs one of the server's programs.
    fn run(&self, program: &str, args: &[&str]) {
        let out = self.program(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.data();
        let log = self.dir.join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300",
            self.port,
            self.dir.display()
        );
        self.run("pg_ctl", &["-D", &data, "-w", "-t", "60", "-l", &log, "-o", &options, "-m", "fast", action]);
    }

    /// A URL for database `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Its address.
    pub fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    /// Creates a database.
    pub fn create_db(&self, db: &str) {
        self.run("createdb", &["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", db]);
    }

    /// Stops the server (a fast shutdown: sessions are ended).
    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    /// Starts the stopped server again.
    pub fn start_again(&self) {
        self.pg_ctl("start");
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.program("pg_ctl").args(["-D", &self.data(), "-m", "immediate", "stop"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
