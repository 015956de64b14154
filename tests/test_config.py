"""Config validation, presets and overrides."""
import pytest

from engine.config import all_keys, apply_overrides, stable_dump, to_toml, validate
from engine.errors import PostError
from engine.models import resolve_blocks
from engine.presets import load_config, preset_data, preset_names


def test_presets_exist_and_validate():
    names = preset_names()
    assert {"smoke", "sst2-gpt2"} <= set(names)
    for name in names:
        cfg = load_config(name)
        assert cfg.name == name


def test_sst2_preset_is_the_papers_setting():
    cfg = load_config("sst2-gpt2")
    assert cfg.models.large == "openai-community/gpt2-xl"
    assert resolve_blocks(cfg.distill.blocks, 48) == [0, 1, 46, 47]  # GPT2-XL's 48 blocks


def test_real_model_presets_give_blocks_relative_to_the_model():
    # `extends = "demo"` with another large model must keep the same kind of student, not fail
    for name in preset_names():
        cfg = load_config(name)
        for n_layers in (18, 30, 48):  # Gemma-3-270M, SmolLM2-135M, GPT2-XL
            keep = resolve_blocks(cfg.distill.blocks, n_layers)
            assert keep[-1] == n_layers - 1, (name, n_layers, keep)
    assert load_config("sst2-gpt2").tune.prompt_length == 100


def test_starter_is_the_demo_with_alpha_chosen_on_validation_and_the_applied_shift_loss():
    demo, starter = load_config("demo").model_dump(), load_config("starter").model_dump()
    assert starter["transfer"]["alpha"] == "select" and demo["transfer"]["alpha"] == 1.0
    # the demo's figures are measured with the paper's L2; the suite's (starter) with the applied one
    assert starter["transfer"]["shift_loss"] == "applied" and demo["transfer"]["shift_loss"] == "paper"
    for section in demo:  # every other setting is the demo's: one recipe, one rule for α
        if section not in ("name", "description", "transfer"):
            assert starter[section] == demo[section], section
    differ = ("alpha", "methods", "shift_loss")
    rest = {k: v for k, v in starter["transfer"].items() if k not in differ}
    assert rest == {k: v for k, v in demo["transfer"].items() if k not in differ}


def test_unknown_key_names_the_nearest():
    data = preset_data("smoke")
    data["tune"]["lr_rate"] = 0.1
    with pytest.raises(PostError, match=r"unknown key tune.lr_rate; did you mean tune.lr\?"):
        validate(data)
    with pytest.raises(PostError, match="unknown key"):
        load_config("smoke", overrides=["tranfer.alpha=0.3"])


def test_wrong_type_is_one_line():
    with pytest.raises(PostError) as err:
        load_config("smoke", overrides=["tune.batch_size=many"])
    assert "tune.batch_size" in str(err.value) and "\n" not in str(err.value)


def test_overrides_are_typed():
    cfg = load_config("smoke", overrides=["tune.lr=0.5", "transfer.alpha=\"auto\"", "distill.blocks=[0,1]",
                                          "task.template={text} So it was"])
    assert cfg.tune.lr == 0.5 and cfg.transfer.alpha == "auto" and cfg.distill.blocks == [0, 1]
    assert cfg.task.template == "{text} So it was"


def test_alpha_out_of_range_rejected():
    with pytest.raises(PostError, match="alpha"):
        load_config("smoke", overrides=["transfer.alpha=1.5"])


@pytest.mark.parametrize("key", ["task.text_fields", "public.text_fields"])
def test_no_text_field_is_refused_where_it_is_set(key):
    """public.text_fields = [] passed the config and stopped the transfer in an IndexError traceback."""
    with pytest.raises(PostError, match=f"{key}: needs at least one text field"):
        load_config("smoke", overrides=[f"{key}=[]"])


def test_unknown_preset_suggests():
    with pytest.raises(PostError, match="did you mean smoke"):
        load_config("smoek")


def test_resolved_toml_round_trips(tmp_path):
    cfg = load_config("smoke", overrides=["privacy.epsilon=8"])
    path = tmp_path / "c.toml"
    path.write_text(to_toml(cfg))
    assert load_config(config_file=path) == cfg.model_copy(update={"name": cfg.name})


def test_user_file_extends_a_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('extends = "smoke"\n[tune]\nlr = 0.2\n')
    cfg = load_config(config_file=path)
    assert cfg.tune.lr == 0.2 and cfg.models.large == "tiny:gpt2"


def test_bad_set_syntax():
    with pytest.raises(PostError, match="KEY=VALUE"):
        apply_overrides({}, ["tune.lr"])


def test_all_keys_lists_sections():
    keys = all_keys()
    assert "privacy.epsilon" in keys and "transfer.alpha" in keys and "runtime.seed" in keys


def test_a_late_setting_at_its_default_leaves_digests_as_they_were():
    # suite reports and transfer records made before transfer.shift_loss existed must stay current
    from engine.config import LATE_DEFAULTS, NOT_IN_DIGESTS, stable_dump
    from engine.records import digest
    from engine.suite import config_digest
    config = validate(apply_overrides(load_config("starter").model_dump(), ['transfer.shift_loss="paper"']))
    before = {k: v for k, v in config.model_dump().items() if k not in NOT_IN_DIGESTS}  # [audit] came later too
    for section, defaults in LATE_DEFAULTS.items():
        for key in defaults:
            del before[section][key]
    assert config_digest(config) == digest({k: v for k, v in before.items() if k != "runtime"})
    applied = validate(apply_overrides(config.model_dump(), ['transfer.shift_loss="applied"']))
    assert stable_dump(applied)["transfer"]["shift_loss"] == "applied"
    assert config_digest(applied) != config_digest(config)
    audited = validate(apply_overrides(config.model_dump(), ["audit.shadows=16", "audit.pool=500"]))
    assert config_digest(audited) == config_digest(config)  # how a run is audited changes none of its results


@pytest.mark.parametrize("shadows", [4, 7, 1026, 10**12])
def test_audit_shadows_out_of_range_are_refused_where_they_enter(shadows):
    # 10**12 passed once and failed at its allocation, after config.toml had kept it
    config = load_config("smoke")
    with pytest.raises(PostError, match="audit.shadows"):
        validate(apply_overrides(config.model_dump(), [f"audit.shadows={shadows}"]))


def test_a_rows_digest_counts_the_seed_and_dtype_but_not_how_it_ran():
    """A seed-1 repeat is another result (its stored report must not stand for the seed-0 one); threads and
    the device change how fast, not what; at the defaults the digest is what reports stored before it had."""
    from engine.records import digest
    from engine.suite import config_digest
    base = load_config("starter")

    def with_(*sets):
        return config_digest(validate(apply_overrides(base.model_dump(), list(sets))))
    assert with_("runtime.seed=0", 'runtime.dtype="float32"') == config_digest(base)
    assert config_digest(base) == digest({k: v for k, v in stable_dump(base).items() if k != "runtime"})
    assert with_("runtime.threads=1", 'runtime.device="cpu"', "runtime.checkpoint_every=5") == config_digest(base)
    seeds = {with_(f"runtime.seed={seed}") for seed in (0, 1, 2)}
    assert len(seeds) == 3 and with_('runtime.dtype="bfloat16"') not in seeds


def test_unknown_shift_loss_is_refused():
    with pytest.raises(PostError, match="shift_loss"):
        validate(apply_overrides(load_config("demo").model_dump(), ['transfer.shift_loss="other"']))


@pytest.mark.parametrize("preset, student, config", [
    ("smoke", "ee0dfb72bd7ef9e6", "6ccefce517f43a19"), ("demo", "8586779b51c4c1d0", "ea1cb24b4625487b"),
    ("starter", "8586779b51c4c1d0", "3cb7635b925efac5"), ("bbc-gemma3", "1093c6b8acd1052e", "29cb5b1532962f61")])
def test_student_keys_and_config_digests_of_the_presets_are_pinned(preset, student, config):
    """The values cde4e9e computed: a setting added later at its default must leave them as they are, or
    every cached student and finished stage of an existing run folder would be made again (strings and
    integers hashed, no floats computed, so they hold on any machine)."""
    from engine import records
    from engine.config import stable_dump
    from engine.distill import student_key
    cfg = load_config(preset)
    assert student_key(cfg, {"teacher": "t"}, [0, 1]) == student
    assert records.digest(stable_dump(cfg)) == config
