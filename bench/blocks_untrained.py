"""Untrained students (blocks dropped, no KD): label-margin AUC and linear probe on validation.

    python bench/blocks_untrained.py "[[0,1,28,29],[0,1,2,27,28,29],[0,1,14,15,28,29],[0,10,20,29]]" bench/results/ablation/blocks-untrained.json
"""
import json, sys, time
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import torch
import bench.common  # noqa
from bench.student_probe import scores_and_states, summary, probe
from engine import loading
from engine.context import RunContext
from engine.models import make_student
from engine.presets import load_config
torch.set_num_threads(1)
cfg = load_config("demo", overrides=["runtime.threads=1"])
ctx = RunContext(cfg, Path("/tmp/post-blocks-untrained"))
teacher, tok = loading.large(ctx)
splits = loading.task(ctx, tok)
train, val = splits["train"].head(400), splits["validation"].head(200)
ty, vy = torch.tensor(train.labels), torch.tensor(val.labels)
verb = loading.verbalizer(ctx, tok)
out = {}
for blocks in json.loads(sys.argv[1]):
    t = time.time()
    st = make_student(teacher, blocks).requires_grad_(False)
    trs, trh = scores_and_states(st, tok, None, train, verb, None)
    vs, vh = scores_and_states(st, tok, None, val, verb, None)
    out[str(blocks)] = {"val": summary(vs, vy), "probe": round(probe(trh, ty, vh, vy), 4), "s": round(time.time() - t)}
    print(blocks, json.dumps(out[str(blocks)]), flush=True)
json.dump(out, open(sys.argv[2], "w"), indent=1)
