"""Screens of post-tui: presets, config editor, run dashboard, past runs, and a yes/no dialog."""
