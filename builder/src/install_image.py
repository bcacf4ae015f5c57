# kiln's image installer (the body of /var/lib/kiln/install-image; python 3.6+).
# argv: URL SHA256 SIZE ROOT KIND(gz|zst) TIMEOUT_SECONDS SCRIPT
#
# Nothing of the image is in place before all of it is downloaded, verified
# and unpacked; then it is moved into place in three steps (everything outside
# etc/systemd, then the unit files, then the links that enable units), so no
# unit is enabled before every file it runs is complete, and a kill at any
# point leaves either nothing enabled or the whole image. The download and the
# staging directory live in ROOT/var/lib/kiln (the target's filesystem) and are
# removed on every exit path the process survives, and at the start of the
# next run after one it does not (SIGKILL, power loss).
#
# Every path is resolved inside ROOT as chroot(ROOT) would: a link's absolute
# target starts again at ROOT and `..` stops at ROOT, so links a mounted disk
# image carries (/var/run -> /run, /bin -> usr/bin) lead where they lead on that
# machine, and nothing is ever written outside ROOT.
import errno
import hashlib
import http.client
import os
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import time
import urllib.request

URL, SHA256, SIZE, ROOT_ARG, KIND, TIMEOUT, SCRIPT = sys.argv[1:8]
SIZE = int(SIZE)


def log(msg):
    print("kiln-install: " + msg, flush=True)


class Fail(Exception):
    """A failure with its message for the journal."""


class Deadline(Exception):
    """The download's wall-clock bound passed."""


def on_signal(signum, _frame):
    raise Fail("stopped by signal %d" % signum)


def on_alarm(_signum, _frame):
    raise Deadline()


for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, on_signal)
signal.signal(signal.SIGALRM, on_alarm)

try:
    TIMEOUT = float(TIMEOUT)
    if not TIMEOUT > 0:
        raise ValueError
except ValueError:
    log("KILN_INSTALL_TIMEOUT=%s is not a number of seconds above 0 (the default is 900)" % TIMEOUT)
    sys.exit(2)

ROOT = os.path.realpath(ROOT_ARG)
if not os.path.isdir(ROOT):
    log("KILN_INSTALL_ROOT=%s is not a directory; nothing was installed" % ROOT_ARG)
    sys.exit(1)

MAXLINKS = 40  # the kernel's MAXSYMLINKS


def parts(path):
    return [c for c in path.split("/") if c not in ("", ".")]


def resolve(rel, follow_last=True):
    """The host path of ROOT/rel with every link resolved as chroot(ROOT) would."""
    todo = parts(rel)
    done = []
    links = 0
    while todo:
        c = todo.pop(0)
        if c == "..":
            if done:
                done.pop()
            continue
        p = os.path.join(ROOT, *(done + [c]))
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            done.append(c)
            continue
        if stat.S_ISLNK(st.st_mode) and (todo or follow_last):
            links += 1
            if links > MAXLINKS:
                raise Fail("/%s: more than %d links deep (a link loop?) under %s" % (rel, MAXLINKS, ROOT))
            target = os.readlink(p)
            if target.startswith("/"):
                done = []
            todo = parts(target) + todo
            continue
        done.append(c)
    return os.path.join(ROOT, *done)


def ensure_dir(rel, mode=0o755, owner=None):
    """ROOT/rel as a directory (created, parents too, where missing); its host path."""
    path = resolve(rel)
    comps = parts(os.path.relpath(path, ROOT)) if path != ROOT else []
    cur = ROOT
    for c in comps:
        cur = os.path.join(cur, c)
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            os.mkdir(cur, mode)
            os.chmod(cur, mode)
            if owner is not None and os.geteuid() == 0:
                os.lchown(cur, owner[0], owner[1])
            fsync_dir(os.path.dirname(cur))
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise Fail("/%s: %s is in the way (not a directory); move it and run again" % (rel, cur))
    return path


def remove(path):
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create(path, mode=0o600):
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode), "wb")


STATE = MARKER = DOWNLOAD = STAGE = ""


def installed():
    try:
        with open(MARKER) as f:
            return f.read().strip() == SHA256
    except OSError:
        return False


def download():
    """Downloads URL to DOWNLOAD within TIMEOUT seconds in all (retries included)."""
    end = time.monotonic() + TIMEOUT
    got = 0
    last = None
    for attempt in range(1, 6):
        left = end - time.monotonic()
        if left <= 0:
            break
        remove(DOWNLOAD)
        got = 0
        h = hashlib.sha256()
        signal.setitimer(signal.ITIMER_REAL, left)
        try:
            with urllib.request.urlopen(URL, timeout=min(30.0, left)) as r, create(DOWNLOAD) as out:
                while True:
                    chunk = r.read(1 << 16)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got > SIZE:
                        raise Fail("%s is longer than the %d bytes pinned; nothing was installed" % (URL, SIZE))
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if got != SIZE:
                raise OSError("the server sent %d of the %d bytes" % (got, SIZE))
            return h.hexdigest()
        except Deadline:
            break
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise
            last = e
        except (ValueError, http.client.HTTPException) as e:
            last = e
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        log("attempt %d: %s" % (attempt, last))
        remove(DOWNLOAD)
        pause = min(2 ** attempt, 20, end - time.monotonic())
        if pause > 0:
            time.sleep(pause)
    remove(DOWNLOAD)
    if time.monotonic() >= end:
        raise Fail(
            "could not download %s within %gs (got %d of %d bytes; KILN_INSTALL_TIMEOUT=%g bounds the whole download, "
            "retries included): serve it faster or rerun with KILN_INSTALL_TIMEOUT=SECONDS; nothing was installed"
            % (URL, TIMEOUT, got, SIZE, TIMEOUT)
        )
    raise Fail("could not download %s (%s); nothing was installed" % (URL, last))


def member_name(m):
    name = m.name
    while name.startswith("./"):
        name = name[2:]
    name = name.rstrip("/")
    if name.startswith("/") or ".." in name.split("/"):
        raise Fail("the image holds %r, a path that leaves its root; nothing was installed" % m.name)
    return name


def unpack():
    """Every member of the tarball, regular files' bytes written (fsync'd) under STAGE."""
    os.mkdir(STAGE, 0o700)
    proc = None
    if KIND == "zst":
        proc = subprocess.Popen(["zstd", "-dcq", "--", DOWNLOAD], stdout=subprocess.PIPE)
        tf = tarfile.open(fileobj=proc.stdout, mode="r|")
    else:
        tf = tarfile.open(DOWNLOAD, mode="r|gz")
    entries = []
    staged = {}
    with tf:
        for i, m in enumerate(tf):
            name = member_name(m)
            if not name:
                continue
            if m.isreg() or m.islnk():
                path = os.path.join(STAGE, str(i))
                with create(path) as out:
                    if m.isreg():
                        shutil.copyfileobj(tf.extractfile(m), out, 1 << 20)
                    else:
                        src = staged.get(member_name(tarfile.TarInfo(m.linkname)))
                        if src is None:
                            raise Fail("the image's hard link %s names %s, which it does not hold" % (name, m.linkname))
                        with open(src, "rb") as f:
                            shutil.copyfileobj(f, out, 1 << 20)
                    out.flush()
                    os.fchmod(out.fileno(), m.mode & 0o7777)
                    if os.geteuid() == 0:
                        os.fchown(out.fileno(), m.uid, m.gid)
                    os.fsync(out.fileno())
                os.utime(path, (m.mtime, m.mtime))
                staged[name] = path
                entries.append(("file", name, path, m))
            elif m.isdir():
                entries.append(("dir", name, None, m))
            elif m.issym():
                entries.append(("link", name, m.linkname, m))
            else:
                raise Fail("the image holds %s, which is neither a file, a directory nor a link; nothing was installed" % name)
    if proc is not None:
        proc.stdout.close()
        if proc.wait() != 0:
            raise Fail("zstd could not decompress the image; nothing was installed")
    fsync_dir(STAGE)
    return entries


def phase(entry):
    kind, name = entry[0], entry[1]
    if kind == "dir":
        return 0
    if not name.startswith("etc/systemd/"):
        return 1
    parent = os.path.basename(os.path.dirname(name))
    if kind == "link" and parent.endswith((".wants", ".requires", ".upholds")):
        return 3
    return 2


def place(entry, touched):
    kind, name, data, m = entry
    owner = (m.uid, m.gid)
    if kind == "dir":
        ensure_dir(name, m.mode & 0o7777, owner)
        return
    parent = ensure_dir(os.path.dirname(name))
    dest = os.path.join(parent, os.path.basename(name))
    if os.path.isdir(dest) and not os.path.islink(dest):
        raise Fail("/%s: a directory is where the image has a %s; move it and run again" % (name, kind))
    if kind == "link":
        tmp = os.path.join(parent, ".kiln-tmp-" + os.path.basename(name))
        remove(tmp)
        os.symlink(data, tmp)
        if os.geteuid() == 0:
            os.lchown(tmp, m.uid, m.gid)
        os.rename(tmp, dest)
    else:
        try:
            os.rename(data, dest)
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
            # Another filesystem (e.g. a separate /var): copy beside it, then rename.
            tmp = os.path.join(parent, ".kiln-tmp-" + os.path.basename(name))
            remove(tmp)
            with open(data, "rb") as f, create(tmp) as out:
                shutil.copyfileobj(f, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            shutil.copystat(data, tmp)
            if os.geteuid() == 0:
                os.lchown(tmp, m.uid, m.gid)
            os.rename(tmp, dest)
    touched.add(parent)


def write_marker():
    tmp = MARKER + ".tmp"
    remove(tmp)
    with create(tmp, 0o644) as out:
        out.write((SHA256 + "\n").encode())
        out.flush()
        os.fsync(out.fileno())
    os.rename(tmp, MARKER)
    fsync_dir(STATE)


def main():
    global STATE, MARKER, DOWNLOAD, STAGE
    STATE = ensure_dir("var/lib/kiln")
    MARKER = os.path.join(STATE, "image.sha256")
    DOWNLOAD = os.path.join(STATE, ".image.download")
    STAGE = os.path.join(STATE, ".install-staging")
    # Left by a run that was killed: start again from nothing.
    remove(DOWNLOAD)
    remove(STAGE)
    remove(MARKER + ".tmp")
    if installed():
        log("image %s is already installed" % SHA256)
        return
    step = "downloading"
    try:
        log("downloading %s (%d bytes)" % (URL, SIZE))
        actual = download()
        if actual != SHA256:
            raise Fail(
                "REFUSED %s: its sha256 is %s, not the %s this user-data was written for; nothing was installed"
                % (URL, actual, SHA256)
            )
        log("sha256 %s verified; unpacking into %s" % (SHA256, STAGE))
        step = "unpacking"
        entries = unpack()
        step = "installing"
        log("moving %d entries into place under %s (units and their links last)" % (len(entries), ROOT))
        for p in range(4):
            touched = set()
            for e in entries:
                if phase(e) == p:
                    place(e, touched)
            for d in sorted(touched):
                fsync_dir(d)
        write_marker()
        log("installed image %s into %s" % (SHA256, ROOT))
    except OSError as e:
        if step == "installing":
            what = "installing failed part-way (%s); no unit is enabled before every file is in place; run %s again" % (
                e,
                SCRIPT,
            )
        elif e.errno == errno.ENOSPC:
            what = "no space left while %s (the download needs %d bytes under %s, and as much again or more unpacked); free space and run again; nothing was installed" % (
                step,
                SIZE,
                STATE,
            )
        else:
            what = "%s failed: %s; nothing was installed" % (step, e)
        raise Fail(what)
    except tarfile.TarError as e:
        raise Fail("the verified image is not a readable tarball (%s); nothing was installed" % e)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        remove(DOWNLOAD)
        remove(STAGE)


try:
    main()
except Fail as e:
    log(str(e))
    sys.exit(1)
except OSError as e:
    log("%s; nothing was installed" % e)
    sys.exit(1)
