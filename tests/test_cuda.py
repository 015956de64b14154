"""The CUDA paths: a run on the GPU, bf16 chosen there, a large model split over GPU / CPU / disk,
exact per-example gradients on the GPU, GPU memory in the events, and the nccl refusals.

Skipped where torch sees no CUDA device (CI, and this project's CPU machines); run on a GPU box with
`python -m pytest -q tests/test_cuda.py`. Tolerances: GPU kernels sum in other orders than CPU
ones (and differ between GPU models), so trained floats are compared to the CPU's within a bound,
never bit for bit; see each test.
"""
import json

import pytest
import torch

from tests.helpers import FAST, run_with_sets, saved_tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def accuracies(folder) -> dict:
    return json.loads((folder / "results.json").read_text())["accuracy"]


def events(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "events.jsonl").read_text().splitlines() if line.strip()]


def test_a_smoke_learn_run_on_the_gpu_gives_what_the_cpu_gives(tmp_path):
    # smoke-learn is the preset a tiny model learns (full PT ≫ zero-shot): a broken GPU path shows.
    sets = ["runtime.dtype=\"float32\""]
    cpu = run_with_sets(tmp_path / "cpu", [*sets, 'runtime.device="cpu"'], preset="smoke-learn")
    assert cpu.exit_code == 0, cpu.output
    gpu = run_with_sets(tmp_path / "gpu", [*sets, 'runtime.device="cuda"'], preset="smoke-learn")
    assert gpu.exit_code == 0, gpu.output
    a, b = accuracies(tmp_path / "cpu"), accuracies(tmp_path / "gpu")
    # Hundreds of float32 steps in other summation orders: trajectories drift apart a little, and a
    # prediction near the boundary may flip. 0.06 is 7 of the smoke task's 128 test examples; the
    # method's ordering is asserted on the GPU run on its own.
    for method in a:
        assert abs(a[method] - b[method]) <= 0.06, (method, a[method], b[method])
    assert b["full_pt"] > b["full_zs"] + 0.15 and b["post"] > b["direct"]
    samples = [e for e in events(tmp_path / "gpu") if e.get("event") == "MemorySample"]
    assert any(d.get("allocated_mib", 0) > 0 and d.get("total_mib", 0) > 1000
               for s in samples for d in s.get("devices", [])), samples[-1:] or "no memory samples"


def test_auto_dtype_on_the_gpu_is_bf16_with_float32_prompts(tmp_path):
    result = run_with_sets(tmp_path / "r", [*FAST, 'runtime.device="cuda"', 'runtime.dtype="auto"'])
    assert result.exit_code == 0, result.output
    assert "bfloat16" in result.output
    from safetensors.torch import load_file
    tensors = [*load_file(tmp_path / "r" / "tune" / "prompt.safetensors").values(),
               *load_file(tmp_path / "r" / "transfer" / "post.safetensors").values()]
    assert tensors and all(t.dtype == torch.float32 for t in tensors)  # trained in float32 over bf16 weights
    assert all(0.0 <= v <= 1.0 for v in accuracies(tmp_path / "r").values())


def test_per_example_gradients_on_the_gpu_equal_a_loop():
    from engine.losses import cloze_loss
    from engine.prompt import SoftPrompt, bos_id, prompted_logits
    from engine.tiny import tiny
    from engine.verbalizer import Verbalizer
    model, tok = tiny("tiny:llama")
    model = model.double().cuda()
    verbalizer = Verbalizer.build(tok, [["terrible", "bad", "awful"], ["great", "good", "amazing"]])
    prompt = SoftPrompt.from_text(model, tok, "Predict the sentiment of this text.", 5)
    prompt.weight.data = prompt.weight.data.double().cuda()
    texts = ["the movie was great and we talked about it It was", "bad It was", "this film felt dull It was"]
    labels = torch.tensor([1, 0, 0]).cuda()
    bos = bos_id(tok)
    enc = tok(texts, padding=True, return_tensors="pt", padding_side="left", add_special_tokens=False).to("cuda")
    copy = prompt.per_example(len(texts))
    cloze_loss(verbalizer.class_scores(prompted_logits(model, enc.input_ids, enc.attention_mask, copy, bos)),
               labels).sum().backward()
    for i, text in enumerate(texts):
        one = tok([text], return_tensors="pt", add_special_tokens=False).to("cuda")
        single = prompt.per_example(1)
        cloze_loss(verbalizer.class_scores(prompted_logits(model, one.input_ids, one.attention_mask, single, bos)),
                   labels[i:i + 1]).sum().backward()
        # float64: the batched and the single example differ only in summation order (≪ 1e-6)
        assert (copy.grad[i] - single.grad[0]).abs().max().item() <= 1e-6
        assert single.grad.abs().max() > 0


def test_a_model_split_over_gpu_cpu_and_disk_gives_the_whole_models_logits_and_gradient(tmp_path):
    from engine.models import devices_of, input_device, load_dispatched
    from engine.prompt import prompted_logits
    whole, folder = saved_tiny("llama", tmp_path / "m")
    split, _ = load_dispatched(folder, torch.float32, {"0": 400_000, "cpu": 300_000})
    placed = devices_of(split)  # embeddings and head on the GPU, block 0 on the CPU, the rest on disk
    assert {"cuda:0", "cpu", "disk"} <= placed.keys(), placed
    whole = whole.cuda().eval().requires_grad_(False)
    split.requires_grad_(False)
    ids = torch.randint(5, 300, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    start = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)) * 0.1
    out = []
    for model in (whole, split):
        device = input_device(model)
        prompt = torch.nn.Parameter(start.clone().to(device))
        logits = prompted_logits(model, ids.to(device), mask.to(device), prompt, bos=1)
        logits.logsumexp(-1).sum().backward()
        out.append((logits.detach().cpu(), prompt.grad.cpu()))
    # blocks on the CPU compute with CPU kernels, those on the GPU with GPU ones (TF32 off for float32
    # matmuls by default): agreement to float32 rounding of a 4-block model, 1e-4
    torch.testing.assert_close(out[0][0], out[1][0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[0][1], out[1][1], rtol=1e-4, atol=1e-4)
    assert out[1][1].abs().sum() > 0


def test_a_run_on_a_large_model_split_over_gpu_and_cpu_matches_the_whole_one(tmp_path):
    _, folder = saved_tiny("gpt2", tmp_path / "m")
    base = [*FAST, f'models.large="{folder}"', 'runtime.device="cuda"', 'runtime.dtype="float32"']
    whole = run_with_sets(tmp_path / "whole", base)
    assert whole.exit_code == 0, whole.output
    split = run_with_sets(tmp_path / "split", [*base, 'models.device_map="auto"', 'models.max_memory={0=600000, cpu=300000}'])
    assert split.exit_code == 0, split.output
    assert "large model split by accelerate" in split.output and "cuda:0" in split.output
    a, b = accuracies(tmp_path / "whole"), accuracies(tmp_path / "split")
    for method in a:  # 2 of 128 test examples may flip at the boundary (test above: logits within 1e-4)
        assert abs(a[method] - b[method]) <= 0.02, (method, a[method], b[method])


def test_more_processes_than_gpus_is_refused_in_one_line(tmp_path):
    gpus = torch.cuda.device_count()
    result = run_with_sets(tmp_path / "r", [*FAST, 'runtime.device="cuda"'])  # the same settings work in one process
    assert result.exit_code == 0, result.output
    import subprocess
    import sys
    args = [sys.executable, "-m", "post_tui.cli", "run", "--preset", "smoke", "--out", str(tmp_path / "n"),
            "--nproc", str(gpus + 1), "--set", 'runtime.device="cuda"']
    for s in FAST:
        args += ["--set", s]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    text = done.stdout + done.stderr
    # refused by `post run` before torchrun starts: exit 2, one line, no run folder
    assert done.returncode == 2 and f"{gpus + 1} processes on this machine but {gpus} GPU" in text, text[-2000:]
    assert "Traceback" not in text and not (tmp_path / "n").exists()
