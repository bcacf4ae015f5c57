//! `kiln-firstboot`: reads machine metadata on first boot and runs kubeadm.
//!
//! This build carries only `plan` over the baked image defaults; metadata
//! providers, preflight and kubeadm execution are tracked as their own work.

use kiln_firstboot::image::{ImageDefaults, IMAGE_TOML_PATH};
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: kiln-firstboot [--root DIR] <plan|run|--version>

Commands:
  plan       print the image's baked defaults (from /etc/kiln/image.toml)
  run        join this machine to its cluster (not in this build: exits 2)

Exit codes: 0 ok, 1 failed, 2 usage or configuration error.";

fn main() -> ExitCode {
    let mut root = PathBuf::from("/");
    let mut cmd = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => match args.next() {
                Some(r) => root = PathBuf::from(r),
                None => return usage("--root needs a directory"),
            },
            "--version" | "-V" => {
                println!("kiln-firstboot {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "--help" | "-h" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other if cmd.is_none() => cmd = Some(other.to_string()),
            other => return usage(&format!("unexpected argument '{other}'")),
        }
    }
    match cmd.as_deref().unwrap_or("run") {
        "plan" => plan(&root),
        "run" => {
            eprintln!("<3>kiln-firstboot: 'run' is not part of this build yet; nothing was changed");
            ExitCode::from(2)
        }
        other => usage(&format!("unknown command '{other}'")),
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("kiln-firstboot: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn plan(root: &std::path::Path) -> ExitCode {
    let path = root.join(IMAGE_TOML_PATH.trim_start_matches('/'));
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("<3>kiln-firstboot: cannot read {}: {e}; was this image built by kiln build?", path.display());
            return ExitCode::from(1);
        }
    };
    match ImageDefaults::from_toml(&text) {
        Ok(d) => {
            print!("{}", d.to_toml());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("<3>kiln-firstboot: {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}
