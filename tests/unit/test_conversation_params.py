"""Parameters of `/api/conversations` and the branch kinds, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.api import params
from app.storage.conversation_queries import ConversationFilter, branch_kind
from tests.unit.params_support import args, refused

NOW = datetime(2025, 3, 14, 12, 0, tzinfo=UTC)



def parsed(**given) -> ConversationFilter:
    return params.conversation_filter(args(**given), now=NOW)



def test_no_parameters_filter_nothing():
    assert parsed() == ConversationFilter()
    assert parsed(domain="", account=" ", since="", until=" ", q="") == ConversationFilter()
    assert parsed(limit="10", offset="20") == ConversationFilter()


def test_values_map_to_filters():
    assert parsed(domain=" Team.Example.COM ", account="acc_1", q=" Two words ") == \
        ConversationFilter(domain="team.example.com", account="acc_1", text=" Two words ")


@pytest.mark.parametrize("raw, expected", [
    ("24h", NOW - timedelta(hours=24)),
    ("2w", NOW - timedelta(weeks=2)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=UTC)),
    ("2025-03-01T12:30:00+02:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
    ("2025-03-01T10:30:00", datetime(2025, 3, 1, 10, 30, tzinfo=UTC)),
])
def test_times_bound_the_last_activity(raw, expected):
    assert parsed(since=raw).since == expected
    assert parsed(until=raw).until == expected


def test_relative_times_count_back_from_the_given_now():
    later = NOW + timedelta(days=1)
    assert params.conversation_filter(args(since="1h"), now=later).since == \
        later - timedelta(hours=1)


@pytest.mark.parametrize("given, name", [
    ({"acount": "acc_1"}, "acount"),
    ({"model": "claude-sonnet-4-5"}, "model"),
    ({"conversation_id": "c1"}, "conversation_id"),
    ({"domain": ["a.example.com", "b.example.com"]}, "domain"),
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-02-30"}, "until"),
    ({"since": "2025-03-02", "until": "2025-03-01"}, "since"),
    ({"q": "a\x00b"}, "q"),
    ({"q": "x" * 1001}, "q"),
    ({"account": "a" * 501}, "account"),
])
def test_bad_filters_are_refused_naming_the_parameter(given, name):
    refused(lambda: parsed(**given), f"'{name}'")


def test_paging():
    assert params.conversation_paging({}) == (50, 0)
    assert params.conversation_paging(args(limit="10", offset="30", domain="x", q="y")) == \
        (10, 30)
    assert params.conversation_paging(args(limit="100000")) == (500, 0)
    refused(lambda: params.conversation_paging(args(limit="-1")), "'limit'")
    refused(lambda: params.conversation_paging(args(offset="1.5")), "'offset'")
    refused(lambda: params.conversation_paging(args(status="200")), "'status'")


@pytest.mark.parametrize("raw, expected", [
    ("0b6f2c1e-8a4b-4c3d-9e8f-0123456789ab", "0b6f2c1e-8a4b-4c3d-9e8f-0123456789ab"),
    ("0B6F2C1E-8A4B-4C3D-9E8F-0123456789AB", "0b6f2c1e-8a4b-4c3d-9e8f-0123456789ab"),
    ("conv-tie-a", "conv-tie-a"),
    ("Legacy_ID-7", "Legacy_ID-7"),    # not a uuid: kept as given
    ("x", "x"),
    ("x" * 64, "x" * 64),
    ("x" * 65, None),
    ("", None),
    ("../x", None),
    ("..", None),
    ("a.b", None),
    ("a b", None),
    (" conv-tie-a", None),
    ("conv-tie-a\n", None),
    ("x'--", None),
    ("a%2Fb", None),
    ("a\x00b", None),
    ("été", None),
    ("１２３", None),                   # full-width digits are not [0-9]
])
def test_conversation_ids(raw, expected):
    assert params.conversation_id(raw) == expected


def test_the_detail_takes_no_parameters():
    params.no_parameters({})
    refused(lambda: params.no_parameters(args(limit="1")), "'limit'", "takes none")


@pytest.mark.parametrize("branch_id, kind", [
    ("main", "main"),
    ("branch_1", "branch"),
    ("branch_12", "branch"),
    ("subtask_2", "subtask"),
    ("compact_1", "compact"),
    ("compact_", "branch"),           # not a numbered name: shown as a user branch
    ("branch_20250101120000", "branch"),
    ("compact_143649", "compact"),
    ("sidechain_1", "branch"),
    (None, "branch"),
])
def test_branch_kinds(branch_id, kind):
    assert branch_kind(branch_id) == kind
