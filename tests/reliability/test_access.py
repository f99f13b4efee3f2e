"""Who gets in, against real `python wsgi.py` processes listening on every address: without a
key or user, the dashboard and `/api/*` answer loopback clients only (X-Forwarded-For is never
believed); with `DASHBOARD_API_KEY`, nobody gets in without it. Keys and passwords are compared
with hmac.compare_digest (recorded by wrapping it, not timed); every state-changing dashboard
form needs its CSRF token; cookies are HttpOnly and SameSite; the login never redirects away."""

from __future__ import annotations

import hmac
import json
import re
from datetime import UTC, datetime
from urllib.parse import urljoin, urlsplit

import pytest
import requests

from app import create_app
from app.storage import upgrade_on_start
from tests.integration.api_support import non_loopback_address
from tests.reliability.abuse_support import HEADERS, message
from tests.support import ProxyProcess

DASHBOARD_KEY = "dashboard-key-abuse-0123456789abcdef"
CLIENT_KEY = "cnp_live_abuse0123456789abcdefABCDEF"
WRONG = "wrong-key-0123456789abcdef0123456789"


def routes(prefix: str, method: str = "GET") -> list[str]:
    """Every route of the app under `prefix` answering `method`, parameters filled in."""
    app = create_app({"DATABASE_URL": "sqlite:///:memory:", "SECRET_KEY": "k" * 40},
                     env_file=None)
    found = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(prefix) and method in rule.methods:
            found.append(re.sub(r"<[^>]+>", "x", rule.rule))
    assert found, prefix
    return sorted(set(found))


DASHBOARD_PAGES = [path for path in routes("/dashboard") if path not in ("/dashboard/login",)]
API_PATHS = routes("/api/")
FORM_POSTS = routes("/dashboard", "POST")


def serve(fake, tmp_path_factory, **settings) -> ProxyProcess:
    return ProxyProcess(fake.base_url, tmp_path_factory.mktemp("access"),
                        {"HOST": "0.0.0.0", "SECRET_KEY": "k" * 40, **settings})


@pytest.fixture(scope="module")
def open_server(fake_upstream_server, tmp_path_factory):
    proc = serve(fake_upstream_server, tmp_path_factory)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def keyed_server(fake_upstream_server, tmp_path_factory):
    proc = serve(fake_upstream_server, tmp_path_factory, DASHBOARD_API_KEY=DASHBOARD_KEY)
    yield proc
    proc.stop()


def at(proc: ProxyProcess, host: str, path: str, **kwargs) -> requests.Response:
    with requests.Session() as http:
        http.trust_env = False  # no HTTP_PROXY detour: the peer address is the point
        return http.get(f"http://{host}:{proc.port}{path}", timeout=10, allow_redirects=False,
                        **kwargs)


def outside() -> str:
    address = non_loopback_address()
    assert address, "this test needs a non-loopback address on this machine (see `ip addr`)"
    return address


SPOOFS = [{}, {"X-Forwarded-For": "127.0.0.1"}, {"X-Real-IP": "127.0.0.1"},
          {"Forwarded": "for=127.0.0.1"}, {"Host": "127.0.0.1"},
          {"X-Forwarded-For": "::1, 127.0.0.1"}]


@pytest.mark.parametrize("spoof", SPOOFS, ids=lambda s: ",".join(s) or "plain")
def test_without_logins_only_loopback_clients_get_in(open_server, spoof):
    address = outside()
    for path in DASHBOARD_PAGES:
        refused = at(open_server, address, path, headers=spoof)
        assert refused.status_code == 401, (path, refused.status_code)
        assert "DASHBOARD_API_KEY" in refused.text and "users create" in refused.text
    for path in API_PATHS:
        refused = at(open_server, address, path, headers=spoof)
        assert refused.status_code == 401, (path, refused.status_code)
        assert refused.json()["error"]["type"] == "authentication_error"
    # The same server answers loopback, so the refusals above are about the address.
    assert at(open_server, "127.0.0.1", "/dashboard/").status_code == 200
    assert at(open_server, "127.0.0.1", "/api/requests").status_code == 200
    # The proxy routes are for everyone (they have their own credentials rule).
    with requests.Session() as http:
        http.trust_env = False
        relayed = http.post(f"http://{address}:{open_server.port}/v1/messages",
                            json=message(), headers=HEADERS, timeout=10)
    assert relayed.status_code == 200


def test_with_a_key_nobody_gets_in_without_it(keyed_server):
    address = outside()
    for host in ("127.0.0.1", address):
        for path in API_PATHS:
            for headers in ({}, {"Authorization": f"Bearer {WRONG}"},
                            {"X-Dashboard-Key": WRONG}, {"Authorization": DASHBOARD_KEY},
                            {"Authorization": f"Basic {DASHBOARD_KEY}"},
                            {"X-Dashboard-Key": DASHBOARD_KEY[:-1]},
                            {"X-Forwarded-For": "127.0.0.1"}):
                refused = at(keyed_server, host, path, headers=headers)
                assert refused.status_code == 401, (host, path, headers)
                assert refused.json()["error"]["type"] == "authentication_error"
                assert DASHBOARD_KEY not in refused.text
        for path in DASHBOARD_PAGES:
            sent = at(keyed_server, host, path, headers={"X-Dashboard-Key": DASHBOARD_KEY})
            # Pages take a login session, not the API's header: off to the login page.
            assert sent.status_code == 302, (host, path, sent.status_code)
            assert sent.headers["Location"].startswith("/dashboard/login")
        allowed = at(keyed_server, host, "/api/requests",
                     headers={"Authorization": f"Bearer {DASHBOARD_KEY}"})
        assert allowed.status_code == 200
        assert at(keyed_server, host, "/api/requests",
                  headers={"X-Dashboard-Key": DASHBOARD_KEY}).status_code == 200


# --- constant-time comparison ------------------------------------------------------------------


@pytest.fixture
def compared(monkeypatch):
    """Every hmac.compare_digest call (secrets.compare_digest is the same function), recorded."""
    calls: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def recording(a, b):
        calls.append((a if isinstance(a, bytes) else a.encode(),
                      b if isinstance(b, bytes) else b.encode()))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", recording)
    return calls


def token_of(page: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)


def test_api_and_dashboard_keys_are_compared_in_constant_time(compared, tmp_path):
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/d.db", "SECRET_KEY": "k" * 40,
                      "DASHBOARD_API_KEY": DASHBOARD_KEY,
                      "CREDENTIALS_DIR": str(tmp_path / "credentials")}, env_file=None)
    upgrade_on_start(app)
    client = app.test_client()
    assert client.get("/api/requests", headers={"Authorization": f"Bearer {WRONG}"}
                      ).status_code == 401
    assert (WRONG.encode(), DASHBOARD_KEY.encode()) in compared
    compared.clear()
    assert client.get("/api/requests", headers={"X-Dashboard-Key": DASHBOARD_KEY}
                      ).status_code == 200
    assert (DASHBOARD_KEY.encode(), DASHBOARD_KEY.encode()) in compared
    compared.clear()
    token = token_of(client.get("/dashboard/login").text)
    assert client.post("/dashboard/login", data={"key": WRONG, "csrf_token": token}
                       ).status_code == 401
    assert (WRONG.encode(), DASHBOARD_KEY.encode()) in compared


def test_passwords_are_compared_in_constant_time_even_for_unknown_names(compared, tmp_path):
    from werkzeug.security import generate_password_hash

    from app.dashboard.auth import forget_users_cache
    from app.storage.models import DashboardUser

    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/d.db", "SECRET_KEY": "k" * 40,
                      "CREDENTIALS_DIR": str(tmp_path / "credentials")}, env_file=None)
    upgrade_on_start(app)
    with app.app_context():
        DashboardUser.create(name="ann", password_hash=generate_password_hash("correct horse"),
                             created_at=datetime.now(UTC))
        forget_users_cache()
    client = app.test_client()
    for name in ("ann", "nobody"):
        compared.clear()
        token = token_of(client.get("/dashboard/login").text)
        assert client.post("/dashboard/login", data={
            "name": name, "password": "wrong horse", "csrf_token": token}).status_code == 401
        assert compared, name  # a hash comparison happened, known name or not


def test_client_keys_are_compared_in_constant_time(compared, tmp_path, upstream):
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "localhost.credentials.json").write_text(json.dumps({
        "type": "api_key", "api_key": "sk-ant-api03-abuse-domain-key-000000000000-AAAA",
        "client_api_key": CLIENT_KEY}))
    app = create_app({"DATABASE_URL": f"sqlite:///{tmp_path}/d.db", "SECRET_KEY": "k" * 40,
                      "CLAUDE_API_BASE_URL": upstream.base_url, "ENABLE_CLIENT_AUTH": "true",
                      "CREDENTIALS_DIR": str(credentials)}, env_file=None)
    client = app.test_client()
    for headers in ({"x-api-key": WRONG}, {"Authorization": f"Bearer {WRONG}"}):
        compared.clear()
        refused = client.post("/v1/messages", json=message(),
                              headers={**headers, "Host": "localhost"})
        assert refused.status_code == 401
        assert refused.json["error"]["type"] == "authentication_error"
        assert (WRONG.encode(), CLIENT_KEY.encode()) in compared
    assert upstream.received == []


# --- CSRF, cookies, redirects -------------------------------------------------------------------


def login_page(http: requests.Session, proc: ProxyProcess) -> str:
    page = http.get(proc.url + "/dashboard/login", timeout=10)
    assert page.status_code == 200
    return token_of(page.text)


def logged_in(proc: ProxyProcess) -> requests.Session:
    http = requests.Session()
    http.trust_env = False
    done = http.post(proc.url + "/dashboard/login", timeout=10, allow_redirects=False,
                     data={"key": DASHBOARD_KEY, "csrf_token": login_page(http, proc)})
    assert done.status_code == 302
    return http


def test_every_state_changing_form_needs_its_csrf_token(keyed_server):
    assert set(FORM_POSTS) >= {"/dashboard/login", "/dashboard/logout"}
    for path in FORM_POSTS:
        http = logged_in(keyed_server)
        good = token_of(http.get(keyed_server.url + "/dashboard/", timeout=10).text)
        for data in ({}, {"csrf_token": ""}, {"csrf_token": "forged"},
                     {"csrf_token": good[:-2] + "xx"}):
            refused = http.post(keyed_server.url + path, timeout=10, allow_redirects=False,
                                data={**data, "key": DASHBOARD_KEY})
            assert refused.status_code == 400, (path, data, refused.status_code)
        # A token from another session does not do either.
        other = requests.Session()
        stolen = login_page(other, keyed_server)
        assert http.post(keyed_server.url + path, timeout=10, allow_redirects=False,
                         data={"csrf_token": stolen, "key": DASHBOARD_KEY}).status_code == 400
        # Still logged in: none of the refused posts did anything.
        assert http.get(keyed_server.url + "/dashboard/", timeout=10,
                        allow_redirects=False).status_code == 200
    # Every form a logged-in page shows that posts carries the token.
    http = logged_in(keyed_server)
    for path in ("/dashboard/", "/dashboard/requests", "/dashboard/usage"):
        page = http.get(keyed_server.url + path, timeout=10).text
        for form in re.findall(r"<form\b.*?</form>", page, flags=re.S | re.I):
            if re.search(r'method="?post', form, flags=re.I):
                assert 'name="csrf_token"' in form, (path, form[:300])


def test_session_cookies_are_httponly_and_samesite(keyed_server):
    http = requests.Session()
    http.trust_env = False
    done = http.post(keyed_server.url + "/dashboard/login", timeout=10, allow_redirects=False,
                     data={"key": DASHBOARD_KEY, "csrf_token": login_page(http, keyed_server)})
    cookies = done.raw.headers.getlist("Set-Cookie")
    assert cookies
    for cookie in cookies:
        flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
        assert "httponly" in flags, cookie
        assert "samesite=lax" in cookie.lower().replace(" ", ""), cookie
        assert DASHBOARD_KEY not in cookie


NEXTS = ["//evil.example", "https://evil.example/dashboard", "/\\evil.example",
         "\\\\evil.example", "/dashboard.evil.example", "/dashboardevil", "javascript:alert(1)",
         "/dashboard\\evil.example", "http:/evil.example", "/%2F%2Fevil.example",
         " //evil.example", "\t//evil.example", "/login?next=//evil.example"]


@pytest.mark.parametrize("target", NEXTS)
def test_login_never_redirects_out_of_the_dashboard(keyed_server, target):
    http = requests.Session()
    http.trust_env = False
    done = http.post(keyed_server.url + "/dashboard/login", params={"next": target},
                     timeout=10, allow_redirects=False,
                     data={"key": DASHBOARD_KEY, "csrf_token": login_page(http, keyed_server)})
    assert done.status_code == 302
    location = done.headers["Location"]
    # Resolved as a browser would (tabs and newlines dropped, "\\" read as "/"): this server.
    resolved = urlsplit(urljoin(keyed_server.url + "/login",
                                re.sub(r"[\t\r\n]", "", location).replace("\\", "/")))
    assert (resolved.scheme, resolved.netloc) == ("http", f"127.0.0.1:{keyed_server.port}"), \
        location
    assert resolved.path.startswith("/dashboard"), location


def test_a_next_with_a_line_break_is_no_error(keyed_server):
    http = requests.Session()
    http.trust_env = False
    done = http.post(keyed_server.url + "/dashboard/login",
                     params={"next": "/dashboard/\r\nSet-Cookie: evil=1"}, timeout=10,
                     allow_redirects=False,
                     data={"key": DASHBOARD_KEY, "csrf_token": login_page(http, keyed_server)})
    assert done.status_code == 302 and done.headers["Location"].startswith("/dashboard")
    assert "evil" not in done.headers.get("Set-Cookie", "")
