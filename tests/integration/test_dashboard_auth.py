"""Who gets into the dashboard (SPEC §7.1), over a real socket: loopback-only without logins,
the login page with a user's password or the key, CSRF on every form, cookie flags, no open
redirect; `users create|list|delete`; the session key kept on disk."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from app.dashboard.auth import forget_users_cache
from app.dashboard.secret import secret_key
from app.storage import upgrade_on_start
from tests.integration.api_support import KEY, Server, make_app, non_loopback_address
from tests.support import REPO


@pytest.fixture
def served(tmp_path):
    started = []

    def serve(**settings) -> Server:
        app = make_app(f"sqlite:///{tmp_path}/d.db", tmp_path, SECRET_KEY="s" * 32, **settings)
        upgrade_on_start(app)
        server = Server(app)
        started.append(server)
        return server

    yield serve
    for server in started:
        server.stop()


def users(tmp_path, *args, password: str | None = None):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/d.db",
           "SECRET_KEY": "s" * 32}
    extra = ["--password", password] if password else []
    return subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                           "users", *args, *extra], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def csrf(page: requests.Response) -> str:
    marker = 'name="csrf_token" value="'
    start = page.text.index(marker) + len(marker)
    return page.text[start:page.text.index('"', start)]


def test_without_logins_only_loopback_clients_see_it(served):
    server = served()
    assert server.get("/dashboard/").status_code == 200
    address = non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback address to call from")
    refused = server.get("/dashboard/", host=address)
    assert refused.status_code == 401
    assert "users create" in refused.text and "DASHBOARD_API_KEY" in refused.text
    assert server.get("/api/requests", host=address).status_code == 401


def test_key_login_cookie_flags_and_logout(served):
    server = served(DASHBOARD_API_KEY=KEY)
    first = server.get("/dashboard/requests?q=x", allow_redirects=False)
    assert first.status_code == 302
    assert first.headers["Location"].startswith("/dashboard/login?next=")
    page = server.get("/dashboard/login")
    wrong = server.http.post(server.url("/dashboard/login"), timeout=10,
                             data={"key": "w" * 32, "csrf_token": csrf(page)})
    assert wrong.status_code == 401 and "Wrong name, password or key" in wrong.text
    page = server.get("/dashboard/login")
    done = server.http.post(server.url("/dashboard/login?next=/dashboard/"), timeout=10,
                            data={"key": KEY, "csrf_token": csrf(page)}, allow_redirects=False)
    assert done.status_code == 302 and done.headers["Location"] == "/dashboard/"
    cookie = done.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert server.get("/dashboard/").status_code == 200
    assert server.get("/api/requests").status_code == 200  # the session opens the API too
    overview = server.get("/dashboard/")
    out = server.http.post(server.url("/dashboard/logout"), timeout=10,
                           data={"csrf_token": csrf(overview)}, allow_redirects=False)
    assert out.status_code == 302
    assert server.get("/dashboard/", allow_redirects=False).status_code == 302


def test_forms_need_their_csrf_token(served):
    server = served(DASHBOARD_API_KEY=KEY)
    refused = server.http.post(server.url("/dashboard/login"), data={"key": KEY}, timeout=10)
    assert refused.status_code == 400
    assert server.get("/dashboard/", allow_redirects=False).status_code == 302


def test_user_login_and_no_open_redirect(served, tmp_path):
    server = served()
    assert server.get("/dashboard/").status_code == 200  # no users yet: loopback is enough
    made = users(tmp_path, "create", "ann", password="correct horse")
    assert made.returncode == 0, made.stderr
    assert "now needs a login" in made.stdout
    assert users(tmp_path, "create", "ann", password="other pass").returncode == 1
    assert users(tmp_path, "create", "bob", password="short").returncode == 2
    listed = users(tmp_path, "list")
    assert listed.returncode == 0 and listed.stdout.startswith("ann\t") and "never" in listed.stdout

    with server.app.app_context():
        forget_users_cache()  # the app's memory of "no users" (5 s) is not waited out
    assert server.get("/dashboard/", allow_redirects=False).status_code == 302
    page = server.get("/dashboard/login")
    bad = server.http.post(server.url("/dashboard/login"), timeout=10,
                           data={"name": "ann", "password": "wrong", "csrf_token": csrf(page)})
    assert bad.status_code == 401
    page = server.get("/dashboard/login")
    done = server.http.post(server.url("/dashboard/login?next=//evil.example/x"), timeout=10,
                            data={"name": "ann", "password": "correct horse",
                                  "csrf_token": csrf(page)}, allow_redirects=False)
    assert done.status_code == 302 and done.headers["Location"] == "/dashboard/"
    assert "Log out ann" in server.get("/dashboard/").text
    assert "last login 20" in users(tmp_path, "list").stdout
    assert users(tmp_path, "delete", "ann").returncode == 0
    assert users(tmp_path, "delete", "ann").returncode == 1


def test_the_session_key_is_made_once_and_kept_private(tmp_path):
    path = tmp_path / "data" / "secret_key"
    first = secret_key(None, path)
    assert len(first) >= 32 and secret_key(None, path) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_key("configured-key-0123456789", path) == "configured-key-0123456789"
    path.write_text("short")
    with pytest.raises(ValueError, match="no usable key"):
        secret_key(None, path)


def test_vendored_assets_match_their_checksums():
    vendor = REPO / "static" / "vendor"
    lines = (vendor / "SHA256SUMS").read_text().splitlines()
    names = {line.split()[1] for line in lines}
    assert names == {"htmx.min.js", "echarts.min.js"}
    for line in lines:
        digest, name, origin = line.split()
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert any(line.split()[2].startswith("htmx.org@2.0.") for line in lines)


def test_a_browser_at_the_root_is_sent_to_the_dashboard(served):
    server = served()
    page = server.get("/", headers={"Accept": "text/html,application/xhtml+xml"},
                      allow_redirects=False)
    assert page.status_code == 302 and page.headers["Location"] == "/dashboard/"
    assert server.get("/").json()["name"] == "Claude Nexus Proxy"
    assert Path(REPO / "static" / "app.js").is_file()
