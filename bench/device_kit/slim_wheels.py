"""Repack ROS wheels for run time only, so they fit one device call (64 MiB with the tree).

Drops the C/C++ headers (``*.data/data/include/``) and the non-SONAME copies of libfastdds and
libfastcdr (wheels cannot hold symlinks, so each shared library is stored up to three times;
every ELF file in the set needs only ``libfastdds.so.3.2`` and ``libfastcdr.so.2``). RECORD is
rewritten to match; every other file is byte-identical.

    python3 bench/device_kit/slim_wheels.py SRC_DIR DST_DIR
"""

from __future__ import annotations

import pathlib
import re
import sys
import zipfile

DROP_EXACT = re.compile(r"\.data/data/(lib/libfastdds\.so|lib/libfastdds\.so\.3\.2\.2|lib/libfastcdr\.so"
                        r"|lib/libfastcdr\.so\.2\.3\.3|bin/fast-discovery-server-1\.0\.1)$")
DROP_PREFIX = re.compile(r"^[^/]+\.data/data/include/")


def slim(whl: pathlib.Path, out: pathlib.Path) -> int:
    """Write ``whl`` without the dropped files to ``out``; returns how many were dropped."""
    dropped: set[str] = set()
    with zipfile.ZipFile(whl) as zin, \
            zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        record = next(n for n in zin.namelist() if n.endswith(".dist-info/RECORD"))
        for info in zin.infolist():
            name = info.filename
            if DROP_PREFIX.search(name) or DROP_EXACT.search(name):
                dropped.add(name)
            elif name != record:
                zout.writestr(info, zin.read(name), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        rows = [row for row in zin.read(record).decode().splitlines()
                if row and row.rsplit(",", 2)[0] not in dropped]
        zout.writestr(zin.getinfo(record), ("\n".join(rows) + "\n").encode(),
                      compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    return len(dropped)


def main(src: str, dst: str) -> None:
    """Repack every wheel of ``src`` into ``dst``."""
    for whl in sorted(pathlib.Path(src).glob("*.whl")):
        out = pathlib.Path(dst) / whl.name
        n = slim(whl, out)
        print(f"{whl.name}: dropped {n} files, {whl.stat().st_size} -> {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
