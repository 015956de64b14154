"""Widgets of the POST dashboard; each draws from a `RunState` (post_tui.widgets.state)."""
