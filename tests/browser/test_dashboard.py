"""The dashboard in real Chromium against a real proxy process (SPEC §7.2, issue 7): log in,
visit every page, filter the requests, open a request and a conversation tree, see a new
request appear live, and see charts drawn with data — with no console error and nothing
fetched from another host (the `browse` fixture checks both). Screenshots of each page land in
tests/browser/screenshots/."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.browser.conftest import shot
from tests.fakes.upstream import Reply, text_block, tool_use_block
from tests.integration.conversation_client import Client
from tests.integration.recording_support import wait_writer, written
from tests.support import REPO

PASSWORD = "correct horse battery"


def flask(database_url: str, cwd, *args: str) -> None:
    env = {**os.environ, "DATABASE_URL": database_url, "SECRET_KEY": "k" * 32}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                           *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def proxy(start_proxy, tmp_path):
    """A proxy with one dashboard user, over a SQLite file."""
    url = f"sqlite:///{tmp_path}/browser.db"
    flask(url, tmp_path, "db", "upgrade")
    flask(url, tmp_path, "users", "create", "ann", "--password", PASSWORD)
    return start_proxy(DATABASE_URL=url, SECRET_KEY="k" * 32, STORAGE_BATCH_INTERVAL_MS="20",
                       ALERT_WINDOW_TOKEN_LIMIT="5000")


def traffic(proxy, upstream) -> None:
    """A conversation with a tool loop, a sub-agent and an edited prompt (a branch)."""
    main = Client(proxy.url, "session-browser-1")
    upstream.script(Reply(content=[text_block("Let me look."), tool_use_block(
        "Bash", {"command": "ls"})], stop_reason="tool_use"))
    listing = main.ask("What is in this folder? <b>bold?</b>")
    upstream.script(Reply(content=[text_block("I'll ask a helper."), tool_use_block(
        "Agent", {"description": "Count", "prompt": "Count the Python files.",
                  "subagent_type": "general-purpose"})], stop_reason="tool_use"))
    spawning = main.answer_tools(listing)
    helper = Client(proxy.url, "session-browser-1", agent_id="agent-browser-1")
    upstream.script(Reply(content=[text_block("There are 12.")]))
    helper.ask("Count the Python files.")
    upstream.script(Reply(content=[text_block("Twelve Python files.")]))
    main.answer_tools(spawning, {spawning.tool_uses[0]["id"]: "12\nagentId: agent-browser-1"})
    main.rewind(2)  # back to the first answer: another second prompt
    upstream.script(Reply(content=[text_block("Another path.")]))
    main.ask("Actually, list only the tests.")
    wait_writer(proxy, written(5))


def charts_have_data(page) -> int:
    """How many ECharts instances on the page hold at least one data point."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('.chart')).filter(el => {
        const chart = window.echarts && echarts.getInstanceByDom(el);
        if (!chart || !el.querySelector('canvas')) return false;
        return (chart.getOption().series || []).some(s => (s.data || []).some(
            d => (Array.isArray(d) ? d[d.length - 1] : (d && d.value !== undefined ? d.value : d))
                 > 0));
    }).length""")


def test_the_dashboard_in_a_browser(browse, proxy, upstream):
    traffic(proxy, upstream)
    page = browse(proxy.url).page

    # Logging in.
    page.goto("/dashboard/requests")
    assert "/dashboard/login" in page.url
    page.fill("input[name=name]", "ann")
    page.fill("input[name=password]", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r"/dashboard/requests"))
    shot(page, "requests")

    # The overview: figures, charts with data, the latest requests.
    page.goto("/dashboard/")
    page.wait_for_function("window.echarts && document.querySelector('.chart canvas')")
    assert charts_have_data(page) >= 1
    assert page.locator("#latest tbody tr").count() == 5
    shot(page, "overview")

    # A new request appears live, without a reload.
    page.wait_for_function("document.getElementById('live-status').classList.contains('on')")
    late = Client(proxy.url, "session-browser-2").ask("A late question")
    page.wait_for_selector(f"#latest a[href='/dashboard/requests/{late.request_id}']",
                           timeout=10_000)

    # Requests: filter by text, then open one.
    page.goto("/dashboard/requests")
    rows = page.locator("#requests-table tbody tr")
    assert rows.count() == 6
    page.locator("input[name=q]").press_sequentially("list only the", delay=20)
    page.wait_for_function(
        "document.querySelectorAll('#requests-table tbody tr').length === 1")
    assert "q=list+only+the" in page.url  # the filter is in the address, for sharing and back
    page.locator("#requests-table tbody tr a").first.click()
    page.wait_for_url(re.compile(r"/dashboard/requests/[0-9a-f-]{36}$"))
    assert page.get_by_text("Actually, list only the tests.").count() >= 1
    shot(page, "request-detail")

    # Conversations: the list, then the tree with its branches and the sub-agent.
    page.goto("/dashboard/conversations")
    shot(page, "conversations")
    assert page.get_by_text("What is in this folder? <b>bold?</b>").count() == 1  # escaped
    page.locator("a[href^='/dashboard/conversations/']",
                 has_text="What is in this folder").first.click()
    page.wait_for_url(re.compile(r"/dashboard/conversations/[0-9a-f-]{36}"))
    content = page.content()
    for branch in ("main", "subtask_1", "branch_1"):
        assert branch in content, branch
    shot(page, "conversation-tree")

    # Usage and accounts: charts drawn with data.
    page.goto("/dashboard/usage")
    page.wait_for_function("document.querySelector('.chart canvas')")
    assert charts_have_data(page) >= 2
    shot(page, "usage")
    page.goto("/dashboard/accounts")
    shot(page, "accounts")

    # Dark mode follows the system: the same session in a dark browser.
    dark = browse(proxy.url, color_scheme="dark").page
    dark.context.add_cookies(page.context.cookies())
    dark.goto("/dashboard/usage")
    dark.wait_for_function("document.querySelector('.chart canvas')")
    background = dark.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 21, 20)", background  # --bg of the dark palette
    shot(dark, "usage-dark")

    # Logging out ends the session.
    page.click("button:has-text('Log out')")
    page.wait_for_url(re.compile(r"/dashboard/login"))
    page.goto("/dashboard/")
    assert "/dashboard/login" in page.url


def test_a_request_through_one_process_appears_on_another(browse, start_proxy, upstream,
                                                        request, tmp_path):
    """Two processes on one PostgreSQL: the dashboard of the second shows, live, a request the
    first proxied (LISTEN/NOTIFY)."""
    from tests.databases import engine_url

    with engine_url("postgresql", tmp_path, request) as url:
        first = start_proxy(DATABASE_URL=url, STORAGE_BATCH_INTERVAL_MS="20")
        second = start_proxy(DATABASE_URL=url, STORAGE_BATCH_INTERVAL_MS="20")
        page = browse(second.url).page
        page.goto("/dashboard/")
        page.wait_for_function(
            "document.getElementById('live-status').classList.contains('on')")
        answer = Client(first.url, "session-elsewhere").ask("Seen from the other process?")
        page.wait_for_selector(f"#latest a[href='/dashboard/requests/{answer.request_id}']",
                               timeout=10_000)
        shot(page, "overview-live-from-another-process")
