"""`humantag run` (being built in issue 2)."""

import typer


def register(app: typer.Typer) -> None:
    pass
