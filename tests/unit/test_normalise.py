"""Tests for history normalisation and hashing (app.conversations.normalise), on synthetic
bodies, the real Claude Code 2.1.197 traffic (tests/data/traffic) and the original project's
linking fixtures (tests/data/anchor-fixtures: only their link decisions, not their hashes)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

import pytest

from app.conversations.normalise import (
    EMPTY,
    Shape,
    response_hash,
    shape,
    spawned_prompts,
    summary_key,
    text_hash,
)

DATA = Path(__file__).resolve().parent.parent / "data"
TRAFFIC = DATA / "traffic"
ANCHORS = DATA / "anchor-fixtures"
REMINDER = "<system-reminder>\nTodo list is empty.\n</system-reminder>"


@cache
def _load(path: str) -> dict:
    return json.loads((TRAFFIC / path).read_text())


def record(name: str) -> dict:
    """A copy of one captured request (`headers`, `body`, `response` summary)."""
    return copy.deepcopy(_load(name if "/" in name else f"{name}.json"))


def session_record(scenario: str, seq: str) -> dict:
    return record(f"sessions/{scenario}/{seq}_POST_v1_messages.json")


def session_seqs(scenario: str) -> list[str]:
    return sorted(p.name[:5] for p in (TRAFFIC / "sessions" / scenario).glob("*.json"))


def anchor(folder: str, name: str) -> dict:
    return json.loads((ANCHORS / folder / name).read_text())


def body(*messages: dict, system=None) -> dict:
    out = {"model": "claude-opus-4-8", "messages": list(messages)}
    if system is not None:
        out["system"] = system
    return out


def user(content) -> dict:
    return {"role": "user", "content": content}


def assistant(content) -> dict:
    return {"role": "assistant", "content": content}


def text(value: str, **extra) -> dict:
    return {"type": "text", "text": value, **extra}


def tool_use(tool_id: str, name: str = "Bash", tool_input=None, **extra) -> dict:
    return {"type": "tool_use", "id": tool_id, "name": name,
            "input": {"command": "ls"} if tool_input is None else tool_input, **extra}


def tool_result(tool_id: str, content="ok", **extra) -> dict:
    return {"type": "tool_result", "tool_use_id": tool_id, "content": content, **extra}


def image(data: str, media_type: str = "image/png", **extra) -> dict:
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data},
            **extra}


def hashes(b: dict) -> tuple:
    s = shape(b)
    return s.current_hash, s.parent_hash, s.ancestor_hashes, s.last_assistant_hash


# --- equivalences -----------------------------------------------------------------------------


def test_string_content_is_one_text_block():
    assert hashes(body(user("hi"))) == hashes(body(user([text("hi")])))
    assert hashes(body(user("hi"), assistant("hello"), user("ho"))) == hashes(
        body(user([text("hi")]), assistant([text("hello")]), user([text("ho")])))
    assert shape(body(user("hi"))).current_hash != shape(body(user("ho"))).current_hash
    assert shape(body(user("hi"))).current_hash != shape(body(assistant("hi"))).current_hash


def test_reminders_moved_between_turns_give_the_same_hashes():
    placed_first = body(user([text(REMINDER), text("hi")]), assistant("hello"), user("ho"))
    placed_last = body(user("hi"), assistant("hello"), user([text("ho"), text(REMINDER)]))
    inline = body(user(f"{REMINDER}\nhi"), assistant("hello"), user(f"ho {REMINDER}"))
    bare = body(user("hi"), assistant("hello"), user("ho"))
    assert hashes(placed_first) == hashes(placed_last) == hashes(inline) == hashes(bare)
    in_result = body(user("go"), assistant([tool_use("t1")]),
                     user([tool_result("t1", f"{REMINDER}files")]))
    in_result_blocks = body(user("go"), assistant([tool_use("t1")]),
                            user([tool_result("t1", [text(REMINDER), text("files")])]))
    plain = body(user("go"), assistant([tool_use("t1")]), user([tool_result("t1", "files")]))
    assert hashes(in_result) == hashes(in_result_blocks) == hashes(plain)
    # a message holding nothing but a reminder is dropped, not counted as an empty turn
    with_empty = body(user("hi"), assistant("hello"), user(REMINDER), user("ho"))
    assert shape(with_empty).current_hash == shape(bare).current_hash
    assert shape(with_empty).message_count == 4


def test_the_real_reminder_moves_of_fixture_03_keep_the_parent():
    # the original project's 03: the todo reminder moved from the first to the last user turn
    fixture = anchor("conversation-linking", "03-re-branching.json")
    parent, child = fixture["parent"]["body"], fixture["child"]["body"]
    assert REMINDER[:17] in json.dumps(parent["messages"][0]) and len(child["messages"]) == 3
    assert shape(child).parent_hash == shape(parent).current_hash


def test_cache_control_citations_thinking_and_is_error_are_ignored():
    plain = body(user("hi"), assistant([text("answer"), tool_use("t1")]),
                 user([tool_result("t1", "out")]))
    decorated = body(
        user([text("hi", cache_control={"type": "ephemeral"})]),
        assistant([{"type": "thinking", "thinking": "hmm", "signature": "sig"},
                    {"type": "redacted_thinking", "data": "xyz"},
                    text("answer", citations=[{"type": "char_location", "cited_text": "a"}]),
                    tool_use("t1", cache_control={"type": "ephemeral"})]),
        user([tool_result("t1", "out", is_error=False, cache_control={"type": "ephemeral"})]))
    assert hashes(plain) == hashes(decorated)
    cleared = copy.deepcopy(decorated)  # Claude Code may clear old thinking
    cleared["messages"][1]["content"][0]["thinking"] = ""
    assert hashes(cleared) == hashes(plain)
    # an answer of nothing but thinking is no turn at all
    only_thinking = body(user("hi"), assistant([{"type": "thinking", "thinking": "x"}]))
    assert shape(only_thinking).current_hash == shape(body(user("hi"))).current_hash
    assert shape(only_thinking).parent_hash is None


def test_text_is_stripped_of_surrounding_whitespace():
    # sessions/compaction: "Turn two" is sent with and without a trailing newline
    sent = [b["text"] for b in session_record("compaction", "00005")["body"]["messages"][3]
            ["content"]]
    resent = [b["text"] for b in session_record("compaction", "00007")["body"]["messages"][3]
              ["content"]]
    assert sent[0] + "\n" == resent[0]
    assert shape(body(user(sent[0]))).current_hash == shape(body(user(resent[0]))).current_hash
    assert shape(body(user("a b"))).current_hash != shape(body(user("a  b"))).current_hash


def test_system_entries_in_messages_are_ignored():
    plain = body(user("hi"), assistant("hello"), user("ho"))
    injected = body({"role": "system", "content": "Available agent types: ..."}, user("hi"),
                    {"role": "system", "content": [text("skills: ...")]}, assistant("hello"),
                    user("ho"), {"role": "system", "content": "more context"})
    assert hashes(plain) == hashes(injected)
    assert shape(injected).message_count == shape(plain).message_count == 3


def test_repeated_tool_turns_are_counted_once():
    once = body(user("go"), assistant([text("run it"), tool_use("t1")]),
                user([tool_result("t1", "out")]), user("next"))
    repeated = body(user("go"), assistant([text("run it"), tool_use("t1")]),
                    user([tool_result("t1", "out")]),
                    assistant([tool_use("t1")]),                     # only a repeat: dropped
                    user([tool_result("t1", "out"), text("next")]))  # the repeat alone dropped
    assert shape(repeated).current_hash == shape(once).current_hash
    assert shape(repeated).message_count == 5
    # the repeated block goes, the rest of its message stays
    kept = body(user("go"), assistant([text("run it"), tool_use("t1")]),
                user([tool_result("t1", "out")]), assistant([text("again"), tool_use("t1")]))
    without = body(user("go"), assistant([text("run it"), tool_use("t1")]),
                   user([tool_result("t1", "out")]), assistant([text("again")]))
    assert hashes(kept)[:3] == hashes(without)[:3]
    # the answer itself is hashed as recorded (the replay of a response is compared whole)
    assert shape(kept).last_assistant_hash == response_hash(kept["messages"][-1])
    # a new id is a new turn
    new_id = body(user("go"), assistant([text("run it"), tool_use("t1")]),
                  user([tool_result("t1", "out")]), assistant([tool_use("t2")]))
    assert shape(new_id).current_hash != shape(once).current_hash


def test_fixture_07_duplicated_tools_still_reach_the_parent():
    # the client repeated a whole tool turn; the stored parent is the nearest ancestor
    fixture = anchor("conversation-linking", "07-duplicated-tools.json")
    parent, child = shape(fixture["parent"]["body"]), shape(fixture["child"]["body"])
    assert parent.current_hash in child.ancestor_hashes
    assert response_hash(fixture["parent"]["response_body"]) in {
        response_hash(m) for m in fixture["child"]["body"]["messages"]
        if m["role"] == "assistant"}


def test_tool_input_is_canonical_json():
    def with_input(tool_input) -> str:
        return shape(body(user("go"), assistant([tool_use("t1", tool_input=tool_input)]))).\
            current_hash

    assert with_input({"a": 1, "b": "é"}) == with_input({"b": "é", "a": 1})
    assert with_input({"a": 1}) != with_input({"a": 2})
    assert with_input({"a": [1, 2]}) != with_input({"a": [2, 1]})
    other_name = body(user("go"), assistant([tool_use("t1", name="Read")]))
    assert shape(other_name).current_hash != shape(
        body(user("go"), assistant([tool_use("t1")]))).current_hash
    result_changed = body(user("go"), assistant([tool_use("t1")]), user([tool_result("t1", "x")]))
    assert shape(result_changed).current_hash != shape(
        body(user("go"), assistant([tool_use("t1")]), user([tool_result("t1", "y")]))).current_hash


def test_images_and_documents_count_by_media_type_and_data():
    def with_block(block) -> str:
        return shape(body(user([block, text("what is this?")]))).current_hash

    assert with_block(image("AAAA")) == with_block(image("AAAA", cache_control={"type": "x"}))
    assert with_block(image("AAAA")) != with_block(image("AAAB"))
    assert with_block(image("AAAA")) != with_block(image("AAAA", media_type="image/jpeg"))
    doc = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf",
                                          "data": "JVBERi0x"}}
    other = copy.deepcopy(doc)
    other["source"]["data"] = "JVBERi0y"
    assert with_block(doc) != with_block(other)
    assert with_block(doc) != with_block(image("JVBERi0x"))


def test_consecutive_messages_of_one_role_are_not_merged():
    two = shape(body(user("a"), user("b"))).current_hash
    assert two != shape(body(user("a\nb"))).current_hash
    assert two != shape(body(user([text("a"), text("b")]))).current_hash


# --- prefixes and ancestors -------------------------------------------------------------------


def test_hashes_chain_over_prefixes():
    messages = [user("task")]
    for i in range(60):
        messages += [assistant([text(f"step {i}"), tool_use(f"t{i}", tool_input={"i": i})]),
                     user([tool_result(f"t{i}", f"out {i}")])]
    full = shape(body(*messages))
    assert full.message_count == 121 and len(full.ancestor_hashes) == 60
    assert full.ancestor_hashes[0] == full.parent_hash
    for k, ancestor in enumerate(full.ancestor_hashes):
        upto = len(messages) - 2 * (k + 1)   # the history before the k-th assistant from the end
        assert shape(body(*messages[:upto])).current_hash == ancestor
    # the last assistant of the history, as its answer would have been recorded
    assert full.last_assistant_hash == response_hash(messages[-2])


def test_no_parent_without_an_assistant_message():
    s = shape(body(user("hi")))
    assert s.message_count == 1 and s.current_hash
    assert (s.parent_hash, s.ancestor_hashes, s.last_assistant_hash) == (None, (), None)
    assert shape(body()).current_hash is None


# real sessions: which earlier request each one continues (None: none of them)
SESSION_PARENTS = {
    "tool-loop": {"00003": None, "00004": "00003", "00005": "00004", "00006": "00005",
                  "00007": "00006"},
    # 00007 is /compact's summarisation request: it leaves out 00005's answer, so it continues
    # 00003; 00009 is the continuation carrying the summary (linked by summary, not prefix)
    "compaction": {"00003": None, "00005": "00003", "00007": "00003", "00009": None},
    # 00007, 00009 fork from 00005 (--fork-session), 00011 forks and rewinds to 00003,
    # 00013 rewinds in the original session, 00015 continues the rewind
    "fork": {"00003": None, "00005": "00003", "00007": "00005", "00009": "00005",
             "00011": "00003", "00013": "00003", "00015": "00013"},
    # 00004/00005: the two sub-agents' first requests; 00008: the parent gets both results
    "parallel-subagents": {"00003": None, "00004": None, "00005": None, "00006": "00005",
                           "00007": "00004", "00008": "00003"},
}


@pytest.mark.parametrize("scenario", sorted(SESSION_PARENTS))
def test_real_sessions_continue_their_parent_requests(scenario):
    seqs = session_seqs(scenario)
    assert seqs == sorted(SESSION_PARENTS[scenario])
    shapes = {seq: shape(session_record(scenario, seq)["body"]) for seq in seqs}
    found = {}
    for i, seq in enumerate(seqs):
        earlier = {shapes[s].current_hash: s for s in seqs[:i]}
        found[seq] = earlier.get(shapes[seq].parent_hash)
        # every stored ancestor of a request is one of the earlier requests of its session
        assert all(h in earlier or h not in {x.current_hash for x in shapes.values()}
                   for h in shapes[seq].ancestor_hashes)
    assert found == SESSION_PARENTS[scenario]


def test_turns_across_invocations_continue():
    turn1, turn2, turn3 = (shape(record(n)["body"]) for n in (
        "turn1_request", "turn2_continue_request", "turn3_resume_request"))
    assert turn2.parent_hash == turn1.current_hash       # --continue
    assert turn3.parent_hash == turn2.current_hash       # --resume
    assert turn3.ancestor_hashes == (turn2.current_hash, turn1.current_hash)
    tool_use_req, tool_result_req = (shape(record(n)["body"]) for n in (
        "agent_parent_tool_use_request", "agent_parent_tool_result_request"))
    assert tool_result_req.parent_hash == tool_use_req.current_hash


def recorded_answer(parent: dict, replay: dict) -> dict:
    """The answer to `parent` as the proxy would have recorded it, from what the next request
    replays (the traffic keeps only a summary of each response): blocks in the order the
    summary gives, fresh thinking, no cache_control, tool calls as the summary has them."""
    summary = parent["response"]
    replayed = [b for b in replay["content"] if b["type"] != "thinking"]
    uses = summary.get("tool_uses") or ([summary["tool_use"]] if "tool_use" in summary else [])
    content, texts, calls = [], iter(b for b in replayed if b["type"] == "text"), iter(uses)
    replayed_calls = [b for b in replayed if b["type"] == "tool_use"]
    for kind in summary["content_types"]:
        if kind == "thinking":
            content.append({"type": "thinking", "thinking": "recorded", "signature": "Eo0B"})
        elif kind == "text":
            content.append({"type": "text", "text": next(texts)["text"]})
        elif kind == "tool_use":
            call = next(calls)
            same = replayed_calls[len([b for b in content if b["type"] == "tool_use"])]
            assert (call["name"], call["input"]) == (same["name"], same["input"])
            content.append({"type": "tool_use", "id": call.get("id", same["id"]),
                            "name": call["name"], "input": call["input"]})
    return {"id": summary["message_id"], "type": "message", "role": "assistant",
            "model": "claude-opus-4-8", "content": content,
            "stop_reason": summary["stop_reason"], "stop_sequence": None}


@pytest.mark.parametrize("scenario,child,parent", [
    (scenario, child, parent) for scenario, links in sorted(SESSION_PARENTS.items())
    for child, parent in sorted(links.items()) if parent])
def test_last_assistant_hash_is_the_recorded_answer_of_the_parent(scenario, child, parent):
    child_rec, parent_rec = session_record(scenario, child), session_record(scenario, parent)
    s = shape(child_rec["body"])
    replay = [m for m in child_rec["body"]["messages"] if m["role"] == "assistant"][-1]
    answer = recorded_answer(parent_rec, replay)
    assert s.last_assistant_hash == response_hash(answer) is not None
    # an interrupted or differently spaced recording of another answer does not match
    other = copy.deepcopy(answer)
    other["content"] = [b for b in other["content"] if b["type"] != "tool_use"] + [
        text("extra")]
    assert response_hash(other) != s.last_assistant_hash


def test_response_hash_normalises_like_the_replay():
    answer = {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "t", "signature": "s"}, text("Done.\n"),
        tool_use("t9", tool_input={"b": 1, "a": 2})]}
    replay = body(user("go"), assistant([text("Done."), tool_use(
        "t9", tool_input={"a": 2, "b": 1}, cache_control={"type": "ephemeral"})]))
    assert response_hash(answer) == shape(replay).last_assistant_hash
    assert response_hash(answer["content"]) == response_hash(answer)
    assert response_hash({"role": "assistant", "content": [{"type": "thinking"}]}) is None
    assert response_hash({"role": "user", "content": "hi"}) is None
    assert response_hash(None) is None


# --- sub-agents -------------------------------------------------------------------------------


def answer_of(rec: dict) -> dict:
    """The recorded answer of a request whose response summary names its tool calls."""
    summary = rec["response"]
    uses = summary.get("tool_uses") or [dict(summary["tool_use"], id="toolu_recorded")]
    return {"role": "assistant", "content": [text("I'll use the Agent tool.")] + [
        {"type": "tool_use", "id": u["id"], "name": u["name"], "input": u["input"]}
        for u in uses]}


def test_subagent_prompt_matches_its_first_request():
    main = record("agent_parent_tool_use_request")
    sub = record("agent_subagent_request")
    prompts = spawned_prompts(answer_of(main))
    assert [p for _, p in prompts] == ["Reply with one short sentence from the sub-agent."]
    sub_shape = shape(sub["body"])
    assert sub_shape.single_user_text == "Reply with one short sentence from the sub-agent."
    assert text_hash(prompts[0][1]) == text_hash(sub_shape.single_user_text)
    assert sub_shape.is_subagent_marked is True
    assert shape(main["body"]).is_subagent_marked is False
    assert shape(main["body"]).single_user_text != sub_shape.single_user_text


def test_parallel_subagents_match_their_prompts():
    parent = session_record("parallel-subagents", "00003")
    prompts = spawned_prompts(answer_of(parent))
    assert len(prompts) == 2
    subs = {seq: session_record("parallel-subagents", seq) for seq in ("00004", "00005")}
    by_text = {text_hash(shape(r["body"]).single_user_text): seq for seq, r in subs.items()}
    matched = {tool_id: by_text.get(text_hash(prompt)) for tool_id, prompt in prompts}
    assert sorted(matched.values()) == ["00004", "00005"]
    assert all(shape(r["body"]).is_subagent_marked for r in subs.values())
    # a sub-agent's later request is no prompt candidate
    assert shape(session_record("parallel-subagents", "00006")["body"]).single_user_text is None


def test_spawned_prompts_take_task_and_agent_calls_only():
    message = {"role": "assistant", "content": [
        text("delegating"),
        tool_use("t1", name="Task", tool_input={"prompt": "old style", "description": "d"}),
        tool_use("t2", name="Bash", tool_input={"prompt": "not an agent"}),
        tool_use("t3", name="Agent", tool_input={"prompt": "new style"}),
        tool_use("t4", name="Agent", tool_input={"description": "no prompt"}),
        tool_use("t5", name="Agent", tool_input="not a dict")]}
    assert spawned_prompts(message) == [("t1", "old style"), ("t3", "new style")]
    assert spawned_prompts(message["content"]) == spawned_prompts(message)
    assert spawned_prompts({"role": "assistant", "content": "text"}) == []


@pytest.mark.parametrize("name,matches", [
    ("04-second-subtask.json", True), ("06-subtask-check.json", True)])
def test_original_subtask_fixtures_match_by_prompt(name, matches):
    fixture = anchor("subtask-linking", name)
    child = shape(fixture["child"]["body"])
    prompts = spawned_prompts(fixture["parent"]["response_body"])
    assert [text_hash(p) == text_hash(child.single_user_text) for _, p in prompts] == [matches]
    assert child.is_subagent_marked is False   # older clients sent no billing block


def test_original_subtask_invocations_and_proxy_fixture():
    for name, expected in (("01-subtask-matched.json", True), ("02-subtask-no-match.json", False),
                           ("03-subtask-expired.json", True)):  # 03: only the window differs
        fixture = anchor("subtask-linking", name)
        child = shape(fixture["child"]["body"])
        prompt = fixture["parent"]["task_invocations"][0]["prompt"]
        assert (text_hash(prompt) == text_hash(child.single_user_text)) is expected, name
    fixture = anchor("conversation-linking", "11-proxy-linking.json")
    (_, prompt), = spawned_prompts(fixture["parent"]["response_body"])
    assert text_hash(prompt) == text_hash(shape(fixture["child"]["body"]).single_user_text)


def test_text_hash_normalises_like_single_user_text():
    assert text_hash("  do it\n") == text_hash("do it") == text_hash(f"{REMINDER}do it")
    assert text_hash("do it") != text_hash("do it now")
    s = shape(body(user([text(REMINDER), text("do it\n", cache_control={"type": "x"})])))
    assert s.single_user_text == "do it" and text_hash(s.single_user_text) == text_hash("do it")
    assert shape(body(user([text("a"), text("b")]))).single_user_text == "a\nb"
    assert shape(body(user([tool_result("t", "x")]))).single_user_text is None
    assert shape(body(user("a"), assistant("b"))).single_user_text is None


# --- compaction -------------------------------------------------------------------------------


def test_compaction_session_flags():
    shapes = {seq: shape(session_record("compaction", seq)["body"])
              for seq in session_seqs("compaction")}
    assert {seq: s.is_compaction_request for seq, s in shapes.items()} == {
        "00003": False, "00005": False, "00007": True, "00009": False}
    assert {seq: s.compaction_summary for seq, s in shapes.items()} == {
        "00003": None, "00005": None, "00007": None,
        "00009": "1. Primary Request and Intent: fake summary for testing."}
    # /compact again on an already compacted session: both at once
    again = shape(record("compact_request")["body"])
    assert again.is_compaction_request and again.compaction_summary


def test_summary_key_of_a_claude_code_2_1_answer_matches_the_continuation():
    # the traffic has no response text: the answer in the format the request asks for
    continuation = shape(session_record("compaction", "00009")["body"])
    answer = ("<analysis>\n" + "The user asked me to remember things. " * 80 + "</analysis>\n\n"
              "<summary>\n1. Primary Request and Intent: fake   summary for testing.\n</summary>")
    assert summary_key(answer) == summary_key(continuation.compaction_summary)
    assert summary_key(answer) == "1. primary request and intent: fake summary for testing"


def answer_text(message: dict) -> str:
    return "\n".join(b["text"] for b in message["content"] if b.get("type") == "text")


def test_summary_key_fixture_04_summarisation_answer_is_the_continuation_summary():
    fixture = anchor("conversation-linking", "04-compact.json")
    parent, child = shape(fixture["parent"]["body"]), shape(fixture["child"]["body"])
    assert parent.is_compaction_request and not child.is_compaction_request
    assert child.compaction_summary is not None and parent.compaction_summary is None
    key = summary_key(answer_text(fixture["parent"]["response_body"]))
    assert key and key == summary_key(child.compaction_summary)
    assert key.startswith("1. primary request and intent: the user has not made")
    # the old client's continuation text: "Analysis: … Summary: …" keys the same
    expected = fixture["expectedSummaryContent"].split("\nCaveat:")[0]
    assert summary_key(expected) == key


@pytest.mark.parametrize("name", ["05-compact-follow-up.json", "06-compact-weird.json"])
def test_summary_key_fixtures_05_06_follow_ups_carry_the_same_summary(name):
    # 05 and 06: the parent is itself a continuation (no summarisation answer): the child
    # continues it by prefix and carries the same summary
    fixture = anchor("conversation-linking", name)
    parent, child = shape(fixture["parent"]["body"]), shape(fixture["child"]["body"])
    assert child.parent_hash == parent.current_hash
    key = summary_key(child.compaction_summary)
    assert key and key == summary_key(parent.compaction_summary)
    assert key[:200] in " ".join(fixture["expectedSummaryContent"].lower().split())
    assert key[:200] not in summary_key(answer_text(fixture["parent"]["response_body"]))
    assert not child.compaction_summary.lower().startswith(("analysis:", "please continue"))
    assert "please continue the conversation" not in key


def test_summary_key_form():
    assert summary_key("  Hello\n\n  World  ") == "hello world"
    assert summary_key("<summary>A\nB</summary> trailing") == "a b"
    assert summary_key("<analysis>x</analysis>") == "analysis: x"
    assert summary_key("Analysis:\nthinking\n\nSummary:\nthe point.") == "the point"
    assert summary_key("X" * 5000) == "x" * 2000
    assert summary_key("word " * 1000) == ("word " * 400).strip()
    assert summary_key(None) == "" and summary_key("") == ""


def test_compaction_request_detection_needs_the_last_user_message():
    ask = "Your task is to create a detailed summary of the conversation so far, paying close"
    assert shape(body(user("hi"), assistant("yo"), user(ask))).is_compaction_request
    assert not shape(body(user(ask), assistant("yo"), user("next"))).is_compaction_request


# --- system prompt, counts -----------------------------------------------------


@pytest.mark.parametrize("scenario,groups", [
    ("tool-loop", [["00003", "00004", "00005", "00006", "00007"]]),
    ("compaction", [["00003", "00005", "00007", "00009"]]),
    ("fork", [["00003", "00005", "00007", "00009", "00011", "00013", "00015"]]),
    ("parallel-subagents", [["00003", "00008"], ["00004", "00005", "00006", "00007"]]),
])
def test_system_hash_is_stable_within_a_session(scenario, groups):
    hashes_by_group = []
    for group in groups:
        records = [session_record(scenario, seq) for seq in group]
        found = {shape(r["body"]).system_hash for r in records}
        assert len(found) == 1 and None not in found
        hashes_by_group.append(found.pop())
    assert len(set(hashes_by_group)) == len(groups)   # main agent and sub-agents differ


def test_system_hash_ignores_the_real_volatile_parts():
    # compaction 00003 → 00005: the model line loses "(1M context)"; 00009: a new cc_version
    first, second, later = (session_record("compaction", s)["body"]["system"]
                            for s in ("00003", "00005", "00009"))
    assert first[2]["text"] != second[2]["text"] and first[0]["text"] != later[0]["text"]
    main = shape(record("agent_parent_tool_use_request")["body"]).system_hash
    assert main == shape(record("turn2_continue_request")["body"]).system_hash
    assert main != shape(session_record("compaction", "00003")["body"]).system_hash  # other dir


def test_system_hash_of_an_old_style_prompt():
    # an old client's prompt: <env> with today's date, the gitStatus section at the end
    system = anchor("subtask-linking", "05-subtask-follow.json")["child"]["body"]["system"]
    base = shape(body(user("x"), system=system)).system_hash
    changed = copy.deepcopy(system)
    prompt = changed[1]["text"]
    for old, new in (("Today's date: 2025-06-27", "Today's date: 2025-06-28"),
                     ("Current branch: add-contact-footer-section", "Current branch: other"),
                     ("Status:\n(clean)", "Status:\n M src/app.ts\n?? notes.md"),
                     ("680f5e0 Enhance", "123abcd Something else\n680f5e0 Enhance")):
        assert old in prompt
        prompt = prompt.replace(old, new)
    changed[1]["text"] = prompt + f"\n{REMINDER}"
    assert shape(body(user("x"), system=changed)).system_hash == base
    as_string = "\n".join(b["text"] for b in changed)
    assert shape(body(user("x"), system=as_string)).system_hash == shape(
        body(user("x"), system="\n".join(b["text"] for b in system))).system_hash
    real_change = copy.deepcopy(system)
    real_change[1]["text"] = real_change[1]["text"].replace("Platform: darwin", "Platform: linux")
    assert shape(body(user("x"), system=real_change)).system_hash != base
    assert shape(body(user("x"))).system_hash is None


def test_billing_block_marks_subagents_and_is_left_out():
    main = [text("x-anthropic-billing-header: cc_version=2.1.197.4fa; cc_entrypoint=sdk-cli;"),
            text("You are an agent.")]
    sub = [text("x-anthropic-billing-header: cc_version=2.1.197.8ad; cc_entrypoint=sdk-cli; "
                "cc_is_subagent=true;"), text("You are an agent.")]
    assert shape(body(user("x"), system=main)).is_subagent_marked is False
    assert shape(body(user("x"), system=sub)).is_subagent_marked is True
    assert shape(body(user("x"), system=main)).system_hash == shape(
        body(user("x"), system=sub)).system_hash == shape(
        body(user("x"), system="You are an agent.")).system_hash
    # the flag only counts in the billing block
    quoted = [text("Docs: set cc_is_subagent=true to mark sub-agents.")]
    assert shape(body(user("x"), system=quoted)).is_subagent_marked is False


@pytest.mark.parametrize("name,count", [
    ("print_main_request", 1), ("turn2_continue_request", 3), ("turn3_resume_request", 5),
    ("agent_parent_tool_result_request", 3), ("model_haiku_request", 1),
    ("sessions/tool-loop/00007_POST_v1_messages.json", 9),
    ("sessions/compaction/00009_POST_v1_messages.json", 5), ("head_preconnect", 0)])
def test_message_count_of_real_requests(name, count):
    assert shape(record(name).get("body")).message_count == count


def test_all_real_requests_keep_the_shape_invariants():
    for path in sorted(TRAFFIC.rglob("*.json")):
        s = shape(json.loads(path.read_text()).get("body"))
        assert isinstance(s, Shape)
        assert (s.parent_hash is None) == (not s.ancestor_hashes), path.name
        assert not s.ancestor_hashes or s.ancestor_hashes[0] == s.parent_hash
        assert (s.last_assistant_hash is None) == (s.parent_hash is None), path.name
        assert len(set(s.ancestor_hashes)) == len(s.ancestor_hashes)


# --- robustness -------------------------------------------------------------------------------


def deeply_nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


def odd_bodies() -> list:
    cycle: dict = {"a": 1}
    cycle["self"] = cycle
    nested = deeply_nested(100_000)
    return [
        None, [], "x", 0, 1.5, True, {}, {"messages": "x"}, {"messages": None},
        {"messages": {"role": "user"}}, {"messages": [None, 1, "x", [], {}, {"role": 5}]},
        {"messages": [{"role": "user", "content": 123}, {"role": "assistant"}]},
        {"messages": [{"role": "user", "content": [None, 1, [], "bare string", {"type": 3},
                                                  {"type": "text", "text": None},
                                                  {"type": "text", "text": ["x"]}]}]},
        {"messages": [{"role": "user", "content": {"type": "text", "text": "dict content"}}]},
        {"messages": [user("go"), assistant([tool_use("t1", tool_input=nested)])]},
        {"messages": [user("go"), assistant([tool_use("t1", tool_input=cycle)])]},
        {"messages": [user("go"), assistant([tool_use("t1", tool_input={1: "x", "a": 2})])]},
        {"messages": [user("go"), assistant([tool_use(None, name=None, tool_input=set())])]},
        {"messages": [user([tool_result(None, content=nested)]),
                      user([tool_result("t", content=[{"type": "tool_result",
                                                       "content": nested}])])]},
        {"messages": [user([{"type": "image", "source": None}, {"type": "image"},
                            {"type": "document", "source": {"type": "content",
                                                            "content": nested}}])]},
        {"messages": [user("\ud800 lone surrogate"), assistant([text("\udfff")])]},
        {"messages": [user("<system-reminder>unclosed " * 1000)]},
        {"messages": [user("hi")], "system": 5},
        {"messages": [user("hi")], "system": [1, None, {"text": 3}, {"type": "text"}]},
        {"messages": [user("hi")], "system": {"text": "dict"}},
        {"messages": [user([{"type": "text", "text": "This session is being continued from "
                                                     "a previous conversation"}])]},
        {"messages": [user([tool_result("t", [{"type": "text", "text": None}, "agentId: x"])])]},
    ]


def test_odd_bodies_never_raise():
    for odd in odd_bodies():
        s = shape(odd)
        assert isinstance(s, Shape)
        response_hash(odd)
        spawned_prompts(odd)
        messages = odd.get("messages") if isinstance(odd, dict) else None
        for message in messages if isinstance(messages, list) else [odd]:
            assert response_hash(message) is None or len(response_hash(message)) == 64
            assert isinstance(spawned_prompts(message), list)
        assert isinstance(text_hash(odd), str) and isinstance(summary_key(odd), str)
    assert shape(None) == EMPTY and shape({"messages": "x"}) == EMPTY


def test_odd_parts_degrade_only_themselves():
    nested = body(user("go"), assistant([tool_use("t1", tool_input=deeply_nested(100_000))]))
    s = shape(nested)
    assert s.current_hash and s.parent_hash == shape(body(user("go"))).current_hash
    junk = body(user("hi"), {"role": "user", "content": 5}, "junk", assistant("yo"))
    assert shape(junk).current_hash == shape(body(user("hi"), assistant("yo"))).current_hash
    assert shape(junk).message_count == 3
    assert shape(body(user("\ud800"))).current_hash != shape(body(user("\udfff"))).current_hash


def test_large_history_is_hashed_in_one_pass():
    chunk = "x" * 400
    messages = [user("start")]
    for i in range(1500):
        messages += [assistant([text(f"{chunk} {i}"), tool_use(f"t{i}")]),
                     user([tool_result(f"t{i}", chunk)])]
    s = shape(body(*messages))
    assert s.message_count == 3001 and len(s.ancestor_hashes) == 1500
