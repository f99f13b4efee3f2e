"""Script and markup in everything a client or the upstream controls — prompt, system prompt,
model name, tool names and inputs, the answer, User-Agent, session id, query string, the Host
header — shown by every dashboard page in real Chromium: no script runs, no dialog opens, no
element is injected (an injected `<img src=x>` would fetch /dashboard/x and fail the page's
check of responses), and the payload is there as text. Chart tooltips, which ECharts renders
as HTML, are opened too."""

from __future__ import annotations

import json
import re

import requests

from tests.fakes.upstream import Reply, text_block, tool_use_block
from tests.integration.recording_support import wait_writer, written
from tests.reliability.abuse_support import KEY, XSS

MARK = "<script>window.__xss=1;alert('xss')</script>"  # the start of XSS, as text

PROBE = """() => ({
    xss: window.__xss === undefined ? null : window.__xss,
    injected: document.querySelectorAll(
        'img[src="x"], svg[onload], [onerror], [onload], div[hx-get="/x"]').length,
})"""


def hostile_traffic(proxy, upstream) -> str:
    """Exchanges carrying the payload everywhere; returns the id of the richest one."""
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "User-Agent": XSS,
               "x-claude-code-session-id": XSS, "content-type": "application/json"}
    body = {"model": f"claude-sonnet-4-5{XSS}", "max_tokens": 64, "system": XSS,
            "tools": [{"name": XSS, "description": XSS, "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": XSS},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": XSS, "signature": "s"},
                    {"type": "tool_use", "id": "toolu_xss", "name": XSS, "input": {XSS: XSS}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_xss", "content": XSS},
                    {"type": "image", "source": {"type": "base64", "media_type": XSS,
                                                 "data": "AAAA"}},
                    {"type": XSS, "text": XSS}]}]}
    ids = []
    for stream in (False, True):
        upstream.script(Reply(content=[text_block(XSS), tool_use_block(XSS, {XSS: XSS})],
                              stop_reason="tool_use", model=f"claude-haiku-4-5{XSS}"))
        sent = requests.post(f"{proxy.url}/v1/messages?{XSS}", headers=headers, timeout=10,
                             data=json.dumps({**body, "stream": stream}))
        assert sent.status_code == 200, sent.text[:300]
        sent.content  # noqa: B018  (the stream read to its end)
        ids.append(sent.headers["x-nexus-request-id"])
    # A Host naming no credential file: refused, but recorded under that domain.
    refused = requests.post(f"{proxy.url}/v1/messages", headers={**headers, "Host": XSS},
                            data=json.dumps(body), timeout=10)
    assert refused.status_code in (400, 401)
    wait_writer(proxy, written(3))
    return ids[1]


def check(page, where: str, dialogs: list) -> None:
    page.wait_for_timeout(150)  # an injected onerror/onload would have fired by now
    found = page.evaluate(PROBE)
    assert found == {"xss": None, "injected": 0}, (where, found)
    assert dialogs == [], (where, dialogs)


def open_tooltips(page) -> int:
    """Show the tooltip of each chart's first data point; how many charts there were."""
    return page.evaluate("""() => {
        const charts = Array.from(document.querySelectorAll('.chart'))
            .map(el => window.echarts && echarts.getInstanceByDom(el)).filter(Boolean);
        charts.forEach(chart => (chart.getOption().series || []).forEach((s, i) =>
            chart.dispatchAction({type: 'showTip', seriesIndex: i, dataIndex: 0})));
        return charts.length;
    }""")


def test_payloads_are_shown_as_text_and_never_run(browse, start_proxy, upstream, tmp_path):
    proxy = start_proxy(DATABASE_URL=f"sqlite:///{tmp_path}/xss.db",
                        STORAGE_BATCH_INTERVAL_MS="20")
    request_id = hostile_traffic(proxy, upstream)
    watched = browse(proxy.url)
    page, dialogs = watched.page, []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))

    page.goto(f"/dashboard/requests/{request_id}")
    check(page, "request detail", dialogs)
    text = page.inner_text("body")
    assert MARK in text  # the prompt, as text
    assert text.count("<img src=x onerror=") >= 5  # prompt, system, tool, answer, …
    page.locator("details").evaluate_all("els => els.forEach(el => el.open = true)")
    check(page, "request detail, every fold open", dialogs)

    for path in ("/dashboard/", "/dashboard/requests", "/dashboard/requests?q="
                 + requests.utils.quote(XSS), "/dashboard/requests?model="
                 + requests.utils.quote(XSS) + "&domain=" + requests.utils.quote(XSS),
                 "/dashboard/conversations", "/dashboard/usage", "/dashboard/accounts"):
        page.goto(path)
        check(page, path, dialogs)
        if path in ("/dashboard/", "/dashboard/usage"):
            page.wait_for_function("document.querySelector('.chart canvas')")
            assert open_tooltips(page) >= 1
            check(page, f"{path} with tooltips", dialogs)
    # The Host payload is listed as a domain, in text.
    page.goto("/dashboard/requests")
    assert MARK in page.inner_text("body")
    links = page.locator("a[href^='/dashboard/conversations/']")
    if links.count():
        links.first.click()
        page.wait_for_url(re.compile(r"/dashboard/conversations/"))
        check(page, "conversation detail", dialogs)
    watched.check()
