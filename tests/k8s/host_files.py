"""The host's Debian iptables (nft backend) as layer members for kube-proxy's image.

kube-proxy's iptables mode execs `iptables`, `iptables-save`, `iptables-restore`
and their `ip6tables` twins by name from its container's PATH (k8s.io/kubernetes
pkg/util/iptables/iptables.go, cmdIPTables...), so its image must carry them:
upstream's base is distroless-iptables. This one carries Debian's own, from the
files the host's packages installed:

- from `dpkg -L iptables`: /usr/sbin/xtables-nft-multi, the `*-nft` links to it
  (iptables-nft, -save, -restore and the ip6tables ones) and every extension
  in the xtables directory (libxt_*.so, libipt_*.so, ...: libxtables dlopen()s
  them for `-m comment`, `-j DNAT`, ..., so `ldd` never names them);
- the shared libraries `ldd` names for each of those ELF files (libxtables,
  libmnl, libnftnl, libc, the loader, ...), with the symlinks that lead to them;
- /usr/sbin/iptables -> iptables-nft and the five other unversioned names, as
  `update-alternatives --set iptables /usr/sbin/iptables-nft` leaves them (the
  Debian 12 default), without /etc/alternatives;
- Debian 12's merged /usr: /lib, /lib64, /sbin, /bin are links into /usr when
  they are on the host (the loader is /lib64/ld-linux-x86-64.so.2).

Every file and link is named in images.json with the host path it came from,
the Debian package that owns it (`dpkg-query -S`) and that package's version
(`dpkg-query -W`). Nothing here depends on the time; the bytes depend only on
the installed packages.
"""

import hashlib
import os
import re
import stat
import subprocess

PACKAGE = "iptables"
INSTALL = "apt-get install iptables"
# What kube-proxy runs (pkg/util/iptables/iptables.go) -> the nft name it is linked to.
ALTERNATIVES = {"iptables": "iptables-nft", "iptables-save": "iptables-nft-save",
                "iptables-restore": "iptables-nft-restore", "ip6tables": "ip6tables-nft",
                "ip6tables-save": "ip6tables-nft-save", "ip6tables-restore": "ip6tables-nft-restore"}
MULTI = "/usr/sbin/xtables-nft-multi"
MERGED = ("bin", "lib", "lib64", "sbin")
ELF_MACHINE = {"amd64": 0x3E, "arm64": 0xB7}


class HostError(Exception):
    """The host cannot supply the files; the message says what to do."""


def _run(args):
    try:
        return subprocess.run(args, capture_output=True, text=True)
    except FileNotFoundError:
        raise HostError("%s is not installed: kube-proxy's image takes iptables from this host's Debian packages "
                        "(a Debian or Ubuntu host with dpkg is needed)" % args[0])


def package_version(pkg):
    """The installed version of PKG, or HostError naming the install command."""
    r = _run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\t${Version}", pkg])
    status, _, version = r.stdout.partition("\t")
    if r.returncode != 0 or not status.startswith("ii"):
        raise HostError("the kube-proxy image carries this host's iptables (nft backend), and the Debian package "
                        "%s is not installed: %s" % (pkg, INSTALL))
    return version


def package_files():
    """What the iptables package installed that kube-proxy's iptables mode runs."""
    r = _run(["dpkg-query", "-L", PACKAGE])
    if r.returncode != 0:
        raise HostError("dpkg-query -L %s failed: %s (reinstall it: %s)" % (PACKAGE, r.stderr.strip(), INSTALL))
    listed = [line for line in r.stdout.splitlines() if line.startswith("/")]
    nft_links = ["/usr/sbin/" + n for n in sorted(ALTERNATIVES.values())]
    extensions = sorted(p for p in listed if re.search(r"/xtables/lib[a-z0-9]+_[A-Za-z0-9_]+\.so$", p))
    for p in [MULTI] + nft_links:
        if p not in listed:
            raise HostError("the %s package lists no %s (dpkg-query -L %s): not Debian 12's iptables 1.8 with its nft "
                            "backend; reinstall it: %s" % (PACKAGE, p, PACKAGE, INSTALL))
    if not extensions:
        raise HostError("the %s package lists no xtables extensions (lib*_*.so): reinstall it: %s" % (PACKAGE, INSTALL))
    for p in nft_links:
        if os.path.realpath(p) != os.path.realpath(MULTI):
            raise HostError("%s does not lead to %s: reinstall %s (%s)" % (p, MULTI, PACKAGE, INSTALL))
    return [MULTI] + nft_links + extensions


def libraries(elf_files):
    """The shared libraries and loader `ldd` names for ELF_FILES, sorted."""
    found = set()
    for f in elf_files:
        r = _run(["ldd", f])
        if r.returncode != 0:
            raise HostError("ldd %s failed: %s" % (f, (r.stdout + r.stderr).strip()))
        for line in r.stdout.splitlines():
            line = line.strip()
            if "not found" in line:
                raise HostError("ldd %s: %s: a library iptables needs is missing on this host (%s)" % (f, line, INSTALL))
            m = re.match(r"^\S+ => (/\S+) \(0x[0-9a-f]+\)$", line) or re.match(r"^(/\S+) \(0x[0-9a-f]+\)$", line)
            if m:
                found.add(m.group(1))
    return sorted(found)


def check_elf(path, arch):
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") != ELF_MACHINE[arch]:
        raise HostError("%s is not a linux/%s ELF file: the kube-proxy image takes iptables from this host's "
                        "packages, so it can only be made for the host's architecture" % (path, arch))


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Taken:
    """Host paths gathered into image entries: path in the image -> (kind, value, host path)."""

    def __init__(self):
        self.entries = {}

    def take(self, path, depth=0):
        """Adds PATH (absolute, on the host) and, for a symlink, what it leads to."""
        if depth > 8:
            raise HostError("%s: too many levels of symbolic links" % path)
        d = os.path.realpath(os.path.dirname(path))
        host = os.path.join(d, os.path.basename(path))
        image = host.lstrip("/")
        if image in self.entries:
            return
        try:
            st = os.lstat(host)
        except OSError as e:
            raise HostError("%s: %s (reinstall %s: %s)" % (host, e.strerror, PACKAGE, INSTALL))
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(host)
            self.entries[image] = ("link", target, host)
            self.take(target if target.startswith("/") else os.path.join(d, target), depth + 1)
        elif stat.S_ISREG(st.st_mode):
            self.entries[image] = ("file", host, host)
        else:
            raise HostError("%s is neither a file nor a symbolic link" % host)


def owners(paths):
    """dpkg's package for each host path (tried as given and through the merged-/usr links)."""
    aliases = {}
    for p in paths:
        forms = [p]
        for top in MERGED:
            if p.startswith("/usr/%s/" % top) and os.path.realpath("/" + top) == "/usr/" + top:
                forms.append(p[len("/usr"):])
        for f in forms:
            aliases[f] = p
    r = _run(["dpkg-query", "-S"] + sorted(aliases))
    owner = {}
    for line in r.stdout.splitlines():
        if line.startswith("diversion "):
            continue
        m = re.match(r"^([^ ,]+): (/.+)$", line)
        if m and m.group(2) in aliases:
            owner[aliases[m.group(2)]] = m.group(1)
    missing = [p for p in paths if p not in owner]
    if missing:
        raise HostError("no Debian package owns %s (dpkg-query -S): the image names the package of every file it "
                        "takes; repair the host's packages" % ", ".join(missing))
    return owner


def iptables_nft(arch):
    """(members, manifest): the layer entries (path, kind, value), and what images.json says of each."""
    package_version(PACKAGE)
    wanted = package_files()
    elfs = [p for p in wanted if os.path.isfile(p) and not os.path.islink(p)]
    for p in elfs:
        check_elf(p, arch)
    libs = libraries(elfs)
    for p in libs:
        check_elf(os.path.realpath(p), arch)
    taken = Taken()
    for p in wanted + libs:
        taken.take(p)
    hosts = sorted({host for _, _, host in taken.entries.values()})
    owner = owners(hosts)
    versions = {pkg: package_version(pkg) for pkg in sorted(set(owner.values()))}
    members, manifest = [], []
    for image, (kind, value, host) in sorted(taken.entries.items()):
        members.append((image, kind, value))
        entry = {"path": image, "from": host, "package": owner[host], "version": versions[owner[host]]}
        if kind == "link":
            entry["link"] = value
        else:
            entry["sha256"] = file_sha256(value)
        manifest.append(entry)
    for name, nft in sorted(ALTERNATIVES.items()):
        members.append(("usr/sbin/" + name, "link", nft))
        group = name.split("-")[0]  # the alternative's master: iptables or ip6tables
        manifest.append({"path": "usr/sbin/" + name, "link": nft,
                         "from": "update-alternatives --set %s /usr/sbin/%s-nft" % (group, group)})
    for top in MERGED:
        used = any(m[0].startswith("usr/%s/" % top) for m in members)
        if used and os.path.islink("/" + top) and os.readlink("/" + top) == "usr/" + top:
            members.append((top, "link", "usr/" + top))
            manifest.append({"path": top, "link": "usr/" + top, "from": "Debian 12's merged /usr"})
    return members, manifest
