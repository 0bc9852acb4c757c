//! The client commands and their flags, apart from the server's.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

/// Flags every client command takes (after its name, or after any of its subcommands').
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    /// The server's URL (overrides the context's).
    #[arg(long, env = "TELETRAAN_URL", global = true)]
    pub url: Option<String>,
    /// The API token (overrides the context's).
    #[arg(long, env = "TELETRAAN_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
    /// The context (server and token) to use instead of the current one.
    #[arg(long, env = "TELETRAAN_CONTEXT", global = true)]
    pub context: Option<String>,
    /// How reads are printed.
    #[arg(long, short = 'o', value_enum, global = true, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Print nothing but errors: the exit status tells the outcome.
    #[arg(long, short = 'q', global = true)]
    pub quiet: bool,
}

/// How reads are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// The API's JSON, for scripts.
    Json,
}

/// The client commands (the `teletraan` binary adds them beside the server's).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Store a server's URL and a token as a context (and make it the current one).
    Login(Login),
    /// List, choose or forget the stored contexts.
    Context {
        #[command(subcommand)]
        command: ContextCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Environments and their stages: list, show, create, update, delete.
    Env {
        #[command(subcommand)]
        command: EnvCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A stage's capacity (hosts and groups) and configuration (script and agent variables,
    /// promotion).
    Stage {
        #[command(subcommand)]
        command: StageCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Builds: publish, list, show, tag good or bad.
    Build {
        #[command(subcommand)]
        command: BuildCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deploy a build to a stage.
    Deploy {
        #[command(flatten)]
        args: DeployArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Deploy a stage's current build to another stage of the environment.
    Promote {
        /// The environment.
        env: String,
        /// The stage whose current deploy is promoted.
        from_stage: String,
        /// The stage it goes to.
        to_stage: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Roll a stage back to its last good deploy (or the one given).
    Rollback {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// The deploy to return to (default: the last one that succeeded).
        #[arg(long)]
        to: Option<String>,
        /// Also tag the current build BAD_BUILD, so no pipeline deploys it again.
        #[arg(long)]
        mark_bad: bool,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run the current deploy again on every host (its hooks restart the service).
    Restart {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        wait: WaitArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Pause a stage's rollout: no host takes a new step until it is resumed.
    Pause {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Resume a paused stage.
    Resume {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A stage's current deploy and its progress; with --watch, follow it to its end.
    Status {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// Follow the deploy live until it succeeds or fails (the exit status says which).
        #[arg(long)]
        watch: bool,
        /// How long --watch may follow (`30s`, `20m`, `2h`).
        #[arg(long, value_parser = parse_duration, default_value = "30m")]
        timeout: Duration,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The hosts of a stage: state, step, build, last report, error.
    Hosts {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A stage's deploys, newest first.
    History {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// How many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
        limit: u16,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// API tokens: create (shown once), list, revoke.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell's completion script for `teletraan`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the man pages of `teletraan` and its commands (to a directory, or page one to
    /// standard output).
    Man {
        /// Directory to write `teletraan.1`, `teletraan-deploy.1`… into (default: print
        /// `teletraan.1`).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
    },
}

/// Shells with completions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    /// Bash.
    Bash,
    /// Zsh.
    Zsh,
    /// Fish.
    Fish,
}

/// `teletraan login`.
#[derive(Args, Debug)]
pub struct Login {
    /// The server's URL (`https://deploy.example.com`).
    pub url: String,
    /// The context's name (default: `default`).
    #[arg(long, default_value = "default")]
    pub name: String,
    /// The token (default: read from TELETRAAN_TOKEN, or from standard input).
    #[arg(long, env = "TELETRAAN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `teletraan context …`.
#[derive(Subcommand, Debug)]
pub enum ContextCommand {
    /// The stored contexts (tokens are not shown).
    List,
    /// Make a context the current one.
    Use {
        /// Its name.
        name: String,
    },
    /// Forget a context.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `teletraan env …`.
#[derive(Subcommand, Debug)]
pub enum EnvCommand {
    /// Every stage, or the stages of one environment.
    List {
        /// Only this environment's stages.
        env: Option<String>,
    },
    /// One stage's settings.
    Show {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
    },
    /// Create a stage (and its environment when new).
    Create {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// A setting, as the API names it: `maxParallel=5`, `description="canary hosts"`.
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
    },
    /// Change a stage's settings.
    Update {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// A setting, as the API names it: `maxParallel=5`.
        #[arg(long = "set", value_name = "NAME=VALUE", required = true)]
        set: Vec<String>,
    },
    /// Delete a stage (refused while it has hosts serving it).
    Delete {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// Say it again: the stage and its settings are gone for good.
        #[arg(long)]
        yes: bool,
    },
}

/// `teletraan stage …`.
#[derive(Subcommand, Debug)]
pub enum StageCommand {
    /// The hosts and groups a stage deploys to.
    Capacity {
        #[command(subcommand)]
        command: CapacityCommand,
    },
    /// Script variables, agent variables and promotion settings.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// `teletraan stage capacity …`.
#[derive(Subcommand, Debug)]
pub enum CapacityCommand {
    /// The stage's groups and hosts.
    List {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
    },
    /// Add a group or a host.
    Add {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        target: CapacityTarget,
    },
    /// Remove a group or a host.
    Remove {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        #[command(flatten)]
        target: CapacityTarget,
    },
}

/// A group or a host of a capacity.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct CapacityTarget {
    /// A group of hosts.
    #[arg(long)]
    pub group: Option<String>,
    /// One host, by name.
    #[arg(long)]
    pub host: Option<String>,
}

/// Which configuration of a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ConfigKind {
    /// Variables given to the deploy scripts.
    Script,
    /// Variables given to the agent.
    Agent,
    /// Promotion: `type` (MANUAL, AUTO), `predStage`, `schedule`, `delay`, `disablePolicy`…
    Promotes,
}

/// `teletraan stage config …`.
#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Print a configuration.
    Get {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// Which one.
        #[arg(value_enum)]
        kind: ConfigKind,
    },
    /// Change entries (`NAME=VALUE`; `NAME=` removes a variable); the others stay.
    Set {
        /// The environment.
        env: String,
        /// The stage.
        stage: String,
        /// Which one.
        #[arg(value_enum)]
        kind: ConfigKind,
        /// The entries.
        #[arg(value_name = "NAME=VALUE", required = true)]
        entries: Vec<String>,
    },
}

/// `teletraan build …`.
#[derive(Subcommand, Debug)]
pub enum BuildCommand {
    /// Publish a build (CI does this after uploading the artifact).
    Publish {
        /// The build name (the stages that deploy it name it).
        #[arg(long)]
        name: String,
        /// Where the agents download the artifact.
        #[arg(long)]
        artifact_url: String,
        /// The artifact's SHA-256 (hex).
        #[arg(long)]
        sha256: Option<String>,
        /// The commit built.
        #[arg(long)]
        commit: String,
        /// Its repository.
        #[arg(long)]
        repo: Option<String>,
        /// Its branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Builds, newest first.
    List {
        /// Of this build name.
        #[arg(long)]
        name: Option<String>,
        /// Of this branch.
        #[arg(long)]
        branch: Option<String>,
        /// How many.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u16).range(1..=500))]
        limit: u16,
    },
    /// One build with its tag.
    Show {
        /// Its id.
        id: String,
    },
    /// Tag a build good or bad (a bad build is never deployed by a pipeline).
    Tag {
        /// Its id.
        id: String,
        /// The verdict.
        #[arg(value_enum)]
        verdict: Verdict,
        /// Why.
        #[arg(long)]
        comment: Option<String>,
    },
}

/// A build's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Verdict {
    /// GOOD_BUILD.
    Good,
    /// BAD_BUILD.
    Bad,
}

/// `teletraan deploy`.
#[derive(Args, Debug)]
pub struct DeployArgs {
    /// The environment.
    pub env: String,
    /// The stage.
    pub stage: String,
    /// The build to deploy.
    #[arg(long)]
    pub build: String,
    /// A note kept with the deploy.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// Following a deploy to its end.
#[derive(Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Follow the deploy until it succeeds or fails; the exit status says which (0, 1; 3 when
    /// --timeout ran out).
    #[arg(long)]
    pub wait: bool,
    /// How long --wait may follow (`30s`, `20m`, `2h`).
    #[arg(long, value_parser = parse_duration, default_value = "30m")]
    pub timeout: Duration,
}

/// `teletraan token …`.
#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create a token for a principal (printed once: store it).
    Create {
        /// Whose token (a person or a script principal).
        #[arg(long)]
        principal: String,
        /// What it is for.
        #[arg(long)]
        description: Option<String>,
        /// Days until it expires.
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// Tokens (never their secrets).
    List,
    /// Revoke a token.
    Revoke {
        /// Its id.
        id: String,
    },
}

/// `90`, `90s`, `20m`, `2h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 20m or 2h"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        _ => return Err(format!("{s:?} is not a duration like 90s, 20m or 2h")),
    };
    if secs == 0 {
        return Err("a duration must be at least 1s".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("20m"), Ok(Duration::from_secs(1200)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "m", "5d", "-1s", "0s", "1.5m"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
