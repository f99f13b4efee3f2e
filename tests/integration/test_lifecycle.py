"""Process lifecycle: start-up refusing bad settings in one line, graceful SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import requests

from tests.fakes.upstream import Reply, text_block
from tests.support import REPO

BODY = {"model": "claude-opus-4-8", "max_tokens": 64, "stream": True,
        "messages": [{"role": "user", "content": "Hi"}]}


def test_bad_setting_stops_startup_with_one_line(tmp_path):
    env = {**os.environ, "PORT": "abc"}
    result = subprocess.run([sys.executable, str(REPO / "wsgi.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == ["error: invalid setting PORT='abc': expected a whole number"]


def test_env_file_is_read(tmp_path):
    (tmp_path / ".env").write_text("CLAUDE_API_BASE_URL=gopher://x\n")
    env = {k: v for k, v in os.environ.items() if k != "CLAUDE_API_BASE_URL"}
    result = subprocess.run([sys.executable, str(REPO / "wsgi.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert "CLAUDE_API_BASE_URL" in result.stderr and "Traceback" not in result.stderr


def test_sigterm_lets_streams_finish(start_proxy, upstream):
    proxy = start_proxy(SHUTDOWN_GRACE_S="10")
    upstream.script(Reply(content=[text_block("a b c d e f g h i j " * 3)], event_delay_s=0.1))
    result = {}

    def stream():
        response = requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                                 headers={"x-api-key": "sk-ant-api03-sigterm"})
        result["status"] = response.status_code
        result["body"] = response.content

    idle = requests.Session()  # an idle keep-alive connection must not hold shutdown up
    assert idle.get(proxy.url + "/health/live", timeout=5).ok
    thread = threading.Thread(target=stream)
    thread.start()
    upstream.wait_for(1)
    time.sleep(0.2)  # the stream is under way
    started = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    thread.join(timeout=20)
    assert proxy.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 9  # ended when the stream did, not at the deadline
    assert result["status"] == 200
    assert result["body"] == upstream.received[0].response_body
    assert b"event: message_stop" in result["body"]


def test_sigterm_cuts_streams_after_the_grace_period(start_proxy, upstream):
    proxy = start_proxy(SHUTDOWN_GRACE_S="1")
    upstream.script(Reply(content=[text_block("slow " * 200)], event_delay_s=0.5))
    outcome = {}

    def stream():
        try:
            requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                          headers={"x-api-key": "sk-ant-api03-sigterm"})
        except requests.RequestException as err:
            outcome["error"] = err

    thread = threading.Thread(target=stream)
    thread.start()
    upstream.wait_for(1)
    started = time.monotonic()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(timeout=15) == 0
    assert 0.9 <= time.monotonic() - started < 6
    thread.join(timeout=10)
    assert isinstance(outcome.get("error"), requests.RequestException)  # cut, not completed


def test_second_signal_cuts_at_once(start_proxy, upstream):
    proxy = start_proxy(SHUTDOWN_GRACE_S="60")
    upstream.script(Reply(content=[text_block("slow " * 200)], event_delay_s=0.5))
    thread = threading.Thread(target=_swallow, args=(proxy,))
    thread.start()
    upstream.wait_for(1)
    started = time.monotonic()
    proxy.proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    assert proxy.proc.poll() is None  # still draining the stream
    proxy.proc.send_signal(signal.SIGINT)
    assert proxy.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 5
    thread.join(timeout=10)


def _swallow(proxy):
    try:
        requests.post(proxy.url + "/v1/messages", json=BODY, timeout=30,
                      headers={"x-api-key": "sk-ant-api03-sigint"})
    except requests.RequestException:
        pass


def test_env_file_option(tmp_path):
    settings = tmp_path / "elsewhere.env"
    settings.write_text("PORT=99999\n")
    result = subprocess.run([sys.executable, str(REPO / "wsgi.py"), "--env-file", str(settings)],
                            cwd=tmp_path, env={k: v for k, v in os.environ.items() if k != "PORT"},
                            capture_output=True, text=True, timeout=30)
    assert result.returncode != 0
    assert result.stderr.strip() == ("error: invalid setting PORT='99999': expected a number "
                                     "between 1 and 65535")


def test_server_applies_migrations_before_listening(start_proxy, tmp_path):
    import sqlite3

    proxy = start_proxy()
    database = tmp_path / "proxy0" / "data" / "nexus.db"  # the default, in the working folder
    tables = {row[0] for row in sqlite3.connect(database).execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"requests", "request_chunks", "ratelimit_samples", "dashboard_users"} <= tables
    assert any("schema" in r.get("msg", "") or "applied" in r.get("msg", "")
               for r in proxy.records() if r.get("logger") == "app.storage")


def test_unreachable_database_stops_startup_with_one_line(tmp_path):
    from tests.support import free_port

    env = {**os.environ, "DATABASE_URL": f"postgresql://postgres:s3cret@127.0.0.1:{free_port()}/x",
           "PORT": str(free_port())}
    result = subprocess.run([sys.executable, str(REPO / "wsgi.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr
