"""Tests for settings: defaults, flags, environment, parsing (synchronous)."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from pathlib import Path

import pytest

from tickcast.config import (
    ENV_PREFIX,
    Config,
    add_arguments,
    describe,
    from_sources,
    parse_bytes,
)
from tickcast.errors import ConfigError, TickcastError
from tickcast.sources.simulator import DEFAULT_AGENTS

MiB = 2**20


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tickcast serve")
    add_arguments(p)
    return p


def from_argv(argv: list[str], env: dict[str, str] | None = None) -> Config:
    return from_sources(parser().parse_args(argv), env or {})


# -- defaults (README) ---------------------------------------------------------------


def test_defaults_match_spec() -> None:
    c = Config()
    assert c.host == "127.0.0.1"
    assert c.port == 8000
    assert c.data_dir == Path("./segments")
    assert c.source == "sim"
    assert c.rate == 10
    assert c.agents == DEFAULT_AGENTS
    assert c.seed is None
    assert c.ring_size == 10_000
    assert c.heartbeat_s == 30
    assert c.max_lag is None
    assert c.lag_limit == c.ring_size
    assert c.max_connections == 10_000
    assert c.max_connections_per_ip == 100
    assert c.trusted_proxies == ()
    assert c.compression is True
    assert c.segment_bytes == 64 * MiB
    assert c.retain_bytes == 0
    assert c.retain_s == 0
    assert c.fsync == "interval"
    assert c.ingest_token is None


def test_from_sources_with_nothing_is_the_defaults() -> None:
    assert from_sources({}, {}) == Config()
    assert from_argv([]) == Config()


def test_unrelated_environment_is_ignored() -> None:
    assert from_sources({}, {"PATH": "/usr/bin", "TICKCASTX": "1", "HOME": "/"}) == Config()


def test_config_is_frozen() -> None:
    c = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.port = 1  # type: ignore[misc]


def test_lag_limit_follows_ring_size_unless_max_lag_is_set() -> None:
    assert Config(ring_size=500).lag_limit == 500
    assert Config(ring_size=500, max_lag=50).lag_limit == 50


def test_config_error_is_a_tickcast_error() -> None:
    assert issubclass(ConfigError, TickcastError)


# -- precedence -----------------------------------------------------------------------


def test_flag_beats_env_beats_default() -> None:
    env = {"TICKCAST_PORT": "8100", "TICKCAST_HOST": "0.0.0.0"}
    c = from_sources({"port": "8200"}, env)
    assert c.port == 8200  # flag over env
    assert c.host == "0.0.0.0"  # env over default
    assert c.rate == 10  # default


def test_flag_beats_env_through_argparse() -> None:
    c = from_argv(["--port", "8200", "--ring-size", "77"], {"TICKCAST_PORT": "8100"})
    assert c.port == 8200
    assert c.ring_size == 77
    assert c.lag_limit == 77


def test_unset_flag_lets_env_through() -> None:
    # argparse leaves every unset flag at None, which must not hide the variable.
    c = from_argv([], {"TICKCAST_RATE": "5", "TICKCAST_COMPRESSION": "off"})
    assert c.rate == 5
    assert c.compression is False


def test_env_rate() -> None:
    c = from_sources({}, {"TICKCAST_RATE": "5"})
    assert c.rate == 5.0
    assert isinstance(c.rate, float)


@pytest.mark.parametrize(
    ("env", "attr", "value"),
    [
        ({"TICKCAST_PORT": "0"}, "port", 0),
        ({"TICKCAST_RATE": "2.5"}, "rate", 2.5),
        ({"TICKCAST_SEED": "42"}, "seed", 42),
        ({"TICKCAST_SEED": "none"}, "seed", None),
        ({"TICKCAST_MAX_LAG": "17"}, "max_lag", 17),
        ({"TICKCAST_DATA_DIR": "/tmp/x"}, "data_dir", Path("/tmp/x")),
        ({"TICKCAST_SEGMENT_BYTES": "1MiB"}, "segment_bytes", MiB),
        ({"TICKCAST_RETAIN_BYTES": "2g"}, "retain_bytes", 2 * 2**30),
        ({"TICKCAST_RETAIN_S": "3600"}, "retain_s", 3600.0),
        ({"TICKCAST_FSYNC": "always"}, "fsync", "always"),
        ({"TICKCAST_HEARTBEAT_S": "0.5"}, "heartbeat_s", 0.5),
        ({"TICKCAST_MAX_CONNECTIONS": "3"}, "max_connections", 3),
        ({"TICKCAST_MAX_CONNECTIONS_PER_IP": "2"}, "max_connections_per_ip", 2),
        ({"TICKCAST_COMPRESSION": "false"}, "compression", False),
        ({"TICKCAST_COMPRESSION": "1"}, "compression", True),
    ],
)
def test_env_values_are_parsed(env: dict[str, str], attr: str, value: object) -> None:
    assert getattr(from_sources({}, env), attr) == value


def test_every_setting_has_an_env_var() -> None:
    for f in dataclasses.fields(Config):
        name = ENV_PREFIX + f.name.upper()
        # Known variables never count as unknown.
        try:
            from_sources({}, {name: "__bad__"})
        except ConfigError as exc:
            assert "unknown" not in str(exc), name
        else:
            # Free-text settings accept any string.
            free_text = ("host", "data_dir", "ingest_token", "read_token", "history_token")
            assert f.name in (*free_text, "redis_key"), f.name


# -- unknown and bad values -----------------------------------------------------------


def test_unknown_env_var_raises_naming_it() -> None:
    with pytest.raises(ConfigError, match="TICKCAST_FOO"):
        from_sources({}, {"TICKCAST_FOO": "1"})


def test_unknown_env_var_raises_even_beside_good_ones() -> None:
    with pytest.raises(ConfigError, match="TICKCAST_RATEE"):
        from_sources({}, {"TICKCAST_RATE": "5", "TICKCAST_RATEE": "5"})


def test_env_var_in_the_wrong_case_is_not_silently_ignored() -> None:
    # The variable for `port` is TICKCAST_PORT; TICKCAST_port is a typo that must
    # either take effect or stop start-up (README), not vanish.
    try:
        c = from_sources({}, {"TICKCAST_port": "9"})
    except ConfigError as exc:
        assert "TICKCAST_port" in str(exc)
    else:
        assert c.port == 9


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        ({}, {"TICKCAST_PORT": "abc"}, "TICKCAST_PORT"),
        ({"port": "abc"}, {}, "--port"),
        ({"port": "70000"}, {}, "port"),
        ({}, {"TICKCAST_PORT": "-1"}, "port"),
        ({"fsync": "sometimes"}, {}, "fsync"),
        ({"rate": "0"}, {}, "rate"),
        ({"rate": "fast"}, {}, "--rate"),
        ({}, {"TICKCAST_COMPRESSION": "maybe"}, "TICKCAST_COMPRESSION"),
        ({"segment_bytes": "12XB"}, {}, "segment-bytes"),
        ({"segment_bytes": "100"}, {}, "segment_bytes"),
        ({"source": "redis"}, {}, "source"),
        ({"ring_size": "0"}, {}, "ring_size"),
        ({"heartbeat_s": "0"}, {}, "heartbeat_s"),
        ({"max_lag": "0"}, {}, "max_lag"),
        ({"max_connections": "0"}, {}, "max_connections"),
        ({"max_connections_per_ip": "0"}, {}, "max_connections_per_ip"),
        ({"retain_s": "-1"}, {}, "retain_s"),
        ({"host": ""}, {}, "host"),
        ({}, {"TICKCAST_TRUSTED_PROXIES": "10.0.0.0/33"}, "TICKCAST_TRUSTED_PROXIES"),
        ({}, {"TICKCAST_SEED": "x"}, "TICKCAST_SEED"),
    ],
)
def test_bad_value_raises_naming_the_setting(
    args: dict[str, str], env: dict[str, str], names: str
) -> None:
    with pytest.raises(ConfigError) as info:
        from_sources(args, env)
    assert names in str(info.value)


def test_bad_flag_through_argparse_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="--port"):
        from_argv(["--port", "eighty"])


def test_ingest_requires_a_token() -> None:
    with pytest.raises(ConfigError, match="ingest_token"):
        from_sources({"source": "ingest"}, {})
    with pytest.raises(ConfigError, match="ingest_token"):
        Config(source="ingest")
    c = from_sources({"source": "ingest"}, {"TICKCAST_INGEST_TOKEN": "s3cret"})
    assert (c.source, c.ingest_token) == ("ingest", "s3cret")


# -- parse_bytes ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64MiB", 64 * MiB),
        ("64M", 64 * MiB),
        ("64 MiB", 64 * MiB),
        ("64mb", 64 * MiB),
        ("1g", 2**30),
        ("1GiB", 2**30),
        ("4096", 4096),
        ("4096b", 4096),
        ("8k", 8192),
        ("2KiB", 2048),
        ("1t", 2**40),
        ("0", 0),
    ],
)
def test_parse_bytes(text: str, value: int) -> None:
    assert parse_bytes(text) == value


@pytest.mark.parametrize("text", ["12XB", "", "MiB", "-1", "1.5M", "64 MiBs", "1e6"])
def test_parse_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_bytes(text)


# -- trusted_proxies ------------------------------------------------------------------


def test_trusted_proxies_parse_to_networks() -> None:
    c = from_sources({"trusted_proxies": "10.0.0.0/8, 127.0.0.1"}, {})
    assert c.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("127.0.0.1/32"),
    )
    assert ipaddress.ip_address("10.1.2.3") in c.trusted_proxies[0]


def test_trusted_proxies_from_env_with_ipv6() -> None:
    c = from_sources({}, {"TICKCAST_TRUSTED_PROXIES": "::1,fd00::/8"})
    assert c.trusted_proxies == (
        ipaddress.ip_network("::1/128"),
        ipaddress.ip_network("fd00::/8"),
    )


# -- argparse -------------------------------------------------------------------------


def test_help_lists_every_setting_flag() -> None:
    text = parser().format_help()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        assert flag in text, flag
    assert "--no-compression" in text
    assert "--help" in text


def test_help_shows_defaults() -> None:
    text = " ".join(parser().format_help().split())  # undo line wrapping
    assert "[default: 127.0.0.1]" in text
    assert "[default: 8000]" in text
    assert "[default: interval]" in text


def test_flags_use_dashes() -> None:
    c = from_argv(
        [
            "--data-dir",
            "/tmp/seg",
            "--max-connections-per-ip",
            "7",
            "--segment-bytes",
            "8MiB",
            "--trusted-proxies",
            "10.0.0.0/8",
        ]
    )
    assert c.data_dir == Path("/tmp/seg")
    assert c.max_connections_per_ip == 7
    assert c.segment_bytes == 8 * MiB
    assert c.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)


def test_no_compression_flag() -> None:
    assert from_argv(["--no-compression"]).compression is False
    assert from_argv(["--compression"]).compression is True
    assert from_argv([]).compression is True


def test_no_compression_flag_beats_env() -> None:
    c = from_argv(["--no-compression"], {"TICKCAST_COMPRESSION": "on"})
    assert c.compression is False
    c = from_argv(["--compression"], {"TICKCAST_COMPRESSION": "off"})
    assert c.compression is True


def test_flag_values_are_left_unparsed_by_argparse() -> None:
    ns = parser().parse_args(["--port", "9"])
    assert ns.port == "9"
    assert ns.rate is None


# -- describe -------------------------------------------------------------------------


def test_describe_lists_every_setting_and_masks_the_token() -> None:
    c = Config(source="ingest", ingest_token="s3cret")
    lines = describe(c)
    assert len(lines) == len(dataclasses.fields(Config))
    assert "ingest_token=***" in lines
    assert not any("s3cret" in line for line in lines)
    assert "port=8000" in lines


def test_describe_masks_a_password_in_a_url() -> None:
    c = Config(
        redis_url="redis://user:s3cret@10.0.0.5:6379/0",
        history_url="http://:pw@producer:8000",
        read_token="tok",
    )
    lines = describe(c)
    assert "redis_url=redis://user:***@10.0.0.5:6379/0" in lines
    assert "history_url=http://:***@producer:8000" in lines
    assert not any("s3cret" in line or ":pw@" in line for line in lines)
    plain = describe(Config(redis_url="redis://127.0.0.1:6379/0"))
    assert "redis_url=redis://127.0.0.1:6379/0" in plain


# -- scale-out settings (docs/scale-out.md) --------------------------------------------------------


def test_scale_out_settings_parse_from_flags_and_env() -> None:
    c = from_sources(
        {"redis_url": "redis://127.0.0.1:6379/0", "reuse_port": "on"},
        {"TICKCAST_REDIS_MAXLEN": "500", "TICKCAST_HISTORY_URL": "http://p:8000"},
    )
    assert (c.redis_url, c.reuse_port, c.redis_maxlen) == ("redis://127.0.0.1:6379/0", True, 500)
    assert (c.redis_key, c.history_url) == ("tickcast", "http://p:8000")
    assert Config().redis_url is None and Config().reuse_port is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"TICKCAST_REDIS_URL": "localhost:6379"}, "redis_url"),
        ({"TICKCAST_REDIS_MAXLEN": "0"}, "redis_maxlen"),
        ({"TICKCAST_HISTORY_URL": "ftp://x"}, "history_url"),
        ({"TICKCAST_REUSE_PORT": "maybe"}, "TICKCAST_REUSE_PORT"),
        ({"TICKCAST_CLOSE_GRACE_S": "0"}, "close_grace_s"),
    ],
)
def test_bad_scale_out_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        from_sources({}, env)
