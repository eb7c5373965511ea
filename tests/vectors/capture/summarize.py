#!/usr/bin/env python3
"""Summarize captured 9P vector files (stdlib only; independent of vshare).

    summarize.py FILE.json [...]          message-type table per file
    summarize.py --dump FILE.json         one line per frame (type, tag, short decode)
    summarize.py --check FILE.json [...]  structural checks; non-zero exit on a problem

Checks: every frame's size[4] equals its length; every R-message answers an
outstanding T with the same tag and type T+1 (or Rlerror); c2s carries only
T types, s2c only R types.
"""

import json
import struct
import sys

NAMES = {
    6: "Tlerror",
    7: "Rlerror",
    8: "Tstatfs",
    9: "Rstatfs",
    12: "Tlopen",
    13: "Rlopen",
    14: "Tlcreate",
    15: "Rlcreate",
    16: "Tsymlink",
    17: "Rsymlink",
    18: "Tmknod",
    19: "Rmknod",
    20: "Trename",
    21: "Rrename",
    22: "Treadlink",
    23: "Rreadlink",
    24: "Tgetattr",
    25: "Rgetattr",
    26: "Tsetattr",
    27: "Rsetattr",
    30: "Txattrwalk",
    31: "Rxattrwalk",
    32: "Txattrcreate",
    33: "Rxattrcreate",
    40: "Treaddir",
    41: "Rreaddir",
    50: "Tfsync",
    51: "Rfsync",
    52: "Tlock",
    53: "Rlock",
    54: "Tgetlock",
    55: "Rgetlock",
    70: "Tlink",
    71: "Rlink",
    72: "Tmkdir",
    73: "Rmkdir",
    74: "Trenameat",
    75: "Rrenameat",
    76: "Tunlinkat",
    77: "Runlinkat",
    100: "Tversion",
    101: "Rversion",
    102: "Tauth",
    103: "Rauth",
    104: "Tattach",
    105: "Rattach",
    106: "Terror",
    107: "Rerror",
    108: "Tflush",
    109: "Rflush",
    110: "Twalk",
    111: "Rwalk",
    112: "Topen",
    113: "Ropen",
    114: "Tcreate",
    115: "Rcreate",
    116: "Tread",
    117: "Rread",
    118: "Twrite",
    119: "Rwrite",
    120: "Tclunk",
    121: "Rclunk",
    122: "Tremove",
    123: "Rremove",
    124: "Tstat",
    125: "Rstat",
    126: "Twstat",
    127: "Rwstat",
}


def frames(path):
    with open(path) as f:
        doc = json.load(f)
    for fr in doc["frames"]:
        yield fr["dir"], bytes.fromhex(fr["hex"])


def _s(b, o):
    (n,) = struct.unpack_from("<H", b, o)
    return b[o + 2 : o + 2 + n].decode("utf-8", "replace"), o + 2 + n


def short(b):
    """A deliberately small decode of a few fields, for eyeballing dumps."""
    t = b[4]
    p = 7
    try:
        if t in (100, 101):
            (msize,) = struct.unpack_from("<I", b, p)
            return f"msize={msize} version={_s(b, p + 4)[0]!r}"
        if t == 104:
            fid, afid = struct.unpack_from("<II", b, p)
            uname, o = _s(b, p + 8)
            aname, o = _s(b, o)
            (nuname,) = struct.unpack_from("<I", b, o)
            return f"fid={fid} afid={afid:#x} uname={uname!r} aname={aname!r} n_uname={nuname}"
        if t == 110:
            fid, newfid, nw = struct.unpack_from("<IIH", b, p)
            o, names = p + 10, []
            for _ in range(nw):
                n, o = _s(b, o)
                names.append(n)
            return f"fid={fid} newfid={newfid} wnames={names}"
        if t == 7:
            return f"ecode={struct.unpack_from('<I', b, p)[0]}"
        if t in (120, 8, 50):
            return f"fid={struct.unpack_from('<I', b, p)[0]}"
        if t == 24:
            fid, mask = struct.unpack_from("<IQ", b, p)
            return f"fid={fid} mask={mask:#x}"
        if t == 12:
            fid, flags = struct.unpack_from("<II", b, p)
            return f"fid={fid} flags={flags:#o}"
        if t in (116, 40):
            fid, off, cnt = struct.unpack_from("<IQI", b, p)
            return f"fid={fid} offset={off} count={cnt}"
        if t == 118:
            fid, off, cnt = struct.unpack_from("<IQI", b, p)
            return f"fid={fid} offset={off} count={cnt} data={b[p + 16 : p + 16 + min(cnt, 24)]!r}"
        if t in (117, 41):
            (cnt,) = struct.unpack_from("<I", b, p)
            return f"count={cnt}"
        if t == 30:
            fid, newfid = struct.unpack_from("<II", b, p)
            return f"fid={fid} newfid={newfid} name={_s(b, p + 8)[0]!r}"
        if t == 70:
            dfid, fid = struct.unpack_from("<II", b, p)
            return f"dfid={dfid} fid={fid} name={_s(b, p + 8)[0]!r}"
        if t == 74:
            (ofid,) = struct.unpack_from("<I", b, p)
            old, o = _s(b, p + 4)
            (nfid,) = struct.unpack_from("<I", b, o)
            return f"olddirfid={ofid} oldname={old!r} newdirfid={nfid} newname={_s(b, o + 4)[0]!r}"
        if t == 20:
            fid, dfid = struct.unpack_from("<II", b, p)
            return f"fid={fid} dfid={dfid} name={_s(b, p + 8)[0]!r}"
        if t == 108:
            return f"oldtag={struct.unpack_from('<H', b, p)[0]}"
        if t in (52, 54):
            fid, typ = struct.unpack_from("<IB", b, p)
            return f"fid={fid} type={typ}"
        if t in (14, 72, 16, 18, 32):
            (fid,) = struct.unpack_from("<I", b, p)
            name, _ = _s(b, p + 4)
            return f"fid={fid} name={name!r}"
        if t == 76:
            (fid,) = struct.unpack_from("<I", b, p)
            name, _ = _s(b, p + 4)
            return f"fid={fid} name={name!r}"
        if t == 26:
            fid, valid = struct.unpack_from("<II", b, p)
            return f"fid={fid} valid={valid:#x}"
    except (struct.error, IndexError):
        return "(short decode failed)"
    return ""


def check(path):
    problems, outstanding = [], {}
    for i, (d, b) in enumerate(frames(path)):
        size, t, tag = struct.unpack_from("<IBH", b, 0)
        if size != len(b):
            problems.append(f"#{i}: size {size} != len {len(b)}")
        if (d == "c2s") != (t % 2 == 0):
            problems.append(f"#{i}: type {t} in direction {d}")
        if d == "c2s":
            if tag in outstanding:
                problems.append(f"#{i}: tag {tag} reused while outstanding")
            outstanding[tag] = t
        else:
            req = outstanding.pop(tag, None)
            if req is None:
                problems.append(f"#{i}: reply tag {tag} with no request")
            elif t not in (req + 1, 7):
                problems.append(f"#{i}: reply type {t} to request {req}")
    if outstanding:
        problems.append(f"unanswered requests: {outstanding}")
    return problems


def main(argv):
    if argv and argv[0] == "--dump":
        for d, b in frames(argv[1]):
            size, t, tag = struct.unpack_from("<IBH", b, 0)
            print(f"{d} {NAMES.get(t, t):>13} tag={tag:<5} size={size:<6} {short(b)}")
        return 0
    if argv and argv[0] == "--check":
        rc = 0
        for p in argv[1:]:
            probs = check(p)
            print(f"{p}: {'ok' if not probs else 'PROBLEMS'}")
            for x in probs:
                print("   ", x)
            rc |= bool(probs)
        return rc
    for p in argv:
        counts = {}
        for _d, b in frames(p):
            counts[b[4]] = counts.get(b[4], 0) + 1
        print(p)
        for t in sorted(counts):
            print(f"  {t:3} {NAMES.get(t, '?'):>13} x{counts[t]}")
    return 0


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main(sys.argv[1:]))
