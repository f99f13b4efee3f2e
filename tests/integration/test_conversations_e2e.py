"""Conversations rebuilt from traffic alone (issue 6's acceptance, CONVERSATIONS.md "Outcomes"):
a simulated Claude Code client (tests/integration/conversation_client.py) and captured Claude
Code 2.1.197 requests go through a real proxy process in front of the fake upstream, on SQLite
and on PostgreSQL; the structure the batch writer linked is read back through
`/api/conversations`, `/api/conversations/<id>` and `/api/requests/<id>`: tool loops, edited
prompts (user branches), retries, parallel sub-agents, compactions, `role: "system"` entries
and side requests."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import requests

from tests.fakes.upstream import ErrorReply, Reply, text_block, tool_use_block
from tests.integration.conversation_client import (
    SUMMARY_INSTRUCTIONS,
    Client,
    assistant_messages,
    captured,
    continuation_text,
    replay,
)
from tests.integration.recording_support import wait_writer, written

SESSION = "5f0c2a7e-1d3b-4c8e-9a61-0b7d2e4f6a81"
OTHER_SESSION = "7a9e4b21-6c0d-4f3a-8e52-1d9b3c7f0e64"


# ---------------------------------------------------------------------- helpers


def start(start_proxy, database_url):
    """One proxy process for the test, writing every 20 ms, passing upstream errors through."""
    return start_proxy(DATABASE_URL=database_url, STORAGE_BATCH_INTERVAL_MS="20",
                       UPSTREAM_MAX_RETRIES="0")


def get(proxy, path: str, **params) -> dict:
    answer = requests.get(f"{proxy.url}{path}", params=params, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()


def conversations(proxy) -> list[dict]:
    listed = get(proxy, "/api/conversations", limit=100)
    assert listed["total"] == len(listed["conversations"])
    return listed["conversations"]


def conversation(proxy, conversation_id: str) -> dict:
    return get(proxy, f"/api/conversations/{conversation_id}")


def only_conversation(proxy) -> dict:
    """The one conversation recorded (its detail), checked against its list entry."""
    listed = conversations(proxy)
    assert len(listed) == 1, listed
    found = conversation(proxy, listed[0]["id"])
    assert {k: found[k] for k in listed[0]} == listed[0]
    assert found["requests_truncated"] is False
    return found


def stored(proxy, request_id: str) -> dict:
    return get(proxy, f"/api/requests/{request_id}")


def steps(found: dict) -> dict[str, dict]:
    """The conversation's requests by id."""
    return {step["id"]: step for step in found["requests"]}


def branches(found: dict) -> dict[str, dict]:
    return {branch["branch_id"]: branch for branch in found["branches"]}


def ok(*answers) -> None:
    for answer in answers:
        assert answer.status == 200 and answer.request_id, answer


def bash(command: str, text: str = "Let me run that.") -> Reply:
    """An answer calling the Bash tool."""
    return Reply(content=[text_block(text), tool_use_block("Bash", {"command": command})],
                 stop_reason="tool_use")


def said(text: str) -> Reply:
    return Reply(content=[text_block(text)])


def assert_line(found: dict, ids: list[str], branch: str, first_parent: str | None) -> None:
    """`ids` (in order) form one line on `branch`: each the parent of the next."""
    by_id = steps(found)
    parents = [first_parent, *ids[:-1]]
    for request_id, parent in zip(ids, parents, strict=True):
        step = by_id[request_id]
        assert (step["branch_id"], step["parent_request_id"]) == (branch, parent), step


def assert_plain(step: dict) -> None:
    """A turn of the conversation with no special role."""
    assert not (step["is_retry"] or step["is_subtask"] or step["is_compaction_request"]
                or step["is_compaction_continuation"]), step
    assert step["parent_task_request_id"] is None, step


# ---------------------------------------------------------------------- 1. a tool loop


def test_a_tool_loop_is_one_line_on_main(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(*(bash(f"wc -l part{n}.py") for n in range(9)),
                    said("All nine parts counted."))
    answers = [client.ask("Count the lines of every part of the parser")]
    for _ in range(9):
        assert answers[-1].tool_uses  # each answer is a Bash call; the next turn answers it
        answers.append(client.answer_tools(answers[-1]))
    ok(*answers)
    assert {a.body["stream"] for a in answers} == {True, False}
    wait_writer(proxy, written(10))

    ids = [a.request_id for a in answers]
    found = only_conversation(proxy)
    assert found["request_count"] == 10 and found["message_count"] == 19
    assert (found["branch_count"], found["subtask_count"], found["compact_count"]) == (0, 0, 0)
    assert found["first_request_id"] == ids[0] and found["session_id"] == SESSION
    assert found["title"] == "Count the lines of every part of the parser"
    assert [step["id"] for step in found["requests"]] == ids
    assert_line(found, ids, "main", None)
    for n, step in enumerate(found["requests"]):
        assert_plain(step)
        assert step["message_count"] == 2 * n + 1 and step["session_id"] == SESSION
    assert found["branches"] == [{
        "branch_id": "main", "kind": "main", "request_count": 10, "first_request_id": ids[0],
        "last_request_id": ids[-1], "parent_request_id": None,
        "created_at": found["requests"][0]["received_at"],
        "last_request_at": found["requests"][-1]["received_at"], "is_subtask": False}]

    rows = [stored(proxy, request_id) for request_id in ids]
    assert rows[0]["parent_message_hash"] is None
    for before, row in zip(rows, rows[1:], strict=False):
        assert row["parent_message_hash"] == before["current_message_hash"]
        assert row["conversation_id"] == found["id"] and row["request_type"] == "inference"
        assert row["system_hash"] == rows[0]["system_hash"]
    assert len({row["current_message_hash"] for row in rows}) == 10


# ---------------------------------------------------------------------- 2. edited prompts


def test_an_edited_prompt_starts_a_branch_and_its_follow_up_stays_there(
        database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(said("Plan: three steps."), said("Step one done."), said("Step two done."))
    t1 = client.ask("Plan the migration of the billing service")
    t2 = client.ask("Do step one")
    t3 = client.ask("Do step two")
    # The user edits the second prompt: the history up to turn 1's answer, another prompt.
    client.rewind(2)
    upstream.script(said("Skipping to step three."), said("Step four done."))
    e1 = client.ask("Skip to step three instead")
    f1 = client.ask("Then do step four")
    # A second edit from the same point.
    client.rewind(2)
    upstream.script(said("Rolling back."))
    e2 = client.ask("Roll everything back")
    ok(t1, t2, t3, e1, f1, e2)
    wait_writer(proxy, written(6))

    found = only_conversation(proxy)
    assert found["request_count"] == 6 and found["branch_count"] == 2
    assert_line(found, [t1.request_id, t2.request_id, t3.request_id], "main", None)
    assert_line(found, [e1.request_id, f1.request_id], "branch_1", t1.request_id)
    assert_line(found, [e2.request_id], "branch_2", t1.request_id)
    for step in found["requests"]:
        assert_plain(step)
    assert [b["branch_id"] for b in found["branches"]] == ["main", "branch_1", "branch_2"]
    by_branch = branches(found)
    assert {k: by_branch["branch_1"][k] for k in (
        "kind", "request_count", "first_request_id", "last_request_id", "parent_request_id",
        "is_subtask")} == {"kind": "branch", "request_count": 2, "first_request_id": e1.request_id,
                           "last_request_id": f1.request_id, "parent_request_id": t1.request_id,
                           "is_subtask": False}
    assert (by_branch["branch_2"]["request_count"], by_branch["branch_2"]["parent_request_id"]) \
        == (1, t1.request_id)
    assert by_branch["main"]["request_count"] == 3
    edit = stored(proxy, e1.request_id)
    assert edit["parent_message_hash"] == stored(proxy, t1.request_id)["current_message_hash"]


# ---------------------------------------------------------------------- 3. retries


def test_a_retried_request_is_a_retry_in_place_not_a_branch(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(said("Reading the config."), said("The config has four sections."))
    t1 = client.ask("Read the config")
    t2 = client.ask("Summarise its sections")
    # Turn 3's first attempt is overloaded (passed through: no proxy retries); the client
    # sends the very same body again.
    upstream.script(ErrorReply(529), bash("grep -n timeout config.toml"))
    client.user("Find the timeout setting")
    failed = client.send()
    assert failed.status == 529 and failed.message is None
    retried = client.resend(failed)
    # The next turn continues from the retry's answer.
    upstream.script(said("The timeout is 30 s."))
    t4 = client.answer_tools(retried)
    # A client-side retry of a request that had succeeded (its answer came too late): the
    # same body twice, the client keeps the second answer.
    upstream.script(said("Raised it to 60 s."), said("Raised it to 60 s, done."))
    client.user("Raise it to 60 s")
    first_try = client.post(client.history)
    second_try = client.resend(first_try)
    upstream.script(said("Restarted."))
    t6 = client.ask("Restart the service")
    ok(t1, t2, retried, t4, first_try, second_try, t6)
    assert failed.body == retried.body and first_try.body == second_try.body
    wait_writer(proxy, written(8))

    found = only_conversation(proxy)
    by_id = steps(found)
    assert found["request_count"] == 8 and found["branch_count"] == 0
    assert [b["branch_id"] for b in found["branches"]] == ["main"]
    assert all(step["branch_id"] == "main" for step in found["requests"])
    assert by_id[failed.request_id]["status"] == 529
    assert by_id[failed.request_id]["parent_request_id"] == t2.request_id
    assert not by_id[failed.request_id]["is_retry"]
    assert by_id[retried.request_id]["is_retry"] is True
    assert by_id[retried.request_id]["parent_request_id"] == t2.request_id
    assert by_id[t4.request_id]["parent_request_id"] == retried.request_id  # it replays that answer
    assert not by_id[first_try.request_id]["is_retry"]
    assert by_id[first_try.request_id]["parent_request_id"] == t4.request_id
    assert by_id[second_try.request_id]["is_retry"] is True
    assert by_id[second_try.request_id]["parent_request_id"] == t4.request_id
    assert by_id[t6.request_id]["parent_request_id"] == second_try.request_id
    for answer in (t1, t2, t4, t6):
        assert_plain(by_id[answer.request_id])
    failed_row, retried_row = stored(proxy, failed.request_id), stored(proxy, retried.request_id)
    assert failed_row["current_message_hash"] == retried_row["current_message_hash"]
    assert retried_row["is_retry"] is True and retried_row["conversation_id"] == found["id"]


# ---------------------------------------------------------------------- 4. sub-agents


def test_parallel_sub_agents_each_get_a_subtask_branch(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    main = Client(proxy.url, SESSION)
    prompts = {"agent-0a1b2c3d4e5f60718": "Find every caller of parse_config in the repository.",
               "agent-9f8e7d6c5b4a39281": "List the tests that cover the config loader."}
    upstream.script(Reply(content=[text_block("I'll look at both in parallel.")] + [
        tool_use_block("Agent", {"description": f"Survey {n}", "prompt": prompt,
                                 "subagent_type": "general-purpose"})
        for n, prompt in enumerate(prompts.values())], stop_reason="tool_use"))
    spawning = main.ask("Survey the config loader: its callers and its tests")
    ok(spawning)
    spawned = {use["input"]["prompt"]: use["id"] for use in spawning.tool_uses}
    assert set(spawned) == set(prompts.values())

    agents = {agent_id: Client(proxy.url, SESSION, agent_id=agent_id) for agent_id in prompts}
    # Each sub-agent's first request is its prompt alone (Claude Code adds a reminder block);
    # both are sent at once.
    upstream.script(bash("grep -rn parse_config"), bash("ls tests"))
    with ThreadPoolExecutor(2) as pool:
        firsts = dict(zip(agents, pool.map(
            lambda agent_id: agents[agent_id].ask([
                {"type": "text", "text": "<system-reminder>\nToday's date is 2026-11-26.\n"
                                         "</system-reminder>\n"},
                {"type": "text", "text": prompts[agent_id]}]), agents), strict=True))
    # Their follow-ups answer their own Bash calls, interleaved.
    upstream.script(said("Three callers."), said("Two test files."))
    with ThreadPoolExecutor(2) as pool:
        seconds = dict(zip(agents, pool.map(
            lambda agent_id: agents[agent_id].answer_tools(firsts[agent_id]), agents),
            strict=True))
    # The parent continues with both sub-agents' results.
    upstream.script(said("Callers and tests are listed."))
    results = {spawned[prompt]: f"Done.\nagentId: {agent_id} (use SendMessage to continue)"
               for agent_id, prompt in prompts.items()}
    continued = main.answer_tools(spawning, results)
    ok(*firsts.values(), *seconds.values(), continued)
    wait_writer(proxy, written(6))

    found = only_conversation(proxy)
    by_id = steps(found)
    assert found["request_count"] == 6 and found["subtask_count"] == 2
    assert found["branch_count"] == 0
    assert_line(found, [spawning.request_id, continued.request_id], "main", None)
    assert_plain(by_id[continued.request_id])
    subtasks = {}
    for agent_id in prompts:
        first, second = by_id[firsts[agent_id].request_id], by_id[seconds[agent_id].request_id]
        branch = first["branch_id"]
        subtasks[branch] = agent_id
        assert first["is_subtask"] is True and first["agent_id"] == agent_id
        assert first["parent_task_request_id"] == first["parent_request_id"] \
            == spawning.request_id
        assert (second["branch_id"], second["parent_request_id"]) == (branch, first["id"])
        assert second["is_subtask"] is True and second["agent_id"] == agent_id
        assert second["parent_task_request_id"] == spawning.request_id
        assert not (first["is_retry"] or second["is_retry"])
    assert sorted(subtasks) == ["subtask_1", "subtask_2"]
    by_branch = branches(found)
    assert sorted(by_branch) == ["main", "subtask_1", "subtask_2"]
    for name in ("subtask_1", "subtask_2"):
        assert by_branch[name]["kind"] == "subtask" and by_branch[name]["is_subtask"] is True
        assert by_branch[name]["request_count"] == 2
        assert by_branch[name]["parent_request_id"] == spawning.request_id
    assert by_branch["main"]["request_count"] == 2
    row = stored(proxy, firsts[subtasks["subtask_1"]].request_id)
    assert row["conversation_id"] == found["id"] and row["message_count"] == 1


# ---------------------------------------------------------------------- 5. compaction


def summary_reply(summary: str) -> Reply:
    """A summarisation answer as Claude Code asks for it: an analysis, then the summary."""
    return Reply(content=[text_block(
        f"<analysis>\nThe user asked for a rename and its follow-ups.\n</analysis>\n\n"
        f"<summary>\n{summary}\n</summary>")])


def test_a_compaction_continues_on_a_compact_branch(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(said("Renamed parser to lexer."), said("Imports updated."),
                    said("Tests pass."))
    t1 = client.ask("Rename the parser module to lexer")
    t2 = client.ask("Update the imports")
    t3 = client.ask("Run the tests")
    # /compact, as Claude Code 2.1 asks: the newest answer left out, the instructions added
    # to the last user message.
    first_summary = ("1. Primary Request and Intent: rename the parser module to lexer.\n"
                     "2. Pending Tasks: none, the tests pass.")
    upstream.script(summary_reply(first_summary))
    summarised = client.send(messages=client.history[:4] + [{"role": "user", "content": [
        text_block("Run the tests"), text_block(SUMMARY_INSTRUCTIONS)]}])
    # The compacted session starts over from the summary, same session id.
    compacted = Client(proxy.url, SESSION)
    upstream.script(said("Picking up: nothing pending."), said("Docs updated."))
    c1 = compacted.ask(continuation_text(first_summary))
    c2 = compacted.ask("Update the docs for the rename")
    # A second /compact, from inside the compacted line, the summary asked in a new message.
    second_summary = ("1. Primary Request and Intent: rename parser to lexer, docs updated.\n"
                      "2. Pending Tasks: release notes.")
    upstream.script(summary_reply(second_summary))
    summarised_again = compacted.ask(SUMMARY_INSTRUCTIONS)
    again = Client(proxy.url, SESSION)
    upstream.script(said("Continuing with the release notes."), said("Notes written."))
    k1 = again.ask(continuation_text(second_summary))
    k2 = again.ask("Write the release notes")
    ok(t1, t2, t3, summarised, c1, c2, summarised_again, k1, k2)
    wait_writer(proxy, written(9))

    found = only_conversation(proxy)
    by_id = steps(found)
    assert found["request_count"] == 9 and found["compact_count"] == 2
    assert found["branch_count"] == 0 and found["subtask_count"] == 0
    assert_line(found, [t1.request_id, t2.request_id, t3.request_id], "main", None)
    request = by_id[summarised.request_id]
    assert request["is_compaction_request"] is True and not request["is_compaction_continuation"]
    assert (request["branch_id"], request["parent_request_id"]) == ("main", t2.request_id)
    assert_line(found, [c1.request_id, c2.request_id, summarised_again.request_id],
                "compact_1", summarised.request_id)
    assert by_id[c1.request_id]["is_compaction_continuation"] is True
    assert not by_id[c1.request_id]["is_compaction_request"]
    assert_plain(by_id[c2.request_id])
    assert by_id[summarised_again.request_id]["is_compaction_request"] is True
    assert_line(found, [k1.request_id, k2.request_id], "compact_2", summarised_again.request_id)
    assert by_id[k1.request_id]["is_compaction_continuation"] is True
    assert_plain(by_id[k2.request_id])
    for answer in (t1, t2, t3):
        assert_plain(by_id[answer.request_id])
    by_branch = branches(found)
    assert [b["branch_id"] for b in found["branches"]] == ["main", "compact_1", "compact_2"]
    assert [by_branch[name]["request_count"] for name in ("main", "compact_1", "compact_2")] \
        == [4, 3, 2]
    assert by_branch["compact_1"]["kind"] == "compact"
    assert by_branch["compact_1"]["parent_request_id"] == summarised.request_id
    assert by_branch["compact_2"]["parent_request_id"] == summarised_again.request_id
    assert stored(proxy, summarised.request_id)["is_compaction_request"] is True


# ---------------------------------------------------------------------- 6. system entries


def test_system_entries_in_the_history_break_nothing(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(*(said(f"Answer {n}.") for n in range(5)))
    # Claude Code 2.1 appends `role: "system"` entries after a user turn and keeps them.
    client.user("Explain the build")
    client.note("Available agent types for the Agent tool:\n- Explore: read-only search.")
    answers = [client.send()]
    answers.append(client.ask("And the release process?"))
    client.note("The user changed the working directory to /srv/app.")
    answers.append(client.ask("Which of those steps are manual?"))
    # One that shows once and is gone from the next request.
    transient = "Reminder: the user prefers make targets."
    client.user("Automate the first one")
    client.note(transient)
    answers.append(client.send())
    client.history = [m for m in client.history if m["content"] != transient]
    answers.append(client.ask("Now the second"))
    ok(*answers)
    assert sum(m["role"] == "system" for m in answers[3].body["messages"]) == 3
    assert sum(m["role"] == "system" for m in answers[4].body["messages"]) == 2
    wait_writer(proxy, written(5))

    ids = [a.request_id for a in answers]
    found = only_conversation(proxy)
    assert found["request_count"] == 5 and found["message_count"] == 9
    assert [b["branch_id"] for b in found["branches"]] == ["main"]
    assert (found["branch_count"], found["subtask_count"], found["compact_count"]) == (0, 0, 0)
    assert_line(found, ids, "main", None)
    for n, step in enumerate(found["requests"]):
        assert_plain(step)
        assert step["message_count"] == 2 * n + 1  # user and assistant entries only


# ---------------------------------------------------------------------- 7. side requests


def test_side_requests_carry_the_session_but_join_no_conversation(
        database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    client = Client(proxy.url, SESSION)
    upstream.script(said("Slow start doubles the window each round trip."))
    t1 = client.ask("Explain TCP slow start briefly")
    # The title of the session, asked on the side (no tools, a JSON schema output format).
    sample = captured("interactive_title_generation_request.json")
    upstream.script(said('{"title": "Explain TCP slow start"}'))
    titled = client.post([{"role": "user", "content": (
        "<session>\nExplain TCP slow start briefly\n</session>\n\nWrite the title.")}],
        tools=[], system=sample["body"]["system"], output_config=sample["body"]["output_config"])
    # The same, as Claude Code 2.1.197 sent it (another session), and a quota check.
    upstream.script(said('{"title": "Explain TCP slow start"}'), said("ok"))
    replayed = replay(proxy.url, sample)
    quota = client.post([{"role": "user", "content": "quota"}], max_tokens=1, tools=[])
    upstream.script(said("About ten round trips."))
    t2 = client.ask("How long until it reaches 1 MB?")
    ok(t1, titled, replayed, quota, t2)
    wait_writer(proxy, written(5))

    found = only_conversation(proxy)
    assert found["request_count"] == 2
    assert_line(found, [t1.request_id, t2.request_id], "main", None)
    expected = {titled.request_id: (SESSION, "query_evaluation"),
                replayed.request_id: (sample["headers"]["X-Claude-Code-Session-Id"],
                                      "query_evaluation"),
                quota.request_id: (SESSION, "quota")}
    for request_id, (session_id, request_type) in expected.items():
        row = stored(proxy, request_id)
        assert (row["session_id"], row["request_type"]) == (session_id, request_type)
        assert row["conversation_id"] is None and row["branch_id"] is None
        assert row["parent_request_id"] is None and not row["is_subtask"]
    assert stored(proxy, t1.request_id)["request_type"] == "inference"


# ---------------------------------------------------------------------- 8. real traffic


def test_captured_claude_code_requests_link(database_url, start_proxy, upstream):
    proxy = start(start_proxy, database_url)
    turns = [captured(name) for name in ("turn1_request.json", "turn2_continue_request.json",
                                         "turn3_resume_request.json")]
    # Each answer is the assistant message the next request replays.
    upstream.script(Reply(content=assistant_messages(turns[1])[0]["content"]),
                    Reply(content=assistant_messages(turns[2])[1]["content"]),
                    said("banana, as asked."))
    turn_answers = [replay(proxy.url, sample) for sample in turns]

    tool_use, subagent, tool_result = (captured(f"agent_{name}_request.json") for name in (
        "parent_tool_use", "subagent", "parent_tool_result"))
    spawn = assistant_messages(tool_result)[0]
    upstream.script(Reply(content=spawn["content"], stop_reason="tool_use"),
                    said("Hello from the sub-agent."), said("The sub-agent said hello."))
    agent_answers = [replay(proxy.url, sample) for sample in (tool_use, subagent, tool_result)]
    ok(*turn_answers, *agent_answers)
    wait_writer(proxy, written(6))

    listed = {c["session_id"]: c for c in conversations(proxy)}
    assert set(listed) == {turns[0]["headers"]["X-Claude-Code-Session-Id"],
                           tool_use["headers"]["X-Claude-Code-Session-Id"]}

    found = conversation(proxy, listed[turns[0]["headers"]["X-Claude-Code-Session-Id"]]["id"])
    ids = [a.request_id for a in turn_answers]
    assert found["request_count"] == 3 and found["title"] == "first turn: remember the word banana"
    assert [step["id"] for step in found["requests"]] == ids
    assert_line(found, ids, "main", None)
    for step in found["requests"]:
        assert_plain(step)
    assert [b["branch_id"] for b in found["branches"]] == ["main"]

    found = conversation(proxy, listed[tool_use["headers"]["X-Claude-Code-Session-Id"]]["id"])
    by_id = steps(found)
    spawning, sub, result = (a.request_id for a in agent_answers)
    assert found["request_count"] == 3 and found["subtask_count"] == 1
    assert_line(found, [spawning, result], "main", None)
    assert_plain(by_id[result])
    assert by_id[sub]["branch_id"] == "subtask_1" and by_id[sub]["is_subtask"] is True
    assert by_id[sub]["parent_request_id"] == by_id[sub]["parent_task_request_id"] == spawning
    assert by_id[sub]["agent_id"] == subagent["headers"]["x-claude-code-agent-id"]
    assert [b["branch_id"] for b in found["branches"]] == ["main", "subtask_1"]
