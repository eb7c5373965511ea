#!/usr/bin/env python3
# ruff: noqa: E501  (long human-readable fact strings)
"""Turn the relay's raw frame logs into the vector files (stdlib only).

    assemble.py statdump DIR > FILE.json      stat of every entry under DIR (lstat)
    assemble.py --raw RAWDIR --out VECDIR --work W --what all|diod|kernel

Each vector file is {"client", "server", "how", "captured", "facts",
"message_types", "frames"}.  "facts" describes the workload (mirror of
capture.sh / guest-workload.sh: keep them in step) plus the lstat of the
prepared export taken just before the capture ("export_stat"), so a test can
check qid.path (diod uses st_ino), sizes, modes and times it decodes.
"""

import argparse
import datetime
import json
import os
import re
import stat
import subprocess
import sys

T0 = 1704164645  # 2024-01-02T03:04:05Z, atime+mtime of every prepared entry
T_TOUCH = 1683356889  # 2023-05-06T07:08:09Z, guest: touch -d '2023-05-06 07:08:09'


def statdump(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames) + ([] if dirpath != root else ["."]):
            p = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.relpath(p, root))
            st = os.lstat(p)
            ent = {
                "ino": st.st_ino,
                "mode": st.st_mode,
                "mode_octal": oct(st.st_mode),
                "nlink": st.st_nlink,
                "uid": st.st_uid,
                "gid": st.st_gid,
                "size": st.st_size,
                "blksize": st.st_blksize,
                "blocks": st.st_blocks,
                "atime": st.st_atime_ns,
                "mtime": st.st_mtime_ns,
                "ctime": st.st_ctime_ns,
            }
            if stat.S_ISLNK(st.st_mode):
                ent["target"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode) and st.st_size <= 256:
                with open(p, "rb") as f:
                    ent["content"] = f.read().decode("latin-1")
            out[rel] = ent
    parent = os.lstat(os.path.dirname(os.path.abspath(root)))
    out[".."] = {"ino": parent.st_ino, "note": "the export's parent directory (outside the export)"}
    return out


def dpkg_version(pkg):
    try:
        return subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def read_json(path):
    with open(path) as f:
        return json.load(f)


def load_frames(path):
    with open(path) as f:
        doc = json.load(f)
    if doc.get("error") or any(doc.get("trailing", {}).values()):
        sys.exit(f"{path}: relay error {doc.get('error')}, trailing {doc.get('trailing')}")
    return doc["frames"]


def types_of(frames):
    return sorted({bytes.fromhex(f["hex"][8:10])[0] for f in frames})


def write(out, name, meta, frames):
    doc = dict(meta)
    doc["message_types"] = types_of(frames)
    doc["frames"] = frames
    path = os.path.join(out, name)
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(
        f"wrote {path}: {len(frames)} frames, {os.path.getsize(path)} bytes, "
        f"types {doc['message_types']}"
    )


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "statdump":
        json.dump(statdump(sys.argv[2]), sys.stdout, indent=1)
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--what", default="all")
    a = ap.parse_args()
    W = a.work
    diod_v = dpkg_version("diod")
    captured = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    server = f"diod {diod_v.split('-')[0]}"
    common_facts = {
        "msize": 65536,
        "version": "9P2000.L",
        "T0_epoch": T0,
        "T0": "2024-01-02T03:04:05Z",
    }

    if a.what in ("all", "diod"):
        E = os.path.join(W, "export-d")
        st = read_json(os.path.join(W, "export-d.stat.json"))
        facts = dict(
            common_facts,
            aname=E,
            uid=0,
            n_uname=0,
            uname="",
            files={"hello.txt": "hello world\n", "sub/a.txt": "abc"},
            dirs=["sub", "emptydir"],
            symlink={"name": "link", "target": "hello.txt"},
            modes={
                "hello.txt": 0o100644,
                "sub/a.txt": 0o100644,
                "sub": 0o40755,
                "emptydir": 0o40755,
                "link": 0o120777,
                ".": 0o40755,
            },
            mtime_all=T0,
            export_stat=st,
        )
        how_srv = (
            f"diod -f -n -l 127.0.0.1:PORT -e {E} -c /dev/null -L LOG, run as root (no "
            "squash options needed); the client connected to tests/vectors/capture/relay.py "
            "on 127.0.0.1, which forwarded to diod and logged whole frames."
        )
        write(
            a.out,
            "diodls.json",
            {
                "client": f"diodls (diod {diod_v})",
                "server": server,
                "captured": captured,
                "how": f"diodls -s 127.0.0.1:RELAYPORT -a {E} -l / (msize 65536, euid 0). "
                + how_srv,
                "facts": dict(
                    facts,
                    listing_order_note="diodls prints entries in Treaddir order, "
                    "which is the host ext4 hash order",
                    notes=[
                        "diodls sends Tauth first; diod -n answers Rlerror ENOENT (2)",
                        "Treaddir offsets are ext4 hash cookies; the last entry's offset is "
                        "0x7fffffffffffffff",
                        "the root's '..' entry is the export's PARENT directory: diod 1.0.24 "
                        "lets Twalk '..' leave the export (qid.path = export_stat['..'].ino)",
                    ],
                ),
            },
            load_frames(os.path.join(a.raw, "diodls.json")),
        )
        write(
            a.out,
            "diodcat.json",
            {
                "client": f"diodcat (diod {diod_v})",
                "server": server,
                "captured": captured,
                "how": f"diodcat -s 127.0.0.1:RELAYPORT -a {E} hello.txt (msize 65536, euid 0). "
                + how_srv,
                "facts": dict(facts, read="hello.txt", output="hello world\n"),
            },
            load_frames(os.path.join(a.raw, "diodcat.json")),
        )

    if a.what in ("all", "kernel"):
        E = os.path.join(W, "export-k")
        st = read_json(os.path.join(W, "export-k.stat.json"))
        with open(os.path.join(W, "guest.log"), errors="replace") as f:
            log = f.read()
        m = re.search(r"GUEST-KERNEL (\S+) (.*)", log)
        kver = m.group(1) if m else "?"
        kbuild = re.search(r"Debian (\S+) \(", m.group(2)).group(1) if m else "?"
        client = f"linux {kver} v9fs (Debian {kbuild}), trans=tcp"
        qemu_v = dpkg_version("qemu-system-x86")
        opts = f"trans=tcp,port=564,version=9p2000.L,msize=65536,aname={E},cache=none"
        how = (
            "Linux kernel 9P client in a QEMU " + qemu_v + " TCG guest (PVH-booted vmlinux, "
            "busybox-static initramfs, tests/vectors/capture/guest-workload.sh as /probe.sh) "
            f"mounting 10.0.2.100:564 with -o {opts}; 10.0.2.100:564 is a QEMU guestfwd on a "
            "restrict=on user network running `socat STDIO TCP:127.0.0.1:RELAYPORT`; "
            "tests/vectors/capture/relay.py forwards to diod -f -n -l 127.0.0.1:PORT "
            f"-e {E} -c /dev/null (as root) and logs whole frames. Each guest phase is its own "
            "mount, hence its own TCP connection and vector file. Guest commands run as root "
            "(uid 0) unless noted; TZ unset (UTC). "
        )
        prepared = {
            "files": {
                "hello.txt": "hello world\n",
                "x.txt": "xattr and locks\n",
                "fl/flushme": "x",
                **{f"many/f{i:02d}": f"{i:02d}\n" for i in range(20)},
            },
            "dirs": ["many", "fl"],
            "symlink": {"name": "link", "target": "hello.txt"},
            "modes": {"files": 0o100644, "dirs": 0o40755, "link": 0o120777},
            "mtime_all": T0,
        }
        base = dict(
            common_facts,
            aname=E,
            mount_options=opts,
            kernel=kver,
            export_prepared=prepared,
            export_stat=st,
            notes=[
                "every mount attaches twice: fid 0 as uname 'nobody' n_uname 0xffffffff "
                "(the mount's own root fid; /proc/mounts shows the default access=client),"
                " then fid 1 as uname '' n_uname 0 at root's first access; any other uid "
                "gets its own Tattach (uname '', n_uname = uid)",
                "diod's Rgetattr always has valid = 0x7ff (P9_STATS_BASIC) whatever the "
                "request mask (the kernel asks 0x7ff, 0x17ff or 0x3fff); btime, gen and "
                "data_version are 0",
                "qid.version is always 0 and qid.path is the host st_ino; qid.type "
                "0x80 dir, 0x02 symlink, 0x00 file",
                "Tsetattr leaves unused fields as uid/gid 0xffffffff and 0 elsewhere",
                "with one request at a time the kernel reuses tag 0 (Tversion uses NOTAG "
                "0xffff; Tflush got tag 1); only the 'parallel' phase has several tags",
                "Tlopen/Tlcreate flags are P9_DOTL_* flags, numerically the x86-64 Linux "
                "open(2) values (e.g. O_LARGEFILE 0o100000 is set; O_TRUNC was not passed "
                "on Tlcreate)",
            ],
        )
        phases = [
            (
                "linux-v9fs-ops.json",
                "linux.json",
                "ops",
                {
                    "steps": [
                        "df /mnt  -> Tstatfs",
                        "ls -la /mnt",
                        "cat /mnt/hello.txt  -> 'hello world\\n'",
                        "stat /mnt/missing  -> Twalk answered by Rlerror ENOENT (2)",
                        "readlink /mnt/link  -> 'hello.txt'",
                        "mkdir -m 0750 /mnt/d  -> Tmkdir mode 0o40755 (S_IFDIR set, umask 022 "
                        "applied by busybox), then Tsetattr valid 0x41 mode 0o40750",
                        "echo 'new file' > /mnt/d/new.txt  -> Tlcreate flags 0o100101 mode 0o100644 "
                        "gid 0, Twrite 'new file\\n' (preceded by Txattrwalk security.capability -> "
                        "Rlerror ENODATA 61)",
                        "ln -s new.txt /mnt/d/sym  -> Tsymlink",
                        "ln /mnt/d/new.txt /mnt/d/hard  -> Tlink",
                        "mv /mnt/d/hard /mnt/d/hard2  -> Trenameat (Rlerror EOPNOTSUPP 95) then "
                        "Trename",
                        "mv /mnt/d/hard2 /mnt/moved  -> Trenameat (Rlerror 95) then Trename",
                        "chmod 0600 /mnt/d/new.txt  -> Tsetattr valid 0x41 (MODE|CTIME) mode 0o100600",
                        "truncate -s 3 /mnt/d/new.txt  -> Tsetattr valid 0x68 (SIZE|MTIME|CTIME) "
                        "size 3",
                        "touch -d '2023-05-06 07:08:09' /mnt/d/new.txt  -> Tsetattr valid 0x1f0 "
                        "(ATIME|MTIME|CTIME|ATIME_SET|MTIME_SET) atime = mtime = 1683356889.0",
                        "mkfifo -m 0640 /mnt/d/fifo  -> Tmknod S_IFIFO",
                        "mknod -m 0600 /mnt/d/null c 1 3  -> Tmknod S_IFCHR major 1 minor 3",
                        "ls -la /mnt/d",
                        "cat /mnt/d/new.txt  -> 'new'",
                        "uid 65534: cat /mnt/hello.txt  -> third Tattach uname '' n_uname 65534",
                        "rm fifo null sym /mnt/moved new.txt  -> each Tunlinkat flags 0 (Rlerror 95) "
                        "then Twalk to the entry + Tremove of that fid",
                        "rmdir /mnt/d  -> Tunlinkat flags 0x200 AT_REMOVEDIR (Rlerror 95) then Tremove",
                        "umount  -> Tclunk of every fid",
                    ],
                    "created": {
                        "dir": {"name": "d", "mode": 0o40750},
                        "file": {
                            "name": "d/new.txt",
                            "content_written": "new file\n",
                            "final_mode": 0o100600,
                            "final_size": 3,
                            "final_mtime": T_TOUCH,
                            "final_content": "new",
                        },
                        "symlink": {"name": "d/sym", "target": "new.txt"},
                        "hardlink": {"name": "d/hard", "renamed_to": ["d/hard2", "moved"]},
                        "fifo": {"name": "d/fifo", "mode": 0o10640},
                        "chardev": {"name": "d/null", "mode": 0o20600, "major": 1, "minor": 3},
                    },
                    "errors": {
                        "missing": 2,
                        "Trenameat": 95,
                        "Tunlinkat": 95,
                        "Txattrwalk security.capability (before a write)": 61,
                    },
                    "uids": [0, 65534],
                },
            ),
            (
                "linux-v9fs-readdir.json",
                "linux.2.json",
                "readdir",
                {
                    "steps": [
                        "ls -la /mnt/many (20 regular files f00..f19, content 'NN\\n', "
                        "size 3, mode 0644)"
                    ],
                    "entries": [f"f{i:02d}" for i in range(20)] + [".", ".."],
                },
            ),
            (
                "linux-v9fs-xattr-lock.json",
                "linux.3.json",
                "xattr-lock",
                {
                    "steps": [
                        "setxattr x.txt user.color=blue  -> Twalk, Txattrcreate(size 4, flags 0), "
                        "Twrite 'blue', Tclunk",
                        "getxattr x.txt user.color  -> Txattrwalk (size 4), Tread -> 'blue'",
                        "listxattr x.txt  -> Txattrwalk name '' (size 11), Tread -> 'user.color\\0'",
                        "getxattr x.txt user.missing  -> Rlerror ENODATA (61)",
                        "removexattr x.txt user.color  -> Txattrcreate size 0 (then Tclunk)",
                        "listxattr x.txt  -> Txattrwalk name '', size 0",
                        "vtool locks: open O_RDWR; each step below is preceded by stat() of an "
                        "absent '.mark-STEP' (a Twalk answered by Rlerror ENOENT) to delimit it",
                        ".mark-setlk: fcntl F_SETLK F_WRLCK 0+10  -> Tlock type 1 flags 0 start 0 "
                        "length 10 -> Rlock status 0",
                        ".mark-getlk: fcntl F_GETLK F_WRLCK 20+10  -> Tgetlock type 2 (!) start 20 "
                        "length 10: Linux 6.1 always sends UNLCK here and diod answers Rlerror EINVAL",
                        ".mark-unlk: fcntl F_SETLK F_UNLCK 0+10  -> Tlock type 2 flags 0 start 0 "
                        "length 10",
                        ".mark-flockex: flock LOCK_EX  -> Tlock type 1 flags 1 (BLOCK) start 0 "
                        "length 0",
                        ".mark-flockun: flock LOCK_UN  -> Tlock type 2 flags 1 start 0 length 0",
                        ".mark-close / .mark-end: close(fd)  -> Tclunk only (no lock left)",
                        "append 'more', fsync, fdatasync  -> Twrite at offset 16, Tfsync x2",
                        "cat x.txt  -> 'xattr and locks\\nmore'",
                    ],
                    "xattr": {"name": "user.color", "value": "blue"},
                    "lock": {
                        "client_id": "(none)",
                        "proc_id_note": "guest pid of vtool",
                        "types": {"RDLCK": 0, "WRLCK": 1, "UNLCK": 2},
                    },
                    "fsync": "Tfsync datasync 0 (fsync) then datasync 1 (fdatasync)",
                    "removexattr": "Txattrcreate attr_size 0 flags 2 (XATTR_REPLACE), then Tclunk",
                    "errors": {"getxattr user.missing": 61, "Tgetlock": 22},
                },
            ),
            (
                "linux-v9fs-bigio.json",
                "linux.4.json",
                "bigio",
                {
                    "steps": [
                        "open(big.bin, O_WRONLY|O_CREAT, 0644); pwrite 65536 x 'A' at 0  -> Tlcreate, "
                        "Twrite count 65512 (frame size 65535) + Twrite count 24 at 65512",
                        "dd if=big.bin bs=65536 count=1  -> Tread 65512 (Rread frame 65523) + "
                        "Tread 24 at 65512",
                    ],
                    "file": {"name": "big.bin", "size": 65536, "byte": "A"},
                    "iounit_note": "diod's Rlopen/Rlcreate iounit is 0, so the kernel's chunk is "
                    "msize - 24 = 65512",
                },
            ),
            (
                "linux-v9fs-flush.json",
                "linux.5.json",
                "flush",
                {
                    "steps": [
                        "stat /mnt/fl/flushme in the background; the relay (--hold flushme:4) stops "
                        "forwarding server->client bytes for 4 s once it sees the Twalk naming "
                        "'flushme'; after 1 s the stat is SIGKILLed  -> Tflush oldtag 0 (tag 1)",
                        "diod answers the walk (Rwalk) and then Rflush; both reach the client late, "
                        "unchanged and in that order",
                        "stat -c '%n %s' /mnt/fl/flushme  -> '/mnt/fl/flushme 1'",
                    ],
                    "relay_hold": {"name": "flushme", "seconds": 4},
                },
            ),
            (
                "linux-v9fs-msize.json",
                "linux.6.json",
                "msize",
                {
                    "mount_options_this_phase": "msize=262144 (otherwise as above)",
                    "steps": [
                        "mount with msize=262144  -> Tversion msize 262144, diod answers "
                        "Rversion msize 65536 (its cap); /proc/mounts then shows msize=65536",
                        "cat /mnt/hello.txt  -> Tread count 65512 (= 65536 - 24)",
                    ],
                    "requested_msize": 262144,
                    "negotiated_msize": 65536,
                },
            ),
            (
                "linux-v9fs-parallel.json",
                "linux.8.json",
                "parallel",
                {
                    "steps": [
                        "8 background `cat /mnt/many/fNN` (NN = 00..07) started at once, then "
                        "wait  -> several requests outstanding with distinct tags; diod's "
                        "worker threads may answer out of order"
                    ],
                    "outputs": {f"many/f{i:02d}": f"{i:02d}\n" for i in range(8)},
                },
            ),
            (
                "linux-v9fs-version.json",
                "linux.7.json",
                "version",
                {
                    "version": "9P2000.u",
                    "mount_options_this_phase": "trans=tcp,port=564,version=9p2000.u,msize=65536,"
                    f"aname={E}",
                    "steps": [
                        "mount -o version=9p2000.u  -> Tversion '9P2000.u'; diod answers "
                        "Rlerror EIO (5) with tag NOTAG (not an Rversion 'unknown'); the "
                        "kernel's mount fails with EFAULT ('Bad address') and closes"
                    ],
                },
            ),
        ]
        for out_name, raw_name, phase, facts in phases:
            write(
                a.out,
                out_name,
                {
                    "client": client,
                    "server": server,
                    "captured": captured,
                    "how": how + f"This file: phase '{phase}'.",
                    "facts": dict(base, phase=phase, **facts),
                },
                load_frames(os.path.join(a.raw, raw_name)),
            )


if __name__ == "__main__":
    main()
