"""runtime.dtype = "auto": frozen weights in bf16 where the device computes it fast, float32 elsewhere."""
import torch

from engine import context, loading
from engine.context import RunContext, pick_dtype
from engine.events import Log
from engine.presets import load_config


def test_auto_picks_bf16_only_on_cpus_with_bf16_units(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(context, "cpu_flags", lambda: {"avx2", "amx_bf16", "amx_tile"})
    assert pick_dtype("auto", cpu) == ("bfloat16", "the CPU has amx_bf16")
    monkeypatch.setattr(context, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert pick_dtype("auto", cpu)[0] == "float32"
    assert pick_dtype("bfloat16", cpu)[0] == "bfloat16" and pick_dtype("float32", cpu)[0] == "float32"


def test_auto_bf16_stores_frozen_weights_in_bf16_and_trains_float32_prompts(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "cpu_flags", lambda: {"avx512_bf16"})
    ctx = RunContext(load_config("smoke", overrides=["runtime.dtype=\"auto\"", "tune.steps=3", "tune.eval_every=0"]),
                     tmp_path / "run")
    said = []
    ctx.bus.subscribe(lambda e: said.append(e.message) if isinstance(e, Log) else None)
    model, tok = loading.large(ctx)
    assert ctx.dtype == "bfloat16" and {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert any("runtime.dtype = auto → bfloat16 (the CPU has avx512_bf16)" in m for m in said)
    from engine.tune import tune_prompt
    prompt, result, _ = tune_prompt(ctx, "tune", model, tok, "tiny:gpt2")
    assert prompt.weight.dtype == torch.float32 and result.steps == 3 and all(map(torch.isfinite, map(torch.tensor, result.losses)))


def test_auto_without_bf16_units_is_float32(tmp_path, monkeypatch):
    monkeypatch.setattr(context, "cpu_flags", lambda: set())
    ctx = RunContext(load_config("smoke", overrides=["runtime.dtype=\"auto\""]), tmp_path / "run")
    model, _ = loading.large(ctx)
    assert ctx.dtype == "float32" and {p.dtype for p in model.parameters()} == {torch.float32}
