"""One validated description of a run.

A run config is a TOML document (a preset, a user's file, plus `--set` overrides) checked
against these pydantic models. Every model forbids unknown keys; `check_keys` runs first so an
unknown key is reported with the nearest valid one ("tune.lr_rate: unknown key, did you mean
tune.lr?").
"""
from __future__ import annotations

import difflib
import json
import math
import re
import string
import tomllib
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import methods as registry
from engine.errors import PostError


def _numeric(annotation: Any) -> bool:
    """int, float, or a union holding one (float | None, float | "auto")."""
    if annotation in (int, float):
        return True
    return get_origin(annotation) is not list and any(a in (int, float) for a in get_args(annotation))


def check_template(template: str, fields: list[str]) -> str:
    """A template must name {text} (or a text field) and nothing else: a stray brace or `{}` is an error."""
    allowed = ["text", *[f for f in fields if f != "text"]]
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError:
        raise ValueError("has a stray '{' or '}': write {text} where the text goes, and {{ or }} for a literal "
                         "brace") from None
    for name in names:
        if name == "" or name.isdigit():
            raise ValueError("has an empty '{}': name the field, e.g. {text}")
        if name not in allowed:
            others = f" or one of {', '.join('{' + f + '}' for f in fields)}" if fields != ["text"] else ""
            raise ValueError(f"names {{{name}}}, which is not a text field: use {{text}}{others}")
    if not names:
        raise ValueError("has no {text}: without it the model never sees the text; "
                         f"e.g. {json.dumps('{text} ' + template.strip(), ensure_ascii=False)}")
    try:
        template.format(**{name: "x" for name in allowed})
    except (ValueError, KeyError, IndexError, AttributeError) as err:
        raise ValueError(f"cannot be filled in ({err}): write plain {{text}}") from None
    return template


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info) -> Any:
        """pydantic reads true as 1: `tune.steps = true` must be an error, not one step."""
        annotation = cls.model_fields[info.field_name].annotation
        if get_origin(annotation) is list:
            inner = get_args(annotation)
            if inner and _numeric(inner[0]) and isinstance(value, list) and any(isinstance(v, bool) for v in value):
                raise ValueError("expects a list of numbers, not true / false")
        elif isinstance(value, bool) and _numeric(annotation):
            raise ValueError("expects a number, not true / false")
        return value

    @field_validator("*", mode="after")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        """inf or nan in a setting only ever trains a NaN model or loops without end: refuse it where it enters."""
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"expects a finite number, not {value}")
        return value


def usable_reference(value):
    """A model or data reference (a name or a path, or a list of them) that the readers can look up: a path
    whose home folder cannot be found (`~nouser/x`) or a name too long for the file system raised deep in a
    stage; refused here in one line."""
    for ref in value if isinstance(value, list) else [value]:
        if not isinstance(ref, str) or not ref:
            continue
        try:
            Path(ref).expanduser().exists()
        except (RuntimeError, OSError) as err:
            raise ValueError(f"{ref[:80]!r} is not a usable name or path ({str(err).split(':')[0]}): "
                             "give an existing folder or file, an offline asset, or a hub id") from None
    return value


class ModelsConfig(Section):
    large: str = Field(description="Large model: hub id, local folder, offline asset name, or tiny:gpt2 / tiny:llama")
    small: str = Field("", description="An existing student (folder or hub id); empty: distil one from the large model")
    kit: str = Field("", description="A student kit folder from the model owner (post kit build): checked against its "
                     "manifest, then used as the student")
    trust_remote_code: bool = False
    device_map: Literal["", "auto"] = Field("", description=(
        "auto: the large model is split over this node's GPUs, then the CPU, then disk, by accelerate "
        "(one process; for a large model that does not fit one device); empty: it is loaded whole on runtime.device"))
    max_memory: dict[str, int | str] = Field(default_factory=dict, description=(
        "With device_map = auto: the most each device may hold, e.g. {\"0\" = \"70GiB\", cpu = \"200GiB\"} "
        "(GPU index or cpu → bytes or a size); empty: what accelerate finds free"))

    _references = field_validator("large", "small", "kit")(usable_reference)

    @field_validator("max_memory")
    @classmethod
    def _sizes(cls, value: dict[str, int | str]) -> dict[str, int | str]:
        for device, size in value.items():
            if device != "cpu" and not device.isdigit():
                raise ValueError(f"device {device!r}: use a GPU index (\"0\", \"1\", ...) or cpu")
            if isinstance(size, bool) or (isinstance(size, int) and size <= 0) or (
                    isinstance(size, str) and not re.fullmatch(r"\d+(\.\d+)?\s*(K|M|G|T)?i?B", size)):
                raise ValueError(f"{device} = {size!r}: give bytes or a size such as \"20GiB\" or \"500MB\"")
        return value

    @model_validator(mode="after")
    def _dispatchable(self):
        if self.max_memory and not self.device_map:
            raise ValueError("max_memory only applies with device_map = \"auto\": set it, or remove max_memory")
        if self.device_map and self.large.startswith("tiny:"):
            raise ValueError("device_map needs a model folder, an offline asset or a hub id: tiny:… models are "
                             "built in memory (save one with save_pretrained to split it)")
        return self


class TaskConfig(Section):
    source: str = Field(description="smoke, an offline asset (mr, tweets, bbc, spam, ...), a hub data set, or a local CSV/JSONL/parquet file or folder")
    subset: str = Field("", description="Hub data set configuration (e.g. sst2 for glue)")
    text_fields: list[str] = Field(default_factory=lambda: ["text"])
    label_field: str = "label"
    template: str = Field("{text} It was", description="Input template; {text} (or each text field by name) is filled in")
    label_words: list[list[str]] = Field(default_factory=list, description="Per class, in label order: its label words")
    _source = field_validator("source")(usable_reference)
    label_names: list[str] = Field(default_factory=list, description=(
        "The data's label values when they are names (\"ham\", \"spam\"), one per class in label-word order; "
        "empty: labels are class indices 0, 1, ..."))
    prompt_init: str = Field("Predict if sentiment of this text is positive or negative.", description="Sentence whose token embeddings initialise the prompt")
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    max_train: int = Field(0, ge=0, description="Use at most this many training examples (0: all)")
    max_eval: int = Field(0, ge=0, description="Use at most this many validation / test examples (0: all)")
    max_length: int = Field(64, ge=4, description="Token budget for the filled template")

    @field_validator("source")
    @classmethod
    def _labelled(cls, value: str) -> str:
        from engine.assets.catalogue import unlabelled
        if unlabelled(value.strip()):
            raise ValueError(f"{value.strip()!r} is unlabelled text, for public.source or distill.corpus: give a "
                             "labelled data set (mr, tweets, amazon, nyt, bbc, spam, sms, a file)")
        return value

    @field_validator("text_fields")
    @classmethod
    def _some_text(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one text field")
        if any(not f.strip() for f in v):
            raise ValueError("a text field name is empty")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, value: str, info) -> str:
        return check_template(value, info.data.get("text_fields", ["text"]))

    @field_validator("label_words")
    @classmethod
    def _label_words(cls, value: list[list[str]]) -> list[list[str]]:
        if len(value) == 1:
            raise ValueError("names one class: a classifier needs at least two, e.g. [[\"bad\"], [\"good\"]]")
        seen: dict[str, int] = {}
        for c, words in enumerate(value):
            if not words:
                raise ValueError(f"class {c} has no label words: give at least one, e.g. [[\"bad\"], [\"good\"]]")
            for word in words:
                if not word.strip():
                    raise ValueError(f"class {c} has an empty label word: use a real word")
                if word.strip() in seen:
                    other = seen[word.strip()]
                    where = f"twice in class {c}" if other == c else f"in class {other} and class {c}"
                    raise ValueError(f"label word {word.strip()!r} appears {where}: "
                                     f"each word must name one class, once")
                seen[word.strip()] = c
        return value

    @field_validator("label_names")
    @classmethod
    def _label_names(cls, value: list[str], info) -> list[str]:
        names = [n.strip() for n in value]
        if any(not n for n in names):
            raise ValueError("has an empty name: give the label values exactly as the data has them")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"lists {dup[0]!r} twice: one name per class")
        words = info.data.get("label_words")
        if value and words and len(value) != len(words):
            raise ValueError(f"has {len(value)} names but task.label_words has {len(words)} classes: "
                             f"give one name per class, in label-word order")
        return value


class PublicConfig(Section):
    source: str = Field(description="Public data for transfer (labels are never read)")
    subset: str = ""
    text_fields: list[str] = Field(default_factory=lambda: ["text"])
    template: str = "{text} It was"
    split: str = "train"
    size: int = Field(128, ge=1, description="Number of public examples used for transfer")
    max_length: int = Field(64, ge=4)
    prefix: str = Field("", description="With source = \"generated\": the text the large model continues for each "
                        "class ({label}: the class's first label word) to write the public set itself")
    pick: Literal["random", "balanced"] = Field("random", description=(
        "How the size texts are drawn from the source. random: at random (seeded; a generated set: the size "
        "texts written, equally many after each class's prefix). balanced: from pool texts, equally many of "
        "each class the student's prompted answer gives them (the owner's student and the small prompt only; "
        "a source of the task's kind is rarely balanced over the task's classes, and the large model's texts "
        "after a class's prefix are not always of that class to the student)"))
    pool: int = Field(1024, ge=0, description="With pick = \"balanced\": how many texts of the source the student "
                      "scores to pick from (0: all of the split); with a generated source, how many the large "
                      "model writes (minutes per hundred on a CPU)")
    _source = field_validator("source")(usable_reference)

    @field_validator("text_fields")
    @classmethod
    def _some_text(cls, v: list[str]) -> list[str]:
        if not v:  # the transfer would read no text of the public set
            raise ValueError("needs at least one text field, e.g. [\"text\"]")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, value: str, info) -> str:
        return check_template(value, info.data.get("text_fields", ["text"]))

    @model_validator(mode="after")
    def _generated(self):
        from engine.data.generated import GENERATED, check_prefix
        if self.source == GENERATED:
            try:
                check_prefix(self.prefix)
            except ValueError as err:
                raise ValueError(f"public.prefix {err}") from None
            if self.text_fields != ["text"]:
                raise ValueError(f"public.text_fields = {self.text_fields}: a generated public set has one text field; "
                                 "remove public.text_fields and write {text} in public.template")
        elif self.prefix:
            raise ValueError(f"public.prefix is read only with public.source = \"{GENERATED}\" (the large model "
                             f"writes the public set); public.source is {self.source!r}: remove public.prefix")
        if self.pick == "balanced" and self.source == GENERATED and self.pool == 0:
            raise ValueError("public.pool = 0 takes a source's whole split, and a generated public set has none: give "
                             "public.pool, how many texts the large model writes for the student to pick from")
        if self.pick == "balanced" and 0 < self.pool <= self.size:
            whole = "" if self.source == GENERATED else " (0: the whole split)"
            raise ValueError(f"public.pool = {self.pool} is not above public.size = {self.size}: the pool is what "
                             f"the size texts are picked from; raise public.pool{whole}")
        # the default itself is allowed: a saved config.toml spells out every setting
        if self.pick != "balanced" and self.pool != PublicConfig.model_fields["pool"].default:
            raise ValueError("public.pool is read only with public.pick = \"balanced\" (the texts the student "
                             "picks from); public.pick is \"random\": remove public.pool or set the pick")
        return self


class DistillConfig(Section):
    enabled: bool = True
    blocks: list[int] = Field(default_factory=lambda: [0, -1], description="Teacher blocks the student keeps (negative counts from the end)")
    corpus: str | list[str] = Field("", description="Knowledge-distillation text: a data source like task.source, or a "
                                    "list of them mixed (each source's texts, max_texts split evenly between them); "
                                    "empty: the public set's source")
    _corpus = field_validator("corpus")(usable_reference)
    corpus_subset: str = ""
    corpus_field: str = "text"
    corpus_split: str = "train"
    max_texts: int = Field(0, ge=0)
    template: str = Field("{text}", description="Applied to each distillation text, e.g. '{text} It was' so the student sees the task's cue")
    loss: Literal["kd", "hidden"] = Field("kd", description="kd: KD + LM + cosine through the LM head (the paper); "
                                          "hidden: match the teacher's final hidden states (MSE + cosine, no LM head; the teacher's "
                                          "states cached when the corpus is read more than once)")
    steps: int = Field(200, ge=0)
    batch_size: int = Field(8, ge=1)
    seq_len: int = Field(64, ge=4)
    lr: float = Field(2.5e-4, gt=0)
    warmup: float = Field(0.05, ge=0, lt=1)
    grad_clip: float = Field(5.0, gt=0)
    temperature: float = Field(2.0, gt=0)
    weight_kd: float = Field(5.0, ge=0)
    weight_lm: float = Field(2.0, ge=0)
    weight_cos: float = Field(1.0, ge=0)
    weight_mse: float = Field(10.0, ge=0, description="hidden loss only: weight of the mean squared error")
    init: Literal["kept", "merged"] = Field("kept", description="How the student's blocks start: kept = the teacher's kept "
                                            "blocks as they are; merged = each the mean of its kept block and the dropped "
                                            "blocks nearest it (BENCHMARKS.md: the student levers)")
    bridge_weight: float = Field(0.0, ge=0, description="hidden loss only: weight of the bridge loss — the state "
                                 "entering each kept block after the first, matched to what entered that block in "
                                 "the teacher (relative squared error + cosine), so the blocks after a jump see what "
                                 "they saw in the teacher; 0: the final states only (BENCHMARKS.md: the bridge)")
    cue_weight: float = Field(1.0, ge=1, description="hidden loss only: how much more the positions that end the "
                              "template's cue (where the task's label word comes next) count than other positions")
    prefix_share: float = Field(0.0, ge=0, le=1, description="hidden loss only: the share of distillation rows that "
                                "begin (after BOS) with a prompt-like soft prefix — a random span of corpus text, "
                                "its embeddings jittered — so the student learns how the teacher answers to a soft "
                                "prompt, not only to text (engine/distill_prefix.py); 0: text only")
    prefix_length: int = Field(0, ge=0, description="vectors per soft prefix; 0: tune.prompt_length")
    prefix_noise: float = Field(0.35, ge=0, le=10, description="the prefixes' jitter in embedding standard deviations "
                                "per coordinate (tuned SmolLM2 prompts sit 0.3–0.37 from their start)")
    prefix_source: Literal["text", "tuned"] = Field("text", description="what a synthetic prefix is before its jitter: "
                                                   "text = a random span's embeddings; tuned = one of prefix_tasks "
                                                   "prompts the owner tunes on the large model for binary tasks it "
                                                   "makes up on the distillation texts (engine/prefix_tasks.py)")
    prefix_tasks: int = Field(8, ge=1, description="tuned prefixes: how many made-up tasks (one prompt each)")
    prefix_steps: int = Field(30, ge=1, description="tuned prefixes: tuning steps per prompt (batch 8, tune.lr)")
    prefix_inputs: int = Field(256, ge=16, description="tuned prefixes: distillation texts the made-up tasks label")
    freeze_embeddings: bool = True
    freeze_head: bool = True
    eval_every: int = Field(0, ge=0)
    align: bool = Field(False, description="With models.small: start from that pre-trained model instead of the "
                        "teacher's blocks and align it to the large model by distill.steps of KD on the logits "
                        "(the shared tokenizer makes one vocabulary)")

    @field_validator("template")
    @classmethod
    def _has_text(cls, value: str) -> str:
        return check_template(value, ["text"])

    @field_validator("corpus", mode="before")
    @classmethod
    def _corpus_sources(cls, value):
        from engine.data.generated import GENERATED
        listed = value if isinstance(value, list) else [value]
        if isinstance(value, list) and (not value or any(not isinstance(v, str) or not v.strip() for v in value)):
            raise ValueError("a list of corpora names each source, e.g. [\"amazon\", \"nyt\"]; for the public "
                             "set's source leave distill.corpus empty")
        if not all(isinstance(v, str) for v in listed):
            raise ValueError(f"{value!r} is not a data source: give its name (\"amazon\"), a file, or a list of them")
        names = [v.strip() for v in listed]
        if len(set(names)) != len(names):
            raise ValueError(f"{value} names a source twice: list each once")
        if GENERATED in names:
            raise ValueError("\"generated\" is written by the transfer, after distillation: it cannot be the "
                             "distillation corpus; name a data source (\"amazon\", a file)")
        if isinstance(value, list) and len(value) == 1:
            return value[0]
        return value


def idle_prefix_settings(distill) -> list[str]:
    """The prefix settings at other values than their defaults while distill.prefix_share = 0: read by nothing
    (said in the distill stage's log, not refused: a run's config.toml holds every field, and turning the prefixes
    off with one --set distill.prefix_share=0 must work)."""
    if distill.prefix_share:
        return []
    names = ("prefix_length", "prefix_noise", "prefix_source", "prefix_tasks", "prefix_steps", "prefix_inputs")
    fields = type(distill).model_fields
    return [f"distill.{n}" for n in names if getattr(distill, n) != fields[n].default]


class TuneConfig(Section):
    prompt_length: int = Field(20, ge=1)
    steps: int = Field(0, ge=0, description="Optimizer steps (0: use epochs)")
    epochs: float = Field(1.0, gt=0)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-3, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    eval_every: int = Field(50, ge=0, description="Validation accuracy every N steps (0: only at the end)")
    eval_size: int = Field(200, ge=0, description="Validation examples used while training (0: all)")
    patience: int = Field(0, ge=0, description="Stop after this many validations without a new best (0: never; "
                                                 "not under DP, where each look at validation data would cost privacy)")

    @model_validator(mode="after")
    def _patience_needs_validation(self):
        if self.patience and not self.eval_every:
            raise ValueError("patience needs validations along the way: set tune.eval_every > 0 (or patience = 0)")
        return self


# how the transfer's L2 compares the prompt's effect (engine.losses.transfer_loss); named once, here
SHIFT_LOSSES = ("paper", "applied")


class TransferConfig(Section):
    methods: list[Literal[registry.TRANSFER]] = Field(default_factory=lambda: ["post", "direct"])
    alpha: Union[float, Literal["auto", "select"]] = Field(0.5, description=(
        "weight of the shift loss L2; \"auto\": the paper's heuristic from validation ZS and CPT; "
        "\"select\": the best of α = 0 / 0.5 / 1 (output, post, shift) on the validation split"))
    temperature: float = Field(2.0, gt=0)
    vocab: Literal["full", "labels"] = Field("full", description="KL over the full vocabulary (the paper) or only over the task's label words")
    shift_loss: Literal[SHIFT_LOSSES] = Field("paper", description=(
        "how L2 compares the prompt's effect: \"paper\": the two models' logit changes; \"applied\": the small "
        "change added to the large model's logits (the inference-time transfer's output) against the large "
        "prompted output — the same optimum, errors weighed where a prediction can flip"))
    init: Literal["text", "small"] = Field("text", description=(
        "where the large model's prompt starts: \"text\": task.prompt_init's embeddings (the paper), \"small\": "
        "the user's small prompt itself (Direct's prompt; the student shares the large model's embedding width)"))
    steps: int = Field(300, ge=0)
    batch_size: int = Field(8, ge=1)
    lr: float = Field(1e-3, gt=0)

    @field_validator("alpha")
    @classmethod
    def _alpha_range(cls, v):
        if isinstance(v, float) and not 0.0 <= v <= 1.0:
            raise ValueError("alpha must be in [0, 1], \"auto\" or \"select\"")
        return v

    @model_validator(mode="after")
    def _select_needs_candidates(self):
        if self.alpha == "select" and not set(registry.SELECT_CANDIDATES) <= set(self.methods):
            raise ValueError("alpha = \"select\" chooses among output (α = 0), post (α = 0.5) and shift (α = 1) on "
                             "validation: put all three in transfer.methods")
        return self


class EvalConfig(Section):
    full_zs: bool = True
    full_pt: bool = Field(True, description="Prompt-tune the large model on the private data (the expensive reference)")
    full_pt_steps: int = Field(0, ge=0, description="Steps for full PT (0: same as tune)")
    batch_size: int = Field(32, ge=1)


class PrivacyConfig(Section):
    """Differentially private prompt tuning (PromptDPSGD). Off unless epsilon or noise_multiplier is set."""
    epsilon: float | None = Field(None, description="Target epsilon; sigma is planned to reach it")
    delta: float | None = Field(None, description="Default 1/N (the paper's); at most 1/N, smaller is stronger")
    noise_multiplier: float | None = Field(None, description="Sigma (instead of epsilon)")
    clip: float = Field(1.0, description="Per-example gradient norm bound C")
    accountant: Literal["rdp", "prv"] = "rdp"
    sample_rate: float | None = Field(None, description="Poisson sampling rate q (default batch_size / N)")
    budget: float | None = Field(None, description="Lifetime ε for this training data, over every release the "
                                 "privacy ledger records (post privacy ledger); a run that would exceed it is refused")

    @property
    def enabled(self) -> bool:
        return self.epsilon is not None or self.noise_multiplier is not None

    @field_validator("epsilon", "noise_multiplier", "clip", "budget")
    @classmethod
    def _positive(cls, v, info):
        if v is not None and not 0 < v < float("inf"):
            raise ValueError(f"{info.field_name} must be a finite number > 0")
        return v

    @field_validator("delta", "sample_rate")
    @classmethod
    def _probability(cls, v, info):
        if info.field_name == "delta" and v is not None and not 0 < v < 1:
            raise ValueError("delta must be in (0, 1) (and at most 1/N, checked against the data)")
        if info.field_name == "sample_rate" and v is not None and not 0 < v <= 1:
            raise ValueError("sample_rate must be in (0, 1]")
        return v

    @model_validator(mode="after")
    def _one_of(self):
        if self.epsilon is not None and self.noise_multiplier is not None:
            raise ValueError("give epsilon (sigma is planned from it) or noise_multiplier, not both")
        return self


class RuntimeConfig(Section):
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N")
    dtype: Literal["float32", "bfloat16", "auto"] = Field(
        "float32", description="Compute dtype (bfloat16: autocast; auto: bfloat16 with frozen weights stored in "
        "bf16 where the device computes it fast, else float32; prompts stay float32)")
    seed: int = 0
    out_dir: str = "runs"
    threads: int = Field(0, ge=0, description="torch CPU threads (0: library default)")
    memory_every: float = Field(2.0, gt=0, description="Seconds between memory samples")
    checkpoint_every: int = Field(0, ge=0, description="Checkpoint long stages every N steps (0: by time only)")
    checkpoint_minutes: float = Field(2.0, ge=0, description="Checkpoint long stages every M minutes (0: by steps only); "
                                      "kill -9 loses at most this much work")

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        import re
        if value in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", value):
            return value
        raise ValueError(f"{value!r} is not a device post runs on: use auto, cpu, cuda or cuda:N")


class AuditConfig(Section):
    """`post audit RUN` (engine.audit): membership inference against the tuning recipe, on the user's side."""
    shadows: int = Field(8, ge=6, le=1024, description="shadow prompts, each trained on a random half of the pool "
                         "(even, 6–1024: each is a tune)")
    pool: int = Field(0, ge=0, description="training examples in the audit pool (0: the whole training split)")

    @field_validator("shadows")
    @classmethod
    def _even(cls, v):
        if v % 2:
            raise ValueError("audit.shadows must be even: each example is in exactly half of the shadows")
        return v


class RunConfig(Section):
    name: str = "custom"
    description: str = ""
    models: ModelsConfig
    task: TaskConfig
    public: PublicConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig)
    transfer: TransferConfig = Field(default_factory=TransferConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    audit: AuditConfig = Field(default_factory=AuditConfig)

    @model_validator(mode="after")
    def _consistent(self):
        if not self.distill.enabled and not (self.models.small or self.models.kit):
            raise ValueError("distill.enabled is false but models.small is empty: name a student or enable distillation")
        if self.distill.align and not self.models.small:
            raise ValueError("distill.align aligns the pre-trained student of models.small: set models.small, or "
                             "distill.align = false to distil one from the large model's blocks")
        if self.distill.init == "merged" and self.models.small:
            raise ValueError("distill.init = \"merged\" starts the student from the large model's blocks; with "
                             "models.small the student is that model: remove distill.init or models.small")
        if self.distill.align and self.distill.loss != "kd":
            raise ValueError("distill.align trains a student of its own width on the large model's logits: "
                             "set distill.loss = \"kd\"")
        if self.distill.prefix_share and self.distill.loss != "hidden":
            raise ValueError("distill.prefix_share prefixes rows for the hidden-state loss: set distill.loss = "
                             "\"hidden\", or distill.prefix_share = 0")
        if self.distill.prefix_share and self.models.small:
            raise ValueError("distill.prefix_share feeds the large model's embeddings to a student made of its "
                             "blocks; models.small is another model: remove one of them")
        if self.distill.bridge_weight and self.distill.loss != "hidden":
            raise ValueError("distill.bridge_weight matches the states between the student's blocks under the "
                             "hidden-state loss: set distill.loss = \"hidden\", or distill.bridge_weight = 0")
        if self.distill.bridge_weight and self.models.small:
            raise ValueError("distill.bridge_weight matches each student block's input to its teacher block's; "
                             "models.small is another model, with no such blocks: remove one of them")
        if self.distill.bridge_weight and self.distill.prefix_share:
            raise ValueError("distill.bridge_weight and distill.prefix_share do not combine (the prefixed rows' "
                             "forward returns final states only): set one of them to 0")
        if self.distill.prefix_share and self.distill.prefix_source == "tuned" and \
                self.distill.prefix_tasks > self.distill.prefix_inputs:
            raise ValueError(f"distill.prefix_tasks ({self.distill.prefix_tasks}) is more than distill.prefix_inputs "
                             f"({self.distill.prefix_inputs}): each made-up task splits the inputs along its own "
                             "principal direction, and there are at most as many as inputs — lower prefix_tasks")
        from engine.data.generated import GENERATED
        if self.distills and not self.distill.corpus and self.public.source == GENERATED:
            raise ValueError("distill.corpus is empty, so distillation would read the public set's source, and "
                             "public.source is \"generated\" (written later, by the transfer): set distill.corpus, "
                             "e.g. \"amazon\"")
        return self

    @property
    def student_source(self) -> str:
        """Where the student comes from: "kit" (the owner's), "given" (models.small as it is),
        "aligned" (models.small after a short KD), "distilled" (the large model's blocks)."""
        if self.models.kit:
            return "kit"
        if self.models.small:
            return "aligned" if self.distill.align and self.distill.enabled else "given"
        return "distilled"

    @property
    def distills(self) -> bool:
        """Does this run have a distill stage?"""
        return self.distill.enabled and self.student_source in ("distilled", "aligned")


# ---------------------------------------------------------------- key checking

def _section_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation) if get_origin(annotation) else ():
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def all_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every dotted key a config may hold (for suggestions and for editors)."""
    keys = []
    for name, info in model.model_fields.items():
        sub = _section_model(info.annotation)
        if sub is not None:
            keys += all_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def check_keys(data: dict[str, Any], model: type[BaseModel] = RunConfig, prefix: str = "") -> None:
    """Raise PostError for the first unknown key, naming the nearest valid one."""
    fields = model.model_fields
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            if key == "extends" and prefix:  # TOML puts a key after a [section] header into that section
                raise PostError(f"config: {dotted}: extends names the preset a config builds on and goes at the top "
                                "of the file, before any [section]")
            if not prefix and key == "tool":  # a pyproject.toml, or a folder of another project
                raise PostError("config: a [tool] table is not post's: this is not a post config or run folder "
                                "(a run folder's config.toml is the one post run wrote)")
            valid = [f"{prefix}{k}" for k in fields]
            near = difflib.get_close_matches(dotted, valid + all_keys(RunConfig), n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else f"; valid keys here: {', '.join(valid)}"
            raise PostError(f"config: unknown key {dotted}{hint}")
        sub = _section_model(fields[key].annotation)
        if sub is not None:
            if not isinstance(value, dict):
                raise PostError(f"config: {dotted} must be a table of settings, got {value!r}")
            check_keys(value, sub, f"{dotted}.")


def _toml_value(value: Any) -> str:
    """A value as the user wrote it in TOML (true, not True; inf and nan, not JSON's Infinity and NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    try:
        return json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(value)


def _validation_message(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "config"
    got = first.get("input")
    got_text = "" if isinstance(got, dict) else f" (got {_toml_value(got)})"
    if first["type"] == "missing":
        return (f"config: {where}: required but missing: set it, or start from a preset (extends = \"smoke\"; "
                f"post presets show smoke prints a whole config)")
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:  # a rule across sections: its message names the keys; no "config: config:"
        return f"config: {message}"
    return f"config: {where}: {message}{got_text}"


def validate(data: dict[str, Any]) -> RunConfig:
    check_keys(data)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as err:
        raise PostError(_validation_message(err)) from None


# ---------------------------------------------------------------- TOML in and out

def read_toml(path: Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        raise PostError(f"config file {path} is a folder: give the path of a TOML file (a run folder's is {path / 'config.toml'})")
    if not path.is_file():
        raise PostError(f"config file {path} not found: give the path of a TOML file")
    try:
        text = path.read_text(encoding="utf-8-sig")  # a BOM (Windows editors) is not TOML
    except UnicodeDecodeError as err:
        raise PostError(f"config file {path} is not UTF-8 text (byte {err.start}): save it as UTF-8") from None
    except OSError as err:
        raise PostError(f"cannot read config file {path}: {err.strerror or err}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise PostError(f"config file {path} is not valid TOML: {err}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` → (["a", "b"], value); the value is read as TOML, else kept as a string."""
    if "=" not in text:
        raise PostError(f"--set {text!r}: expected KEY=VALUE, e.g. --set tune.lr=0.01")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise PostError(f"--set {text!r}: the key must be dotted names, e.g. tune.lr")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise PostError(f"--set {text!r}: {part} is a value, not a table")
        node[path[-1]] = value
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def to_toml(config: RunConfig) -> str:
    """The fully resolved config (defaults filled in); unset optional values are left out."""
    return tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


# Settings added after runs were recorded, with the default that reproduces what those runs did. At that
# default they are left out of every digest, so the run folders and suite reports made before them stay current.
LATE_DEFAULTS: dict[str, dict[str, Any]] = {"transfer": {"shift_loss": "paper", "init": "text"},
                                            "distill": {"init": "kept", "bridge_weight": 0.0, "prefix_share": 0.0, "prefix_length": 0,
                                                        "prefix_noise": 0.35, "prefix_source": "text",
                                                        "prefix_tasks": 8, "prefix_steps": 30, "prefix_inputs": 256},
                                            "public": {"pick": "random", "pool": 1024}}

# Sections that say how a run is examined, not what its stages compute: never in a digest, so setting them
# reruns nothing (the audit's own record keys on its section).
NOT_IN_DIGESTS = ("audit",)

# The runtime settings that change what a run computes (the rest of `runtime` says how: threads, device,
# checkpoint cadence). Stage fingerprints and the suite's config digest both read this one list.
RESULT_RUNTIME = ("seed", "dtype")


def result_runtime(config: RunConfig) -> dict[str, Any]:
    """The RESULT_RUNTIME settings of a config, for fingerprints and reports."""
    return {key: getattr(config.runtime, key) for key in RESULT_RUNTIME}


def stable_dump(config: RunConfig) -> dict[str, Any]:
    """`config.model_dump()` for digests: a late setting (LATE_DEFAULTS) at its default is left out."""
    data = config.model_dump()
    for section in NOT_IN_DIGESTS:
        data.pop(section, None)
    for section, defaults in LATE_DEFAULTS.items():
        for key, default in defaults.items():
            if data[section].get(key) == default:
                data[section].pop(key)
    return data
