"""Row 18 (privacy and escalation part): safe defaults, and a remote model without a
privacy policy fails at load with a message naming the field."""

import time

import pytest

from slmgraph import Config, ConfigError, load_config, models_from_config
from slmgraph.models._openai import OpenAIModel
from slmgraph.privacy import DetectorUnavailableError, GazetteerNameDetector, PrivacyGate, PrivacyPolicy
from slmgraph.privacy._wiring import gate_remote_models
from slmgraph.testing import ScriptedModel

SMALL = {"provider": "ollama", "model": "m"}


def test_defaults_are_safe():
    cfg = load_config(env={})
    assert cfg.large is None  # escalation is off unless a large model is named
    assert cfg.privacy is None
    assert "large" not in models_from_config(load_config(env={}, overrides={"small": SMALL}))
    assert PrivacyPolicy().action == "redact"  # a policy section with no action redacts
    assert load_config(env={"OPENAI_BASE_URL": "https://api.openai.com/v1"}).large is None


BAD = [
    ({"large": {"provider": "openai", "model": "gpt-x"}}, "privacy", "https://api.openai.com/v1"),
    ({"large": {"provider": "openai", "model": "gpt-x", "base_url": "https://llm.example.com/v1"}}, "privacy", "llm.example.com"),
    ({"large": {"provider": "ollama", "model": "big", "host": "http://192.168.1.20:11434"}}, "privacy", "192.168.1.20"),
    ({"small": {"provider": "ollama", "model": "m", "host": "http://gpu-box:11434"}}, "privacy", "small model"),
    ({"small": {"provider": "auto", "host": "http://gpu-box:11434"}}, "privacy", "gpu-box"),
    ({"models": {"coder": {"provider": "openai", "model": "c", "base_url": "https://x.example/v1"}}}, "privacy", "models.coder"),
    ({"privacy": {"action": "redakt"}}, "privacy.action", "redact"),
    ({"privacy": {"kinds": {"passport": "block"}}}, "privacy.kinds", "unknown PII kind 'passport'"),
    ({"privacy": {"acton": "block"}}, "privacy.acton", "Extra inputs"),
    ({"privacy": {"names": "spacy"}}, "privacy.names", "builtin"),
]


@pytest.mark.parametrize("overrides, field, says", BAD)
def test_bad_privacy_configs_fail_at_load_naming_the_field(overrides, field, says):
    with pytest.raises(ConfigError) as info:
        load_config(env={}, overrides=overrides)
    assert info.value.field == field
    assert field in str(info.value) and says in str(info.value)


def test_the_environment_alone_cannot_switch_on_an_ungated_cloud_model():
    with pytest.raises(ConfigError, match="SLMGRAPH_PRIVACY") as info:
        load_config(env={"SLMGRAPH_LARGE_MODEL": "gpt-4o-mini"})
    assert info.value.field == "privacy"
    cfg = load_config(env={"SLMGRAPH_LARGE_MODEL": "gpt-4o-mini", "SLMGRAPH_PRIVACY": "block"})
    assert cfg.privacy == PrivacyPolicy(action="block")


def test_toml_privacy_section(tmp_path):
    f = tmp_path / "slm.toml"
    f.write_text(
        '[large]\nprovider = "openai"\nmodel = "gpt-x"\nbase_url = "https://llm.example.com/v1"\napi_key = "k"\n'
        '[privacy]\naction = "redact"\nnames = "builtin"\nkinds = { card = "block", national_id = "block", ip = "allow" }\n'
    )
    cfg = load_config(f, env={})
    p = cfg.privacy
    assert (p.action_for("card"), p.action_for("us_ssn"), p.action_for("ipv6"), p.action_for("email")) == ("block", "block", "allow", "redact")
    large = models_from_config(cfg.model_copy(update={"small": Config().small.model_copy(update=SMALL)}))["large"]
    assert isinstance(large, PrivacyGate) and isinstance(large.name_detector, GazetteerNameDetector)


def test_local_endpoints_need_no_policy_and_are_not_gated():
    cfg = load_config(env={}, overrides={"small": SMALL, "large": {"provider": "openai", "model": "x", "base_url": "http://127.0.0.1:8000/v1"}})
    models = models_from_config(cfg)
    assert not any(isinstance(m, PrivacyGate) for m in models.values())


def test_every_remote_model_is_gated_and_local_ones_are_not():
    cfg = load_config(env={}, overrides={
        "small": SMALL,
        "large": {"provider": "openai", "model": "x", "base_url": "https://llm.example.com/v1", "api_key": "k"},
        "models": {"lan": {"provider": "ollama", "model": "y", "host": "http://10.0.0.7:11434"},
                   "here": {"provider": "ollama", "model": "z", "host": "http://localhost:11434"}},
        "privacy": {"action": "block"},
    })
    models = models_from_config(cfg)
    assert {k for k, m in models.items() if isinstance(m, PrivacyGate)} == {"large", "lan"}


def test_external_name_detector_is_required_when_the_policy_says_so():
    cfg = load_config(env={}, overrides={
        "small": SMALL,
        "large": {"provider": "openai", "model": "x", "base_url": "https://llm.example.com/v1", "api_key": "k"},
        "privacy": {"names": "external"},
    })
    with pytest.raises(DetectorUnavailableError):
        models_from_config(cfg)
    det = GazetteerNameDetector(["Zanele"])
    assert models_from_config(cfg, name_detector=det)["large"].name_detector is det


def test_the_factory_also_refuses_a_remote_endpoint_found_only_at_build_time(monkeypatch):
    # OPENAI_BASE_URL read by the backend itself, after the config was validated
    model = OpenAIModel("x", base_url="https://llm.example.com/v1", api_key="k")
    with pytest.raises(ConfigError) as info:
        gate_remote_models({"large": model, "small": ScriptedModel()}, None)
    assert info.value.field == "privacy" and "llm.example.com" in str(info.value)


def test_invalid_privacy_configs_rejected_and_time_to_fail():
    started = time.perf_counter()
    rejected = 0
    for overrides, _, _ in BAD:
        try:
            load_config(env={}, overrides=overrides)
        except ConfigError:
            rejected += 1
    per_config_ms = (time.perf_counter() - started) / len(BAD) * 1000
    print(f"\ninvalid privacy/escalation configs rejected at load: {rejected}/{len(BAD)}; mean time to fail {per_config_ms:.2f} ms")
    assert rejected == len(BAD)
