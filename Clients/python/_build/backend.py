"""A minimal in-tree PEP 517 build backend (standard library only).

Why: ``pip install ./Clients/python`` must work offline and on any Python >= 3.10, including
venvs that ship no setuptools (3.12+) or no ``wheel`` (which setuptools needs to build wheels
without build isolation). The SDK is pure Python with no dependencies, so a wheel is just a zip
of ``baton/`` plus metadata taken from ``pyproject.toml`` ([project]: name, version,
description, requires-python, readme).
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "baton"


def _project() -> dict[str, str]:
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        raw = f.read()
    try:
        import tomllib
        return {k: v for k, v in tomllib.loads(raw.decode()).get("project", {}).items() if isinstance(v, str)}
    except ImportError:  # Python 3.10: the few string keys we use, from the [project] table
        table = re.search(r"^\[project\]\n(.*?)(?=^\[|\Z)", raw.decode(), re.S | re.M)
        pairs = re.findall(r'^([\w-]+)\s*=\s*"([^"]*)"', table.group(1) if table else "", re.M)
        return dict(pairs)


def _names() -> tuple[dict[str, str], str, str]:
    p = _project()
    dist = re.sub(r"[-_.]+", "_", p["name"]).lower()
    return p, dist, f"{dist}-{p['version']}"


def _metadata() -> str:
    p, _, _ = _names()
    lines = ["Metadata-Version: 2.1", f"Name: {p['name']}", f"Version: {p['version']}",
             f"Summary: {p.get('description', '')}", f"Requires-Python: {p.get('requires-python', '>=3.10')}"]
    readme = p.get("readme")
    if readme:
        lines.append("Description-Content-Type: text/markdown")
        with open(os.path.join(ROOT, readme), encoding="utf-8") as f:
            return "\n".join(lines) + "\n\n" + f.read()
    return "\n".join(lines) + "\n"


def _package_files() -> list[str]:
    out = []
    for base, dirs, files in os.walk(os.path.join(ROOT, PACKAGE)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        out += [os.path.relpath(os.path.join(base, f), ROOT) for f in sorted(files)
                if f.endswith(".py") or f == "py.typed"]
    return sorted(out)


def _wheel(directory: str, editable: bool) -> str:
    _, dist, stem = _names()
    name = f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    entries: list[tuple[str, bytes]] = []
    if editable:  # PEP 660: a .pth file that puts the source tree on sys.path
        entries.append((f"__editable__.{dist}.pth", (ROOT + "\n").encode()))
    else:
        for rel in _package_files():
            with open(os.path.join(ROOT, rel), "rb") as f:
                entries.append((rel.replace(os.sep, "/"), f.read()))
    entries.append((f"{info}/METADATA", _metadata().encode()))
    entries.append((f"{info}/WHEEL", b"Wheel-Version: 1.0\nGenerator: baton-backend\n"
                    b"Root-Is-Purelib: true\nTag: py3-none-any\n"))
    record = io.StringIO()
    with zipfile.ZipFile(os.path.join(directory, name), "w", zipfile.ZIP_DEFLATED) as z:
        for path, data in entries:
            z.writestr(path, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.write(f"{path},sha256={digest},{len(data)}\n")
        record.write(f"{info}/RECORD,,\n")
        z.writestr(f"{info}/RECORD", record.getvalue())
    return name


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    return _wheel(wheel_directory, editable=False)


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):  # type: ignore[no-untyped-def]
    return _wheel(wheel_directory, editable=True)


def build_sdist(sdist_directory, config_settings=None):  # type: ignore[no-untyped-def]
    _, _, stem = _names()
    name = f"{stem}.tar.gz"
    files = ["pyproject.toml", "README.md", "_build/backend.py"] + _package_files()
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz") as t:
        for rel in files:
            t.add(os.path.join(ROOT, rel), arcname=f"{stem}/{rel}")
        pkg = _metadata().encode()
        member = tarfile.TarInfo(f"{stem}/PKG-INFO")
        member.size = len(pkg)
        t.addfile(member, io.BytesIO(pkg))
    return name
