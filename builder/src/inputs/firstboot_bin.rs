//! The `kiln-firstboot` binary a build installs: an input like the pinned
//! artifacts, chosen per architecture, checked to be an ELF executable for
//! that architecture, and hashed once so every writer streams the same bytes.

use crate::error::{Error, IoContext, Result};
use crate::inputs::profile::{Arch, Profile};
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `kiln-firstboot` binary chosen for one architecture.
#[derive(Debug, Clone)]
pub struct FirstbootBin {
    /// Where the binary is on the build machine.
    pub path: PathBuf,
    /// Its size in bytes, read when it was chosen.
    pub size: u64,
    /// Its sha256, read when it was chosen; the writers stream exactly these bytes.
    pub sha256: String,
    /// How it was found (`--firstboot-bin`, the workspace build, ...).
    pub source: String,
}

/// Reads the ELF machine of `path` and refuses a binary for another architecture.
fn check_elf(path: &Path, arch: Arch) -> Result<()> {
    let mut head = [0u8; 20];
    let mut f = crate::io::open_regular(path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    f.read_exact(&mut head)
        .map_err(|_| Error::config(format!("{} is too short to be an executable", path.display())))?;
    if &head[..4] != b"\x7fELF" {
        return Err(Error::config(format!("{} is not an ELF executable", path.display())));
    }
    let machine =
        if head[5] == 2 { u16::from_be_bytes([head[18], head[19]]) } else { u16::from_le_bytes([head[18], head[19]]) };
    if machine != arch.elf_machine() {
        return Err(Error::config(format!(
            "{} is built for ELF machine {machine}, not {arch} ({}); pass the {arch} build with --firstboot-bin {arch}=PATH",
            path.display(),
            arch.elf_machine()
        )));
    }
    Ok(())
}

/// The `kiln-firstboot` for `arch`: none when the profile pins it as
/// `[artifacts.kiln-firstboot]`, else the `--firstboot-bin [ARCH=]PATH` given
/// (`bins`), else the workspace build beside kiln or its static cross-build.
pub fn resolve(profile: &Profile, arch: Arch, bins: &[(Option<Arch>, PathBuf)]) -> Result<Option<FirstbootBin>> {
    if profile.doc.artifacts.contains_key("kiln-firstboot") {
        return Ok(None); // a pinned artifact like any other
    }
    let explicit = bins.iter().find(|(a, _)| *a == Some(arch)).or_else(|| bins.iter().find(|(a, _)| a.is_none()));
    let (path, source) = match explicit {
        Some((_, p)) => (p.clone(), "--firstboot-bin".to_string()),
        None if Arch::host() == Some(arch) => {
            let exe = std::env::current_exe().io_ctx("locating the kiln binary")?;
            let sibling = exe.with_file_name("kiln-firstboot");
            if !sibling.is_file() {
                return Err(Error::config(format!(
                    "no kiln-firstboot for {arch}: expected the workspace build at {}; run `cargo build --release -p kiln-firstboot` or pass --firstboot-bin PATH",
                    sibling.display()
                )));
            }
            (sibling, "workspace build".to_string())
        }
        None => {
            // The workspace's static cross-build: kiln at target/<profile>/kiln, the
            // agent at target/<triple>/<profile>/kiln-firstboot (`.cargo/config.toml`
            // links it with rust-lld).
            let exe = std::env::current_exe().io_ctx("locating the kiln binary")?;
            let triple = format!("{}-unknown-linux-musl", arch.uname());
            let cross = match (exe.parent(), exe.parent().and_then(Path::parent)) {
                (Some(profile_dir), Some(target)) => profile_dir
                    .file_name()
                    .map(|p| target.join(&triple).join(p).join("kiln-firstboot"))
                    .filter(|p| p.is_file()),
                _ => None,
            };
            match cross {
                Some(p) => (p, format!("workspace cross-build ({triple})")),
                None => {
                    return Err(Error::config(format!(
                        "no kiln-firstboot for {arch} (this machine is {}): build one with `rustup target add {triple}` and `cargo build --release -p kiln-firstboot --target {triple}` (kiln then finds it), pass --firstboot-bin {arch}=PATH, or pin a release as [artifacts.kiln-firstboot]",
                        std::env::consts::ARCH
                    )))
                }
            }
        }
    };
    check_elf(&path, arch)?;
    let (size, sha256) =
        crate::io::hash_regular(&path).map_err(|e| Error::config(format!("{}: {e}", path.display())))?;
    Ok(Some(FirstbootBin { path, size, sha256, source }))
}
