"""`conversations relink` recomputes links for a time range, the same as the writer made them;
and linking one request costs a bounded number of statements, however long the history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest

from app.storage.linking import PER_HASH
from app.storage.models import Conversation, ConversationAnchor, Request
from app.storage.sink import make_sink
from tests.databases import migrated
from tests.factories import record_requests, request_row
from tests.support import REPO

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
TOOLS = [{"name": "Bash", "input_schema": {"type": "object"}}]
LINK_COLUMNS = ("branch_id", "parent_request_id", "is_subtask", "parent_task_request_id",
                "is_retry", "is_compaction_request", "is_compaction_continuation")


@pytest.fixture
def db(database_url):
    with migrated(database_url) as database:
        yield database


def turn_rows(turns: int, start: datetime, edit_at: int | None = None) -> list[dict]:
    """A tool loop of `turns` requests (each answer a Bash call), and with `edit_at` a second
    line that goes back to that turn with another prompt."""
    history: list[dict] = [{"role": "user", "content": f"task starting {start.isoformat()}"}]
    rows = []
    for turn in range(turns):
        answer = {"role": "assistant", "content": [
            {"type": "text", "text": f"step {turn}"},
            {"type": "tool_use", "id": f"toolu_{turn:04d}", "name": "Bash",
             "input": {"command": f"echo {turn}"}}]}
        rows.append(row_for(history, answer, start + timedelta(seconds=turn)))
        history = [*history, answer, {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{turn:04d}", "content": f"{turn}"}]}]
    if edit_at is not None:
        edited = [*history[:2 * edit_at + 1]]
        edited[-1] = {"role": "user", "content": "a different prompt"}
        answer = {"role": "assistant", "content": [{"type": "text", "text": "other"}]}
        rows.append(row_for(edited, answer, start + timedelta(seconds=turns)))
    return rows


def row_for(history: list[dict], answer: dict, when: datetime) -> dict:
    body = {"model": "claude-sonnet-4-5", "max_tokens": 512, "tools": TOOLS,
            "messages": history}
    return request_row(received_at=when, request_body=json.dumps(body),
                       response_body=json.dumps({"type": "message", **answer}),
                       session_id="sess-relink")


def links() -> dict[str, dict]:
    return {row["id"]: row for row in Request.select().dicts()}


def test_relink_recomputes_what_the_writer_did(db, database_url, tmp_path):
    early = turn_rows(4, T0)
    late = turn_rows(6, T0 + timedelta(hours=1), edit_at=2)
    record_requests(*early)
    record_requests(*late)
    before = links()
    assert {before[r["id"]]["branch_id"] for r in late} == {"main", "branch_1"}
    # An older algorithm's mistakes: every late request its own conversation.
    for row in late:
        Request.update(conversation_id=row["id"], branch_id="main", parent_request_id=None) \
            .where(Request.id == row["id"]).execute()
    env = {**os.environ, "DATABASE_URL": database_url}
    since = (T0 + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%S")
    done = subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                           "conversations", "relink", "--since", since, "--yes"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"Relinked {len(late)} request(s)" in done.stdout
    after = links()
    for row in early + late:  # the same tree again (late conversation ids are new ones)
        for column in LINK_COLUMNS:
            assert after[row["id"]][column] == before[row["id"]][column], (row["id"], column)
    late_ids = {after[r["id"]]["conversation_id"] for r in late}
    assert len(late_ids) == 1 and late_ids != {before[late[0]["id"]]["conversation_id"]}
    assert {after[r["id"]]["conversation_id"] for r in early} == {
        before[early[0]["id"]]["conversation_id"]}
    figures = {c.id: c for c in Conversation.select()}
    assert len(figures) == 2
    assert figures[late_ids.pop()].request_count == len(late)
    assert figures[after[early[0]["id"]]["conversation_id"]].request_count == len(early)
    assert figures[after[late[-1]["id"]]["conversation_id"]].branch_count == 1


def test_relink_needs_a_range(tmp_path):
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/n.db"}
    refused = subprocess.run([sys.executable, "-m", "flask", "--app", str(REPO / "wsgi.py"),
                              "conversations", "relink"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "exactly one of --since and --days" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_linking_costs_a_bounded_number_of_statements(db):
    """A batch reads the same few statements whatever the histories' length and however many
    requests it links: the stored-ids check, the candidates by hash, their children."""
    def write(rows: list[dict]) -> tuple[list[str], list[str]]:
        sink = make_sink(db)
        batch = sink.statements([(row, []) for row in rows])
        reads: list[str] = []
        writes: list[str] = []

        def query(sql, params):
            (reads if sql.lstrip().startswith("SELECT") else writes).append(sql)
            return db.execute_sql(sql, params).fetchall()

        def execute(sql, params):
            writes.append(sql)
            return db.execute_sql(sql, params)

        with db.atomic():
            sink.write(batch, query, execute)
        return reads, writes

    lines = {turns: turn_rows(turns, T0 + timedelta(minutes=turns)) for turns in (5, 60)}
    for rows in lines.values():
        record_requests(*rows[:-1])
    short, long = write([lines[5][-1]]), write([lines[60][-1]])
    assert len(short[0]) == len(long[0]) == 3, (short[0], long[0])
    assert len(short[1]) == len(long[1])
    for turns, rows in lines.items():
        assert Request.get_by_id(rows[-1]["id"]).parent_request_id == rows[-2]["id"], turns

    many = [turn_rows(8, T0 + timedelta(hours=2, minutes=n)) for n in range(20)]
    for rows in many:
        record_requests(*rows[:-1])
    reads, _ = write([rows[-1] for rows in many])
    assert len(reads) == 3, reads
    assert {Request.get_by_id(rows[-1]["id"]).parent_request_id for rows in many} == {
        rows[-2]["id"] for rows in many}
    assert ConversationAnchor.select().count() == 0


def retried_rows(count: int, start: datetime, domain: str = "team.example.com") -> list[dict]:
    """`count` sends of one same request, a second apart (each a retry of the first)."""
    body = json.dumps({"model": "claude-sonnet-4-5", "max_tokens": 512, "tools": TOOLS,
                       "messages": [{"role": "user", "content": "the same question"}]})
    return [request_row(received_at=start + timedelta(seconds=n), request_body=body,
                        response_body=json.dumps({"type": "message", "role": "assistant",
                                                  "content": [{"type": "text", "text": "a"}]}),
                        domain=domain, session_id="sess-retried")
            for n in range(count)]


def read_while_writing(db, rows: list[dict]) -> list[list[tuple]]:
    """Write `rows` as one batch; the rows each read of it returned."""
    sink = make_sink(db)
    batch = sink.statements([(row, []) for row in rows])
    reads: list[list[tuple]] = []

    def query(sql, params):
        found = db.execute_sql(sql, params).fetchall()
        if sql.lstrip().startswith("SELECT"):
            reads.append(found)
        return found

    with db.atomic():
        sink.write(batch, query, lambda sql, params: db.execute_sql(sql, params))
    return reads


def test_a_history_stored_many_times_is_read_only_as_far_as_its_newest(db):
    """A request sent over and over: each batch reads its newest PER_HASH sends, not all of
    them, and still links the next send where the others went."""
    rows = retried_rows(PER_HASH * 2 + 5, T0)
    record_requests(rows[0])
    record_requests(*rows[1:-1])
    first = Request.get_by_id(rows[0]["id"])
    reads = read_while_writing(db, [rows[-1]])
    assert max(len(found) for found in reads) <= PER_HASH
    last = Request.get_by_id(rows[-1]["id"])
    assert (last.conversation_id, last.branch_id, last.is_retry) == (
        first.conversation_id, first.branch_id, True)


def test_requests_not_read_are_asked_for_when_they_could_be_the_answer(db):
    """The newest sends of a history are another domain's: this domain's older ones, not read
    up front, are still found."""
    ours = retried_rows(3, T0)
    theirs = retried_rows(PER_HASH + 10, T0 + timedelta(seconds=10), domain="other.example.com")
    record_requests(ours[0])
    record_requests(*ours[1:-1], *theirs)
    read_while_writing(db, [ours[-1].copy() | {"received_at": T0 + timedelta(minutes=2)}])
    linked = Request.get_by_id(ours[-1]["id"])
    assert linked.is_retry
    assert linked.conversation_id == Request.get_by_id(ours[0]["id"]).conversation_id
    assert linked.conversation_id != Request.get_by_id(theirs[0]["id"]).conversation_id
