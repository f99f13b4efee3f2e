"""PyInstaller hook for gevent, replacing the stock one (PyInstaller 6.22): its submodule filter
(`"gevent.testing" not in name or "gevent.tests" not in name`) is always true, so it lists
gevent's ~170 test modules as hidden imports, then excludes them, and warns for each."""

from PyInstaller.utils.hooks import collect_all, copy_metadata

excludedimports = ["gevent.testing", "gevent.tests"]

datas, binaries, hiddenimports = collect_all(
    "gevent",
    filter_submodules=lambda name: not name.startswith(("gevent.testing", "gevent.tests")),
    include_py_files=False,
    exclude_datas=["**/tests"],
)

datas += copy_metadata("gevent", recursive=True)
