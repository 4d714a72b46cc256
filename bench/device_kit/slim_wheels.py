"""Repack ROS wheels for run time only: drop C/C++ headers (data/include) and the
non-SONAME copies of libfastdds/libfastcdr (wheels cannot hold symlinks, so each
shared library is stored up to three times). RECORD is rewritten to match."""
import sys, zipfile, pathlib, re
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
DROP_EXACT = re.compile(r"\.data/data/(lib/libfastdds\.so|lib/libfastdds\.so\.3\.2\.2|lib/libfastcdr\.so|lib/libfastcdr\.so\.2\.3\.3|bin/fast-discovery-server-1\.0\.1)$")
DROP_PREFIX = re.compile(r"^[^/]+\.data/data/include/")
log = []
for whl in sorted(src.glob("*.whl")):
    zin = zipfile.ZipFile(whl)
    out = dst / whl.name
    dropped = set()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zout:
        names = zin.namelist()
        for info in zin.infolist():
            n = info.filename
            if DROP_PREFIX.search(n) or DROP_EXACT.search(n):
                dropped.add(n); continue
            if n.endswith(".dist-info/RECORD"):
                continue
            zout.writestr(info, zin.read(n), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
        rec = [n for n in names if n.endswith(".dist-info/RECORD")][0]
        lines = zin.read(rec).decode().splitlines()
        kept = [l for l in lines if l and l.rsplit(",", 2)[0] not in dropped]
        info = zin.getinfo(rec)
        zout.writestr(info, ("\n".join(kept) + "\n").encode(), compress_type=zipfile.ZIP_DEFLATED, compresslevel=9)
    assert len(lines) - len([l for l in lines if l]) + len(kept) + len(dropped) >= len([l for l in lines if l]), whl
    log.append(f"{whl.name}: dropped {len(dropped)} files, {whl.stat().st_size} -> {out.stat().st_size} bytes")
print("\n".join(log))
