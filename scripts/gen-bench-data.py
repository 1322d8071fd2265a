#!/usr/bin/env python3
"""Generate a deterministic benchmark data set (see engine.md section 5).

Two sets, chosen with --set:

mixed (the default), at --scale 1.0 about 1 GiB in 20,004 files:
  - 20,000 files of 1-64 KiB spread over 20 x 10 nested directories
    (d00/s0 ... d19/s9, 100 files each); every third file is log-like text,
    the other two thirds are random bytes;
  - three 100 MiB files of random bytes (big-0.bin .. big-2.bin);
  - one 64 MiB log-like text file (app.log).

small, at --scale 1.0 about 450 MiB in 150,000 files:
  - 150,000 files of 100 bytes to 6,000 bytes spread over 60 x 50 nested
    directories (t00/u00 ... t59/u49, 50 files each); every third file is
    log-like text, the other two thirds are random bytes. This is the shape of
    a mail spool, a package cache or a source tree: the cost per file, not the
    cost per byte, decides.

--scale shrinks the number of files and the sizes of the big files
proportionally (the files keep their size range, the directory layout stays
the same). The same --set, --seed and --scale always give byte-identical output.

Random bytes come from random.Random(seed).randbytes (not cryptographic, but
incompressible and fast); log text comes from a cheap line template with
varying numbers, so it compresses well but does not deduplicate.

Usage: gen-bench-data.py DIR [--set mixed|small] [--seed 42] [--scale 1.0]
DIR must be missing or empty.
"""

import argparse
import os
import random
import sys
import time

KIB = 1024
MIB = 1024 * KIB

TOP_DIRS = 20
SUB_DIRS = 10
SMALL_FILES = 20_000
SMALL_MIN = 1 * KIB
SMALL_MAX = 64 * KIB
BIG_FILES = 3
BIG_SIZE = 100 * MIB
LOG_SIZE = 64 * MIB
CHUNK = 8 * MIB

TINY_TOP_DIRS = 60
TINY_SUB_DIRS = 50
TINY_FILES = 150_000
TINY_MIN = 100
TINY_MAX = 6_000

LEVELS = ("INFO", "INFO", "INFO", "INFO", "DEBUG", "DEBUG", "WARN", "ERROR")
COMPONENTS = ("api", "db", "cache", "auth", "scheduler", "worker", "http", "storage")
METHODS = ("GET", "GET", "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")
STATUSES = (200, 200, 200, 201, 204, 304, 404, 500)
PATHS = ("/api/v1/items", "/api/v1/users", "/api/v2/orders", "/healthz", "/metrics",
         "/api/v1/volumes", "/api/v1/backups", "/static/app.js")


class LogWriter:
    """Produces log-like text lines from one random stream, with a running clock."""

    def __init__(self, rng):
        self.rng = rng
        self.clock_ms = 1_714_560_000_000 % (86_400_000 * 28)  # some time within a month

    def lines(self, approx_bytes):
        """Returns about approx_bytes (at least that many) of log text as bytes."""
        rng = self.rng
        out = []
        total = 0
        clock = self.clock_ms
        while total < approx_bytes:
            r = rng.getrandbits(64)
            clock += r & 0x3FF  # 0-1023 ms between lines
            day, rest = divmod(clock, 86_400_000)
            hour, rest = divmod(rest, 3_600_000)
            minute, rest = divmod(rest, 60_000)
            sec, ms = divmod(rest, 1000)
            level = LEVELS[(r >> 10) & 7]
            comp = COMPONENTS[(r >> 13) & 7]
            kind = (r >> 16) & 3
            ts = f"2024-05-{day % 28 + 1:02d}T{hour:02d}:{minute:02d}:{sec:02d}.{ms:03d}Z"
            if kind == 0:
                line = (f"{ts} {level} [{comp}] request {(r >> 18) & 0xFFFFFFFF:08x} "
                        f"{METHODS[(r >> 50) & 7]} {PATHS[(r >> 53) & 7]}/{(r >> 18) & 0xFFFF} "
                        f"status={STATUSES[(r >> 56) & 7]} bytes={(r >> 34) & 0xFFFFF} "
                        f"duration={(r >> 40) & 0x3FF}ms\n")
            elif kind == 1:
                line = (f"{ts} {level} [{comp}] connection pool stats: active={(r >> 18) & 63} "
                        f"idle={(r >> 24) & 63} waiting={(r >> 30) & 15} "
                        f"max={64 + ((r >> 34) & 63)}\n")
            elif kind == 2:
                line = (f"{ts} {level} [{comp}] processed batch {(r >> 18) & 0xFFFFF} with "
                        f"{(r >> 38) & 0x3FFF} records in {(r >> 52) & 0xFFF}.{(r >> 30) & 0xFF:03d}s "
                        f"(retries={(r >> 62) & 3})\n")
            else:
                line = (f"{ts} {level} [{comp}] user {(r >> 18) & 0xFFFFF} session "
                        f"{(r >> 38) & 0xFFFFFF:06x} refreshed, expires in {(r >> 20) & 0xFFF}s\n")
            out.append(line)
            total += len(line)
        self.clock_ms = clock
        return "".join(out).encode("ascii")


def write_random(path, size, rng):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(rng.randbytes(n))
            left -= n


def write_log(path, size, log):
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(CHUNK, left)
            f.write(log.lines(n)[:n])
            left -= n


def write_files(leaves, count, smallest, largest, rng, log):
    """Writes COUNT files of SMALLEST to LARGEST bytes round-robin into LEAVES; every third
    is log text, the others random bytes. Returns their total size."""
    total = 0
    width = max(5, len(str(count - 1)))
    for i in range(count):
        leaf = leaves[i % len(leaves)]
        size = rng.randint(smallest, largest)
        if i % 3 == 2:
            data = log.lines(size)[:size]
            name = f"f{i:0{width}d}.log"
        else:
            data = rng.randbytes(size)
            name = f"f{i:0{width}d}.bin"
        with open(os.path.join(leaf, name), "wb") as f:
            f.write(data)
        total += size
    return total


def make_leaves(root, top, sub, top_name, sub_name):
    leaves = [os.path.join(root, f"{top_name}{t:02d}", f"{sub_name}{s:0{len(str(sub - 1))}d}")
              for t in range(top) for s in range(sub)]
    for leaf in leaves:
        os.makedirs(leaf)
    return leaves


def mixed(root, scale, rng, log):
    """The mixed set; returns (files, bytes)."""
    small_files = max(1, round(SMALL_FILES * scale))
    big_size = max(1, round(BIG_SIZE * scale))
    log_size = max(1, round(LOG_SIZE * scale))
    leaves = make_leaves(root, TOP_DIRS, SUB_DIRS, "d", "s")
    total = write_files(leaves, small_files, SMALL_MIN, SMALL_MAX, rng, log)
    for i in range(BIG_FILES):
        write_random(os.path.join(root, f"big-{i}.bin"), big_size, rng)
        total += big_size
    write_log(os.path.join(root, "app.log"), log_size, log)
    total += log_size
    return small_files + BIG_FILES + 1, total


def small(root, scale, rng, log):
    """The small-files set; returns (files, bytes)."""
    files = max(1, round(TINY_FILES * scale))
    leaves = make_leaves(root, TINY_TOP_DIRS, TINY_SUB_DIRS, "t", "u")
    return files, write_files(leaves, files, TINY_MIN, TINY_MAX, rng, log)


SETS = {"mixed": mixed, "small": small}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("dir", help="output directory (missing or empty)")
    parser.add_argument("--set", choices=sorted(SETS), default="mixed",
                        help="which data set (default mixed)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--scale", type=float, default=1.0,
                        help="shrink counts and sizes proportionally (e.g. 0.05)")
    args = parser.parse_args()
    if not 0 < args.scale <= 1000:
        parser.error("--scale must be > 0")

    if os.path.exists(args.dir) and os.listdir(args.dir):
        sys.exit(f"gen-bench-data: {args.dir} is not empty")
    os.makedirs(args.dir, exist_ok=True)

    started = time.monotonic()
    rng = random.Random(args.seed)
    log = LogWriter(random.Random(args.seed + 1))
    files, total = SETS[args.set](args.dir, args.scale, rng, log)
    print(f"gen-bench-data: {files} files, {total} bytes ({total / MIB:.1f} MiB) in {args.dir} "
          f"(set {args.set}, seed {args.seed}, scale {args.scale}) in "
          f"{time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    main()
