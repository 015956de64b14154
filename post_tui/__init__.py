"""Front ends of post: the headless `post` CLI (cli.py) and the Textual app `post-tui` (app.py).

Both only render the engine's events; neither holds any of the method.
"""
