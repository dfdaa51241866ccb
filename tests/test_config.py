from contextlib import nullcontext as does_not_raise

import pytest

from edge_app.config import (
    AppConfig,
    ConfigError,
    PolicyConfig,
    SourceConfig,
    TrackerConfig,
    config_from_dict,
    load_config,
)


@pytest.mark.parametrize(
    ("data", "expectation"),
    [
        ({}, does_not_raise()),
        ({"policy": {"threshold_age": 21, "margin_years": 6.5}}, does_not_raise()),
        ({"policy": {"threshold_age": "eighteen"}},
         pytest.raises(ConfigError, match="policy.threshold_age = 'eighteen'")),
        ({"policy": {"threshold_age": 0}}, pytest.raises(ConfigError, match="threshold_age.*in \\[1, 120\\]")),
        ({"policy": {"margin_years": -1}}, pytest.raises(ConfigError, match="policy.margin_years = -1")),
        ({"policy": {"treshold_age": 18}}, pytest.raises(ConfigError, match="unknown config key policy.treshold_age")),
        ({"polcy": {}}, pytest.raises(ConfigError, match="unknown config section \\[polcy\\]")),
        # an older release's key, on another scale: named, with what replaced it
        ({"quality": {"min_sharpness": 20.0}},
         pytest.raises(ConfigError, match="quality.min_sharpness is retired.*set quality.min_smoothed_sharpness")),
        ({"quality": {"min_smoothed_sharpness": 4.0}}, does_not_raise()),
        ({"policy": 18}, pytest.raises(ConfigError, match="must be a table")),
        ({"detector": {"min_detection_confidence": 1.5}}, pytest.raises(ConfigError, match="min_detection_confidence")),
        ({"detector": {"max_input_side_px": 0}}, does_not_raise()),
        ({"detector": {"max_input_side_px": 64}},
         pytest.raises(ConfigError, match="max_input_side_px = 64.*0 \\(off\\) or an integer in \\[128, 8192\\]")),
        ({"detector": {"max_input_side_px": 320.5}}, pytest.raises(ConfigError, match="max_input_side_px = 320.5")),
        ({"tracker": {"window": 2, "min_estimates": 3}}, pytest.raises(ConfigError, match="tracker.min_estimates")),
        ({"tracker": {"max_missing_ms": 1.5}}, pytest.raises(ConfigError, match="an integer")),
        ({"source": {"loop": "yes"}}, pytest.raises(ConfigError, match="source.loop")),
        ({"age_model": {"num_threads": 0}}, pytest.raises(ConfigError, match="age_model.num_threads")),
        ({"output": {"display": 1}}, pytest.raises(ConfigError, match="output.display")),
    ],
)
def test_config_validation_table(data, expectation):
    with expectation:
        config_from_dict(data)


def test_load_config_reads_toml_and_flags_override(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[policy]\nthreshold_age = 21\n\n[source]\nsource = "/dev/video2"\n')
    config = load_config(path)
    assert config.policy.threshold_age == 21 and config.source.source == "/dev/video2"
    assert config.override("policy", threshold_age=18, margin_years=None).policy.threshold_age == 18
    assert config.override("policy", margin_years=None) is config


@pytest.mark.parametrize(
    ("content", "match"),
    [(None, "does not exist"), ("threshold_age = = 3", "not valid TOML"), (b"\xff\xfe", "not valid TOML")],
)
def test_load_config_bad_files(tmp_path, content, match):
    path = tmp_path / "config.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_defaults_are_valid():
    config = AppConfig()
    assert isinstance(config.source, SourceConfig) and isinstance(config.tracker, TrackerConfig)
    assert PolicyConfig().margin_years is None  # the card's MAE decides


def test_example_config_names_every_key_and_loads():
    import dataclasses
    import re

    from edge_app.config import PROJECT_ROOT

    path = PROJECT_ROOT / "systemd" / "config.toml"
    config = load_config(path)
    assert config.policy.threshold_age == 18 and config.output.display is True
    text = path.read_text()
    for section in dataclasses.fields(AppConfig):
        for key in dataclasses.fields(getattr(config, section.name)):
            assert re.search(rf"^#? ?{key.name} = ", text, re.M), f"{section.name}.{key.name} is not documented"
