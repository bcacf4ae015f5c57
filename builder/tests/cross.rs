//! The image carries kiln-firstboot for its own architecture: for another
//! architecture kiln finds the workspace's static cross-build
//! (`target/<triple>/<profile>/kiln-firstboot`, built by `scripts/test` with the
//! repository's `.cargo/config.toml`) without `--firstboot-bin`.

mod common;

use common::*;
use std::process::Command;

#[test]
fn arm64_agent_is_found_in_the_workspace_cross_build() {
    let s = Scratch::new(&["fcos-1.34"]);
    s.pin("fcos-1.34");
    // The workspace layout: target/release/kiln and target/aarch64-unknown-linux-musl/release/kiln-firstboot.
    let target = s.path("target");
    let release = target.join("release");
    let cross = target.join("aarch64-unknown-linux-musl/release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::create_dir_all(&cross).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_kiln"), release.join("kiln")).unwrap();
    let build = |out: &str| {
        run(Command::new(release.join("kiln"))
            .env("CI", "1")
            .args(["build", "--format", "tar"])
            .arg(s.profile("fcos-1.34"))
            .args(["--arch", "arm64", "--mirror", s.mirror.url()])
            .arg("--cache")
            .arg(s.path("cache"))
            .arg("--out")
            .arg(s.path(out)))
    };
    // Not built yet: exit 2 naming the commands that build it.
    let o = build("d1");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("rustup target add aarch64-unknown-linux-musl"), "{}", stderr(&o));
    // Built: used, and recorded with its hash.
    let fb = kiln_testkit::standin::elf(183, 4096, 7);
    std::fs::write(cross.join("kiln-firstboot"), &fb).unwrap();
    let o = build("d2");
    assert!(o.status.success(), "{}", stderr(&o));
    let rec = manifest_entry(&s.path("d2"), "fcos-1.34", "arm64", "/opt/bin/kiln-firstboot");
    assert_eq!(rec["sha256"], kiln_testkit::standin::sha256(&fb));
    // An x86-64 binary in the arm64 slot is refused by its ELF machine.
    std::fs::write(cross.join("kiln-firstboot"), kiln_testkit::standin::elf(62, 4096, 7)).unwrap();
    let o = build("d3");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("ELF machine 62"), "{}", stderr(&o));
}
