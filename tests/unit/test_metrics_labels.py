"""Label values of the metrics stay bounded whatever clients send."""

from app.metrics.recorder import OTHER, LabelValues, attempt_failure, status_label


def test_client_chosen_values_are_capped():
    labels = LabelValues(limit=3)
    assert [labels(f"claude-model-{n}") for n in range(5)] == \
        ["claude-model-0", "claude-model-1", "claude-model-2", OTHER, OTHER]
    assert labels("claude-model-1") == "claude-model-1", "values seen keep their label"
    assert labels(None) == labels("") == "none"


def test_unsafe_values_are_other():
    labels = LabelValues()
    for value in ("has space", "new\nline", 'quo"te', "x" * 101, "-leading-dash", 42):
        assert labels(value) in (OTHER, "none")
    assert labels("us.anthropic.claude-sonnet-4-5-v1:0") == "us.anthropic.claude-sonnet-4-5-v1:0"
    assert labels("[::1]:3000") == "[::1]:3000"


def test_status_and_attempt_failure_labels():
    assert status_label(200) == "200" and status_label("client_disconnected") == \
        "client_disconnected"
    assert status_label(None) == "none" and status_label(999) == OTHER
    assert attempt_failure("ReadTimeout(ReadTimeoutError(...))") == "timeout"
    assert attempt_failure("ConnectTimeout('x')") == "timeout"
    assert attempt_failure("ConnectionError(MaxRetryError('Timeout while ...'))") == \
        "connection_error"
    assert attempt_failure(None) == "connection_error"
