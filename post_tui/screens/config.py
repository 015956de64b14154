"""Config editor: every key of the resolved config, validated as you type by engine.config.validate."""
from __future__ import annotations

import json
import re
import tomllib
import types
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Footer, Input, Label, Static

ERROR_WHERE = re.compile(r"^config: ([\w.\-\[\]]+): ")


# ---------------------------------------------------------------- the config's fields

def _fields() -> dict[str, Any]:
    """Dotted key → pydantic FieldInfo, in the engine's own order."""
    from engine.config import RunConfig, _section_model
    out: dict[str, Any] = {}

    def walk(model, prefix: str) -> None:
        for name, info in model.model_fields.items():
            sub = _section_model(info.annotation)
            if sub is not None:
                walk(sub, f"{prefix}{name}.")
            else:
                out[f"{prefix}{name}"] = info
    walk(RunConfig, "")
    return out


def _is_str(annotation: Any) -> bool:
    return annotation is str


def _is_str_or_list(annotation: Any) -> bool:
    """A name or a list of names (distill.corpus): text unless it is written as a list."""
    args = get_args(annotation)
    return get_origin(annotation) in (Union, types.UnionType) and str in args and any(get_origin(a) is list for a in args)


def _is_optional(annotation: Any) -> bool:
    return get_origin(annotation) in (Union, types.UnionType) and type(None) in get_args(annotation)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def to_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, ensure_ascii=False)  # the same literal in TOML for these values
    return repr(value)


def from_text(text: str, info: Any) -> tuple[bool, Any]:
    """(present, value): a string field takes the text as is; others read it as a TOML value
    (falling back to the text, so the engine's validation names what is wrong)."""
    if _is_str(info.annotation) or (_is_str_or_list(info.annotation) and not text.lstrip().startswith("[")):
        return True, text
    if not text.strip():
        return (False, None) if _is_optional(info.annotation) else (True, text)
    try:
        return True, tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return True, text.strip()


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def field_id(key: str) -> str:
    return key.replace(".", "--")


def error_key(message: str, keys: list[str]) -> str | None:
    """The config key an engine validation message is about ("config: tune.lr: ..." → tune.lr)."""
    match = ERROR_WHERE.match(message)
    if not match:
        return None
    where = match.group(1)
    best = None
    for key in keys:
        if (where == key or where.startswith(key + ".")) and (best is None or len(key) > len(best)):
            best = key
    return best


# ---------------------------------------------------------------- screens

class SavePath(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, default: str) -> None:
        super().__init__()
        self.default = default

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static("save the config as a TOML file (post run --config FILE runs it):", id="question")
            yield Input(self.default, id="save-path")
            yield Static("[b]enter[/b] save   [b]esc[/b] cancel", id="answers")
        yield Footer()

    @on(Input.Submitted)
    def _submit(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfigScreen(Screen):
    BINDINGS = [
        Binding("ctrl+r,f5", "run", "Run", priority=True),
        Binding("ctrl+s,f2", "save", "Save TOML", priority=True),
        Binding("escape", "back", "Back"),
        Binding("ctrl+q", "app.quit", "Quit"),
        Binding("down", "app.focus_next", "Next", show=False, priority=True),
        Binding("up", "app.focus_previous", "Previous", show=False, priority=True),
    ]

    def __init__(self, data: dict[str, Any], title: str, preset_keys: set[str] | None = None) -> None:
        super().__init__()
        from engine.config import validate
        from engine.errors import PostError
        self.fields = _fields()
        self.title_text = title
        self.preset_keys = preset_keys or set(flatten(data))
        defaults: dict[str, Any] = {}
        for key, info in self.fields.items():
            default = info.get_default(call_default_factory=True)
            defaults[key] = None if repr(default) == "PydanticUndefined" else default
        try:
            values = flatten(validate(json.loads(json.dumps(data))).model_dump(mode="json"))
        except PostError:
            values = {**defaults, **flatten(data)}
        self.initial = {key: to_text(values.get(key, defaults.get(key))) for key in self.fields}
        self.config: Any = None
        self.error = ""
        self.error_at: str | None = None
        self.config_name = str(data.get("name", "custom"))

    def compose(self) -> ComposeResult:
        yield Static(Text.assemble((" POST ", "bold reverse"), "  config · ", (self.title_text, "bold"),
                                   "  (", ("•", "bold cyan"), " set by the preset)"), id="title")
        yield Static("", id="verdict")
        with VerticalScroll(id="fields-scroll"):
            with Grid(id="fields"):  # one label and one input per key: few widgets, quick to mount
                section = None
                for key, info in self.fields.items():
                    head = key.split(".")[0] if "." in key else "run"
                    if head != section:
                        section = head
                        yield Static(Text(f"[{section}]"), classes="section")
                    name = key.split(".", 1)[1] if "." in key else key
                    mark = "•" if key in self.preset_keys else " "
                    label = Text.assemble((mark + " ", "bold cyan"), (name, "bold" if mark == "•" else ""))
                    yield Label(label, classes="key")
                    yield Input(self.initial[key], id=f"in-{field_id(key)}", classes="value",
                                tooltip=info.description or None, select_on_focus=False)
        yield Footer()

    def on_mount(self) -> None:
        self.inputs = {key: self.query_one(f"#in-{field_id(key)}", Input) for key in self.fields}
        self.error_line: Static | None = None
        self.check()
        self.inputs[next(iter(self.fields))].focus()

    # ------------------------------------------------------------ validation
    def values(self) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for key, info in self.fields.items():
            present, value = from_text(self.inputs[key].value, info)
            if present:
                flat[key] = value
        return nest(flat)

    def check(self) -> bool:
        """Validate with the engine's own validation; mark the offending key inline."""
        from engine.config import validate
        from engine.errors import PostError
        try:
            self.config = validate(self.values())
            self.error, where = "", None
        except PostError as err:
            self.config = None
            self.error = str(err)
            where = error_key(self.error, list(self.fields))
        if self.error_at != where:
            if self.error_at:
                self.inputs[self.error_at].remove_class("-invalid")
            if self.error_line is not None:
                self.error_line.remove()
                self.error_line = None
            if where:
                self.error_line = Static("", classes="field-error")
                self.query_one("#fields", Grid).mount(self.error_line, after=self.inputs[where])
        self.error_at = where
        if where:
            self.inputs[where].add_class("-invalid")
            self.error_line.update(Text("↑ " + self.error, style="red"))
        verdict = self.query_one("#verdict", Static)
        if self.error:
            verdict.update(Text("✗ " + self.error + " — fix it to run or save", style="bold red"))
            verdict.add_class("-invalid")
        else:
            verdict.update(Text.assemble(("✓ valid", "bold green"), "  ctrl+r (F5) runs · ctrl+s (F2) saves"))
            verdict.remove_class("-invalid")
        return self.config is not None

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        if event.input.id and event.input.id.startswith("in-"):
            self.check()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        self.app.action_focus_next()

    # ------------------------------------------------------------ actions
    def _refuse(self) -> bool:
        if self.check():
            return False
        self.app.bell()
        self.notify(self.error, title="the config is not valid", severity="error", markup=False)
        if self.error_at:
            self.inputs[self.error_at].focus()
        return True

    def action_run(self) -> None:
        if not self._refuse():
            self.app.run_config(self.config)

    def action_save(self) -> None:
        if self._refuse():
            return
        default = str(Path.cwd() / f"{self.config.name}.toml")
        self.app.push_screen(SavePath(default), self._save_to)

    def _save_to(self, path: str | None) -> None:
        if not path or self.config is None:
            return
        from engine.config import to_toml
        target = Path(path).expanduser()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            from engine.artifacts import write_text
            write_text(target, to_toml(self.config))
        except OSError as err:
            self.notify(f"cannot write {target}: {err.strerror or err}", severity="error", markup=False)
            return
        self.saved_to = target
        self.notify(f"saved {target}\npost run --config {target} runs it", title="saved", markup=False)

    def action_back(self) -> None:
        self.app.pop_screen()
