import pytest

from app.config import SETTINGS, ConfigError, load_settings


def test_defaults_parse():
    settings = load_settings(environ={}, env_file=None)
    assert settings.port == 3000
    assert settings.host == "127.0.0.1"
    assert settings.claude_api_base_url == "https://api.anthropic.com"
    assert settings.claude_api_timeout == 600.0
    assert settings.upstream_max_retries == 2
    assert settings.max_request_bytes == 33554432
    assert settings.debug is False


def test_environment_beats_env_file_and_overrides_beat_both(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("PORT=4000\nLOG_LEVEL=debug\nDEBUG=yes\n")
    settings = load_settings(environ={"PORT": "5000"}, env_file=env_file)
    assert settings.port == 5000
    assert settings.log_level == "debug"
    assert settings.debug is True
    settings = load_settings(environ={"PORT": "5000"}, env_file=env_file,
                             overrides={"PORT": 6000})
    assert settings.port == 6000


def test_base_url_is_normalised():
    settings = load_settings(environ={"CLAUDE_API_BASE_URL": "http://127.0.0.1:8787/"},
                             env_file=None)
    assert settings.claude_api_base_url == "http://127.0.0.1:8787"


@pytest.mark.parametrize("name, value, fragment", [
    ("PORT", "abc", "whole number"),
    ("PORT", "70000", "between 1 and 65535"),
    ("CLAUDE_API_TIMEOUT", "soon", "seconds"),
    ("CLAUDE_API_TIMEOUT", "0", "above 0"),
    ("CLAUDE_API_BASE_URL", "ftp://example.com", "http"),
    ("CLAUDE_API_BASE_URL", "api.anthropic.com", "http"),
    ("DEBUG", "maybe", "true or false"),
    ("LOG_FORMAT", "xml", "text, json"),
    ("UPSTREAM_MAX_RETRIES", "-1", "between 0 and 10"),
])
def test_bad_value_names_the_variable_in_one_line(name, value, fragment):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={name: value}, env_file=None)
    message = str(info.value)
    assert message.startswith(f"{name}=")
    assert fragment in message
    assert "\n" not in message


def test_unknown_override_is_refused():
    with pytest.raises(ConfigError, match="NOPE"):
        load_settings(environ={}, env_file=None, overrides={"NOPE": 1})


def test_every_setting_has_help_and_a_parseable_default():
    for setting in SETTINGS:
        assert setting.help.strip(), setting.name
        setting.parse(setting.default)
