"""Presets: every shipped preset with its models, tasks, budgets and whether its assets are cached."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Static

BUILTIN_SOURCES = ("smoke",)


def asset_status(ref: str) -> tuple[str, str]:
    """(word, style) for one model / data reference: built-in, cached, missing, local or hub."""
    if not ref:
        return "", ""
    if ref.startswith("tiny:") or ref in BUILTIN_SOURCES:
        return "built-in", "green"
    try:
        from engine.assets import is_asset_ref, is_cached
    except ImportError:  # the asset catalogue is optional
        is_asset_ref = is_cached = None
    if is_asset_ref is not None and is_asset_ref(ref):
        try:
            return ("cached", "green") if is_cached(ref.strip().lower()) else ("not cached", "yellow")
        except Exception:
            return "unknown", "dim"
    if Path(ref).expanduser().exists():
        return "local", "green"
    if ref.startswith(("/", "./", "~")) or ref.endswith((".csv", ".jsonl", ".parquet", ".json")):
        return "missing", "red"
    return "hub", "cyan"


def preset_info(name: str) -> dict[str, Any]:
    """Everything the presets table shows about one preset (never raises: a broken preset says why)."""
    from engine.errors import PostError
    from engine.presets import describe, load_config
    info: dict[str, Any] = {"name": name, "error": ""}
    try:
        info["description"] = describe(name)
        cfg = load_config(name)
    except PostError as err:
        info.update(description=info.get("description", ""), error=str(err))
        return info
    info["config"] = cfg
    info["models"] = cfg.models.large + (f" → {cfg.models.small}" if cfg.models.small else "")
    task = cfg.task.source + (f"/{cfg.task.subset}" if cfg.task.subset else "")
    public = cfg.public.source + (f"/{cfg.public.subset}" if cfg.public.subset else "")
    info["tasks"] = task if task == public else f"{task} · public {public}"
    tune = f"{cfg.tune.steps}" if cfg.tune.steps else f"{cfg.tune.epochs:g}ep"
    distill = str(cfg.distill.steps) if cfg.distill.enabled and not cfg.models.small else "-"
    parts = [f"{distill}/{tune}/{cfg.transfer.steps}"]
    if cfg.privacy.enabled:
        parts.append(f"ε{cfg.privacy.epsilon:g}" if cfg.privacy.epsilon is not None else f"σ{cfg.privacy.noise_multiplier:g}")
    info["budget"] = " ".join(parts)
    refs = {"large model": cfg.models.large, "student": cfg.models.small, "task": cfg.task.source,
            "public": cfg.public.source}
    if cfg.distill.enabled and not cfg.models.small:
        corpus = cfg.distill.corpus or cfg.public.source
        for i, source in enumerate(corpus if isinstance(corpus, list) else [corpus]):
            refs["distill corpus" + (f" {i + 1}" if isinstance(corpus, list) else "")] = source
    statuses = {what: asset_status(ref) for what, ref in refs.items() if ref}
    info["assets"] = statuses
    words = {word for word, _ in statuses.values()}
    if words & {"not cached", "missing"}:
        info["assets_word"] = ("missing", "red") if "missing" in words else ("fetch", "yellow")
    elif words <= {"built-in", "cached", "local"}:
        info["assets_word"] = ("cached", "green")
    else:
        info["assets_word"] = ("hub", "cyan")
    return info


class PresetsScreen(Screen):
    BINDINGS = [
        Binding("enter", "run", "Run", priority=True),
        Binding("e", "edit", "Edit config"),
        Binding("r", "runs", "Past runs"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.infos: dict[str, dict[str, Any]] = {}

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" POST ", "bold reverse"), "  presets — ",
                                   ("enter", "bold"), " runs one, ", ("e", "bold"), " edits it first, ",
                                   ("r", "bold"), " shows past runs"), id="title")
        yield DataTable(id="presets", cursor_type="row", zebra_stripes=True)
        yield Static("", id="detail")
        yield Footer()

    def on_mount(self) -> None:
        from engine.presets import preset_names
        table = self.query_one("#presets", DataTable)
        table.add_columns("preset", "assets", "steps d/t/x", "large model", "tasks", "description")
        for name in preset_names():
            info = self.infos[name] = preset_info(name)
            word, style = info.get("assets_word", ("invalid", "red")) if not info["error"] else ("invalid", "red")
            table.add_row(Text(name, style="bold"), Text(word, style=style), info.get("budget", "—"),
                          info.get("models", "—"), info.get("tasks", "—"),
                          info["description"] or info["error"], key=name)
        table.focus()
        if self.infos:
            self._show(next(iter(self.infos)))

    @property
    def selected(self) -> str | None:
        table = self.query_one("#presets", DataTable)
        if not table.row_count:
            return None
        return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key is not None and event.row_key.value:
            self._show(event.row_key.value)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        self.action_run()

    def _show(self, name: str) -> None:
        info = self.infos.get(name, {})
        text = Text()
        text.append(f"{name}", style="bold")
        text.append(f"  {info.get('description', '')}\n")
        if info.get("error"):
            text.append(info["error"], style="red")
        else:
            cfg = info["config"]
            text.append("models ", style="bold")
            text.append(f"{info['models']}{'' if cfg.models.small else ' → distilled student'}   ")
            text.append("tasks ", style="bold")
            text.append(f"{info['tasks']}\n")
            text.append("budget ", style="bold")
            distill = (f"distill {cfg.distill.steps} steps · " if cfg.distill.enabled and not cfg.models.small else "")
            tune = f"{cfg.tune.steps} steps" if cfg.tune.steps else f"{cfg.tune.epochs:g} epochs"
            text.append(f"{distill}tune {tune} · transfer {cfg.transfer.steps} steps "
                        f"({', '.join(cfg.transfer.methods)}) · full PT {'yes' if cfg.eval.full_pt else 'no'}\n")
            text.append("privacy ", style="bold")
            if cfg.privacy.enabled:
                text.append(f"ε {cfg.privacy.epsilon}, δ {cfg.privacy.delta or '1/N'}, clip {cfg.privacy.clip}, "
                            f"{cfg.privacy.accountant}\n")
            else:
                text.append("not private\n", style="yellow")
            text.append("assets ", style="bold")
            for i, (what, (word, style)) in enumerate(info["assets"].items()):
                text.append(("" if not i else " · ") + f"{what} ")
                text.append(word, style=style)
        self.query_one("#detail", Static).update(text)

    def _config_or_warn(self) -> Any:
        name = self.selected
        if name is None:
            return None
        info = self.infos[name]
        if info["error"]:
            self.notify(info["error"], severity="error", title=name, markup=False)
            return None
        return name

    def action_run(self) -> None:
        name = self._config_or_warn()
        if name is not None:
            self.app.run_preset(name)

    def action_edit(self) -> None:
        name = self._config_or_warn()
        if name is not None:
            self.app.edit_preset(name)

    def action_runs(self) -> None:
        self.app.show_runs()
