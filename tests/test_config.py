from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.config import Config, load_config
from bridge.errors import ConfigError
from tests.helpers import bridge


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bridge.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_interface():
    config = Config()
    assert (config.topic_prefix, config.environment) == ("org.debian", "dev")
    assert config.smtp.listen == "127.0.0.1:8025"
    assert config.smtp.recipients == ["bridge@localhost"]
    assert config.bus.publish == "tcp://127.0.0.1:9940"
    assert config.bus.replay == "tcp://127.0.0.1:9941"
    assert config.state_dir.endswith("debian-bus-bridge")


def test_the_file_overlays_the_defaults(tmp_path):
    path = write(tmp_path, 'environment = "prod"\n[bus]\npublish = "tcp://127.0.0.1:5555"\n')
    config = load_config(path)
    assert config.environment == "prod"
    assert config.bus.publish == "tcp://127.0.0.1:5555"
    assert config.bus.replay == "tcp://127.0.0.1:9941"
    assert config.topic_prefix == "org.debian"


def test_bridge_config_variable_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BRIDGE_CONFIG", str(write(tmp_path, 'topic_prefix = "net.example"\n')))
    assert load_config().topic_prefix == "net.example"


def test_an_unknown_key_is_rejected_with_the_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, "[smtp]\nlisten_on = 'x'\n"))
    message = str(info.value)
    assert "smtp.listen_on" in message
    assert "smtp.listen" in message and "smtp.recipients" in message


def test_a_value_of_the_wrong_type_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="smtp.max_recipients.*integer"):
        load_config(write(tmp_path, "[smtp]\nmax_recipients = 'many'\n"))


def test_a_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("toml", "args", "expected"),
    [
        ("bogus = 1\n", ["parsers"], "unknown config key 'bogus'"),
        ("[bus\n", ["parsers"], "not valid TOML"),
        (
            '[trust]\nopenpgp = "sequoia"\n',
            ["parsers"],
            "config key 'trust.openpgp' must be one of builtin, gpgv, not 'sequoia'",
        ),
    ],
)
def test_cli_reports_config_errors_in_one_line(tmp_path, toml, args, expected):
    result = bridge(
        "--config",
        str(write(tmp_path, toml)),
        "--state-dir",
        str(tmp_path),
        "log",
        "--topic",
        "x",
        "{}",
    )
    err = result.stderr.decode()
    assert result.returncode != 0
    assert expected in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_cli_reports_a_missing_config_file_in_one_line(tmp_path):
    result = bridge("--config", str(tmp_path / "missing.toml"), "log", "--topic", "x", "{}")
    err = result.stderr.decode()
    assert result.returncode != 0
    assert "config file not found" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_web_tokens_are_tables_of_a_hash_and_topic_prefixes(tmp_path):
    good = "sha256:" + "0" * 64
    path = tmp_path / "bridge.toml"
    path.write_text(f'[web.tokens.ci]\nhash = "{good}"\ntopics = ["ci."]\n')
    assert load_config(path).web.tokens["ci"].topics == ["ci."]
    for table, says in (
        (f'hash = "{good}"\ntopics = ["ci."]\nscope = "all"', "valid keys: web.tokens.ci.hash"),
        ('hash = "letmein"\ntopics = ["ci."]', "sha256:<64 hex digits>"),
        (f'hash = "{good}"', "must name a topic prefix"),
    ):
        path.write_text(f"[web.tokens.ci]\n{table}\n")
        with pytest.raises(ConfigError, match=re.escape(says)):
            load_config(path)
    path.write_text('[web]\nlisten = "nowhere"\n')
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_config(path)


def test_the_readmes_configuration_examples_are_valid_configurations(tmp_path):
    """Every ```toml block of the README reads as a configuration (its rules included),
    once the secrets it elides are filled in."""
    import re

    from bridge.config import load_config
    from bridge.notify.rules import read_rules
    from tests.helpers import ROOT

    blocks = re.findall(r"```toml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 2
    for n, block in enumerate(blocks):
        path = tmp_path / f"example-{n}.toml"
        filled = block.replace('"whsec_…"', f'"whsec_{"A" * 44}"').replace(
            '"sha256:…"', f'"sha256:{"0" * 64}"'
        )
        path.write_text(filled)
        config = load_config(path)
        read_rules(config)
