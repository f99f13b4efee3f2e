"""The README documents every setting (name, default) and shows the two first commands."""

import re
from pathlib import Path

from app.config import SETTINGS

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def _settings_rows() -> dict[str, str]:
    rows = {}
    for line in README.splitlines():
        match = re.match(r"\|\s*`([A-Z0-9_]+)`\s*\|\s*([^|]*)\|", line)
        if match:
            rows[match.group(1)] = match.group(2).strip()
    return rows


def test_every_setting_is_documented_with_its_default():
    rows = _settings_rows()
    for setting in SETTINGS:
        assert setting.name in rows, f"{setting.name} is missing from the README settings table"
        shown = rows[setting.name].strip("`")
        assert shown == setting.default or (setting.default == "" and shown in ("", "unset")), (
            f"README shows default {rows[setting.name]!r} for {setting.name}, "
            f"code has {setting.default!r}")


def test_readme_starts_with_make_run_and_make_test():
    commands = re.findall(r"^\s*(make \w+)", README, flags=re.M)
    assert commands[:2] == ["make run", "make test"]
