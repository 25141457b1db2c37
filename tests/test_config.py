"""params.yaml: one loader, frozen typed models, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from motops.config import Params, dump_params, load_params
from motops.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


def test_repository_params_load_and_match_documented_defaults():
    params = load_params(PARAMS)
    assert params == Params()
    assert params.data.uses_synthetic
    # every stage of the architecture has its section
    for section in ("data", "validation", "prepare", "detector", "reid", "export", "track", "evaluate",
                    "gates", "registry", "fleet", "orchestration"):
        assert section in Params.model_fields


def test_default_synthetic_footage_spans_fps_cameras_and_crowds():
    synth = load_params(PARAMS).data.synthetic
    assert min(synth.fps) <= 5 and max(synth.fps) >= 30
    assert {"static", "pan", "jitter"} <= set(synth.camera)
    assert max(synth.people) >= 30 and min(synth.people) <= 10
    assert synth.min_person_height <= 16


def test_params_are_frozen():
    params = load_params(PARAMS)
    with pytest.raises(ValidationError):
        params.detector.epochs = 3


def test_typo_names_file_line_key_and_closest_key(tmp_path):
    lines = PARAMS.read_text().splitlines()
    line = next(i for i, t in enumerate(lines) if t.startswith("  epochs:")) + 1  # detector's, the first
    lines[line - 1] = "  epoch: 4"
    text = "\n".join(lines) + "\n"
    bad = tmp_path / "params.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    message = str(err.value)
    assert f"{bad}:{line}" in message
    assert "detector.epoch" in message
    assert "did you mean 'detector.epochs'" in message


def test_unknown_section_is_refused(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("trackr:\n  tracker: bytetrack\n")
    with pytest.raises(ConfigError, match=r"params.yaml:1: unknown key 'trackr'. did you mean 'track'"):
        load_params(bad)


def test_out_of_range_names_key_and_allowed_range():
    with pytest.raises(ConfigError) as err:
        load_params(PARAMS, ["detector.epochs=0"])
    message = str(err.value)
    assert "override -S detector.epochs=0" in message
    assert "'detector.epochs'" in message and ">= 1" in message


def test_wrong_type_and_bad_choice_are_refused():
    with pytest.raises(ConfigError, match=r"'reid.p_ids'.*valid integer"):
        load_params(PARAMS, ["reid.p_ids=many"])
    with pytest.raises(ConfigError, match=r"'track.tracker'.*allowed: 'bytetrack', 'botsort'"):
        load_params(PARAMS, ["track.tracker=sort"])


def test_overrides_use_dvc_exp_syntax_and_yaml_values():
    params = load_params(
        PARAMS,
        ["data.synthetic.frames=30", "data.synthetic.fps=[5, 25]", "gates.hota_min=0.4",
         "data.sources=[synthetic, {format: mot, path: data/raw/mot17}]"],
    )
    assert params.data.synthetic.frames == 30
    assert params.data.synthetic.fps == (5.0, 25.0)
    assert params.gates.hota_min == 0.4
    assert params.data.sources[1].format == "mot"
    # the file on disk is untouched
    assert load_params(PARAMS).data.synthetic.frames == 150


def test_override_typo_is_blamed_on_the_override():
    with pytest.raises(ConfigError) as err:
        load_params(PARAMS, ["data.synthetc.frames=3"])
    assert "override -S data.synthetc.frames=3" in str(err.value)
    assert "did you mean 'data.synthetic'" in str(err.value)


def test_source_entry_typo_suggests_field():
    with pytest.raises(ConfigError, match=r"'data.sources.0.fsp'. did you mean 'data.sources.0.fps'"):
        load_params(PARAMS, ["data.sources=[{format: mot, path: x, fsp: 3}]"])


def test_malformed_override_and_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_params(PARAMS, ["detector.epochs"])
    with pytest.raises(ConfigError, match="cannot read params file"):
        load_params(tmp_path / "nope.yaml")


def test_cross_field_rule_names_section():
    with pytest.raises(ConfigError, match=r"'prepare'.*reid_clip_min \(20\) must be <= reid_clip_max"):
        load_params(PARAMS, ["prepare.reid_clip_min=20"])


def test_dump_round_trips(tmp_path):
    params = load_params(PARAMS, ["reid.epochs=3"])
    out = tmp_path / "p.yaml"
    out.write_text(dump_params(params))
    assert load_params(out) == params


def test_track_defaults_agree_with_the_tracker_runtime():
    """The edge runtime's TrackerParams and params.yaml's track section must not drift apart."""
    from motops.config import TrackParams
    from motops.runtime import TRACKER_PARAM_NAMES, TrackerParams

    config, runtime = TrackParams(), TrackerParams()
    for name in TRACKER_PARAM_NAMES:
        if name == "with_reid":
            # the runtime uses a ReID callable when it is handed one; the deployment default (params)
            # decides whether the engine loads one at all, and on a CPU it does not
            assert runtime.with_reid is True and config.with_reid is False
            continue
        assert getattr(config, name) == getattr(runtime, name), name
