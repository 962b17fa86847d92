"""Configuration: sources in order, and a broken config fails at load naming the field."""

from __future__ import annotations

import pytest

from slmgraph import ConfigError, load_config, models_from_config, prices_from_config


def test_defaults_have_no_large_model():
    cfg = load_config(env={})
    assert cfg.large is None  # escalation to a cloud model is off unless configured
    assert cfg.small.provider == "auto" and cfg.route_threshold == 0.5


def test_file_then_env_then_overrides(tmp_path):
    f = tmp_path / "slm.toml"
    f.write_text(
        'route_threshold = 0.7\n[small]\nprovider = "ollama"\nmodel = "qwen2.5:0.5b"\nnum_ctx = 8192\n'
        '[large]\nprovider = "openai"\nmodel = "gpt-x"\nbase_url = "http://127.0.0.1:9/v1"\n'
        "price = { input_per_mtok = 1.5, output_per_mtok = 6.0 }\n"
    )
    cfg = load_config(f, env={"SLMGRAPH_SMALL_MODEL": "llama3.2:1b"}, overrides={"route_threshold": 0.9})
    assert cfg.small.model == "llama3.2:1b" and cfg.small.num_ctx == 8192
    assert cfg.route_threshold == 0.9
    assert cfg.large.model == "gpt-x"
    prices = prices_from_config(cfg)
    # keyed by binding key; the baseline is the "large" entry's price
    assert prices.price("large").output_per_mtok == 6.0 and prices.baseline().output_per_mtok == 6.0


def test_extra_model_bindings(tmp_path):
    f = tmp_path / "slm.toml"
    f.write_text('[models.coder]\nprovider = "ollama"\nmodel = "qwen2.5-coder:1.5b"\nnum_ctx = 16384\n')
    models = models_from_config(load_config(f, env={}, overrides={"small": {"provider": "ollama", "model": "m"}}))
    assert set(models) == {"small", "coder"}
    assert (models["coder"].name, models["coder"].context_window) == ("qwen2.5-coder:1.5b", 16384)


def test_env_names_a_large_model():
    cfg = load_config(env={"SLMGRAPH_LARGE_MODEL": "big", "OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"})
    assert (cfg.large.provider, cfg.large.model, cfg.large.base_url) == ("openai", "big", "http://127.0.0.1:8000/v1")
    # a base URL alone does not switch escalation on
    assert load_config(env={"OPENAI_BASE_URL": "http://127.0.0.1:8000/v1"}).large is None


@pytest.mark.parametrize(
    "toml, field",
    [
        ('[small]\ntimeout = -1\n', "small.timeout"),
        ('[small]\nprovider = "vllm"\n', "small.provider"),
        ('[large]\nprovider = "openai"\nmodel = "m"\nbase_url = "ftp://x"\n', "large.base_url"),
        ('[large]\nprovider = "openai"\n', "large"),
        ("route_treshold = 0.3\n", "route_treshold"),  # a typo is an error, not ignored
        ("route_threshold = 3\n", "route_threshold"),
        ("[small\nprovider=1", "config"),
    ],
)
def test_bad_config_fails_at_load_naming_the_field(tmp_path, toml, field):
    f = tmp_path / "bad.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(f, env={})
    assert info.value.field == field
    assert field in str(info.value)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/slm.toml", env={})


def test_cloud_large_model_without_key_fails_when_bound(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = load_config(env={}, overrides={"small": {"provider": "ollama", "model": "m"},
                                         "large": {"provider": "openai", "model": "gpt-x", "base_url": "https://api.example.com/v1"},
                                         "privacy": {"action": "redact"}})
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        models_from_config(cfg)


def test_auto_small_model_falls_back_to_embedded_without_ollama(monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", "http://127.0.0.1:9")  # nothing listens on port 9
    cfg = load_config()
    models = models_from_config(cfg)
    assert models["small"].provider == "llamacpp"
    assert "large" not in models


def test_unset_overrides_never_clobber_file_or_env(tmp_path):
    f = tmp_path / "slm.toml"
    f.write_text('[large]\nprovider = "ollama"\nmodel = "llama3.1:70b"\n')
    cfg = load_config(
        f,
        env={"SLMGRAPH_LARGE_MODEL": "qwen2.5:32b"},
        overrides={"small": {"provider": None, "model": None}, "large": {"provider": None, "base_url": None}},
    )
    assert cfg.small.provider == "auto"
    assert (cfg.large.provider, cfg.large.model) == ("ollama", "qwen2.5:32b")  # the file's provider stands


def test_unreadable_config_paths_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})  # a directory
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b"route_threshold = 0.5 # caf\xe9\n")
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(bad, env={})
