//! `srmig man --out DIR`: the manual pages, rendered by clap_mangen from the same clap
//! definitions the binaries parse (so they cannot drift from `--help`): `DIR/man1/srmig.1` and
//! one page per subcommand (`srmig-lab-migrate.1`, ...), and `DIR/man8/srmigd.8` (a daemon,
//! section 8).

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

/// Writes every page under `dir` (creating `man1/` and `man8/`); returns their paths.
pub(crate) fn write(srmig: clap::Command, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (man1, man8) = (dir.join("man1"), dir.join("man8"));
    for d in [&man1, &man8] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    let mut pages = Vec::new();
    let mut cmd = srmig.disable_help_subcommand(true);
    cmd.build();
    walk(cmd, &man1, &mut pages)?;
    let srmigd = clap_mangen::Man::new(srmig_hostd::cli::Args::command()).section("8");
    pages.push(
        srmigd
            .generate_to(&man8)
            .with_context(|| format!("cannot write srmigd.8 in {}", man8.display()))?,
    );
    Ok(pages)
}

/// `cmd`'s page and, first, those of its subcommands (hidden ones left out).
fn walk(cmd: clap::Command, dir: &Path, pages: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        walk(sub, dir, pages)?;
    }
    let man = clap_mangen::Man::new(cmd);
    let name = man.get_filename();
    pages.push(
        man.generate_to(dir)
            .with_context(|| format!("cannot write {name} in {}", dir.display()))?,
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// Every page is written, srmig's with its subcommands and srmigd's in section 8, and they
    /// carry the flags the binaries parse.
    #[test]
    fn pages_for_every_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pages = write(crate::Cli::command(), dir.path()).expect("pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        for want in [
            "srmig.1",
            "srmig-migrate.1",
            "srmig-migration-show.1",
            "srmig-controller.1",
            "srmig-lab-migrate.1",
            "srmig-completions.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let srmigd = std::fs::read_to_string(dir.path().join("man8/srmigd.8")).expect("srmigd.8");
        assert!(srmigd.contains(".TH srmigd 8"), "{srmigd}");
        assert!(srmigd.contains("\\-\\-workers"), "{srmigd}");
        let controller = std::fs::read_to_string(dir.path().join("man1/srmig-controller.1"))
            .expect("srmig-controller.1");
        assert!(
            controller.contains("\\-\\-fence\\-wait\\-ms"),
            "{controller}"
        );
    }

    /// The `ExecStart` of a unit in dist/systemd, with `%i` as `h1` and without the
    /// environment's extra options.
    fn exec_start(unit: &str) -> (String, Vec<String>) {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../dist/systemd")
            .join(unit);
        let text = std::fs::read_to_string(&path).expect("unit file");
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix("ExecStart="))
            .expect("ExecStart");
        // `${NAME}`: the unit's own `Environment=NAME=value`; `$NAME`: options from the
        // environment file, none by default.
        let env = |name: &str| {
            text.lines()
                .filter_map(|l| l.strip_prefix("Environment="))
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .map(str::to_owned)
                .unwrap_or_else(|| panic!("{unit}: no Environment={name}"))
        };
        let words: Vec<String> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('$') || w.starts_with("${"))
            .map(
                |w| match w.strip_prefix("${").and_then(|w| w.strip_suffix('}')) {
                    Some(name) => env(name),
                    None => w.replace("%i", "h1"),
                },
            )
            .collect();
        (text, words)
    }

    /// The units start the binaries with flags they accept, from the paths they document.
    #[test]
    fn systemd_units_start_with_flags_the_binaries_parse() {
        let (text, srmigd) = exec_start("srmigd@.service");
        assert_eq!(srmigd[0], "/usr/local/bin/srmigd");
        let args = srmig_hostd::cli::Args::try_parse_from(&srmigd).expect("srmigd's flags");
        assert_eq!(args.config, Path::new("/etc/srmig/h1.toml"));
        assert_eq!(args.api, Path::new("/run/srmig/h1.sock"));
        assert_eq!(args.name.as_deref(), Some("h1"));
        for cap in ["CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_BPF", "CAP_IPC_LOCK"] {
            assert!(text.contains(cap), "srmigd@.service lacks {cap}");
        }
        let (_, controller) = exec_start("srmig-controller.service");
        assert_eq!(controller[0], "/usr/local/bin/srmig");
        assert!(
            controller.contains(&"/var/lib/srmig/controller.redb".to_owned()),
            "{controller:?}"
        );
        let cli = crate::Cli::try_parse_from(&controller).expect("the controller's flags");
        assert!(matches!(cli.command, crate::Command::Controller(_)));
    }

    /// `systemd-analyze verify` accepts the units (with `/bin/true` in place of the installed
    /// binaries, whose flags the test above checks).
    #[test]
    fn systemd_analyze_verifies_the_units() {
        let ok = std::process::Command::new("systemd-analyze")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPED: systemd-analyze is not installed");
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set: systemd-analyze must be installed"
            );
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        for (unit, name) in [
            ("srmigd@.service", "srmigd@h1.service"),
            ("srmig-controller.service", "srmig-controller.service"),
        ] {
            let (text, _) = exec_start(unit);
            let text = text
                .replace("/usr/local/bin/srmigd ", "/bin/true ")
                .replace("/usr/local/bin/srmig ", "/bin/true ");
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write unit");
            let out = std::process::Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&path)
                .output()
                .expect("systemd-analyze");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success() && stderr.trim().is_empty(),
                "{name}: {stderr}"
            );
        }
    }
}
