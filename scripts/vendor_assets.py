"""Fetch the dashboard's browser libraries from the npm registry into static/vendor/.

    .venv/bin/python scripts/vendor_assets.py        # (make vendor)

Each tarball is checked against the `integrity` (sha512) the registry publishes for that exact
version before one file is taken out of it; static/vendor/SHA256SUMS then records the file's own
sha256, which a test compares with the committed files. The files are committed, so nothing is
downloaded at build, test or run time: this script only runs to change a version.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

REGISTRY = "https://registry.npmjs.org"
VENDOR = Path(__file__).resolve().parents[1] / "static" / "vendor"
# (package, version, file in its tarball, name under static/vendor). htmx stays on 2.0.x:
# htmx.org 4 changes the request headers flask-htmx reads.
ASSETS = (
    ("htmx.org", "2.0.11", "package/dist/htmx.min.js", "htmx.min.js"),
    ("echarts", "6.1.0", "package/dist/echarts.min.js", "echarts.min.js"),
)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 — fixed https URLs
        return response.read()


def vendor(package: str, version: str, member: str, name: str) -> str:
    meta = json.loads(fetch(f"{REGISTRY}/{package}/{version}"))
    algorithm, _, expected = meta["dist"]["integrity"].partition("-")
    if algorithm != "sha512":
        raise SystemExit(f"{package}@{version}: unexpected integrity {algorithm}")
    tarball = fetch(meta["dist"]["tarball"])
    if base64.b64encode(hashlib.sha512(tarball).digest()).decode() != expected:
        raise SystemExit(f"{package}@{version}: the tarball does not match its integrity")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        data = archive.extractfile(member).read()
    (VENDOR / name).write_bytes(data)
    return f"{hashlib.sha256(data).hexdigest()}  {name}  {package}@{version}\n"


def main() -> None:
    VENDOR.mkdir(parents=True, exist_ok=True)
    sums = "".join(vendor(*asset) for asset in ASSETS)
    (VENDOR / "SHA256SUMS").write_text(sums)
    sys.stdout.write(sums)


if __name__ == "__main__":
    main()
