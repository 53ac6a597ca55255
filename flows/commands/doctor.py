"""`humantag doctor OUT [--fix]`: find (and repair) duplicate rows, temporary files and lost markers."""

from __future__ import annotations

import json
import sys
from typing import Optional

import typer

from humantag.flows.errors import UserError


def register(app: typer.Typer) -> None:
    app.command("doctor", no_args_is_help=True)(doctor_command)


def doctor_command(
    out: str = typer.Argument(..., help="The labeling output (folder or s3:// prefix) to check.", show_default=False),
    fix: bool = typer.Option(False, "--fix", help="Repair what is found: drop duplicate rows, remove temporary files and markers without files, write missing markers. Run it with no run writing into OUT."),
    endpoint_url: Optional[str] = typer.Option(None, "--endpoint-url", envvar="AWS_ENDPOINT_URL", help="S3 endpoint, when OUT is on an S3-compatible server."),
    json_report: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check OUT for what crashes, concurrent runs or older versions left.

    Reports duplicate rows, temporary files, shards without markers and
    markers without files; exits 1 if any is left. Duplicate rows are never
    read (each image's newest row is), but an index filled by an older
    version may hold them: after --fix, `humantag index OUT` reindexes the
    files involved.
    """
    from rich.console import Console
    from rich.table import Table

    from humantag.flows.doctor import examine, repair
    from humantag.indexers.layout import OutputLayout
    from humantag.workers.storage import StorageOptions, filesystem

    fs, root = filesystem(out, StorageOptions.from_env(endpoint_url=endpoint_url))
    layout = OutputLayout(root)
    if not fs.exists(layout.labels_dir) and not fs.exists(layout.runs_dir):
        raise UserError(f"{out} is not a humantag output (no labels/ or _runs/ in it)")
    report = examine(fs, layout, out)
    if fix and report.findings:
        report = repair(fs, layout, report)
    if json_report:
        sys.stdout.write(json.dumps(report.model_dump(mode="json")) + "\n")
    else:
        console = Console()
        table = Table(title=f"doctor {out}: {report.label_files} label file(s)")
        table.add_column("finding")
        table.add_column("found", justify="right")
        table.add_column("fixed", justify="right")
        found, fixed = report.counts(report.findings), report.counts(report.fixed)
        for kind in sorted(set(found) | set(fixed)):
            table.add_row(kind, str(found.get(kind, 0)), str(fixed.get(kind, 0)))
        if not found and not fixed:
            table.add_row("nothing to fix", "0", "0")
        console.print(table)
        for finding in report.findings[:20]:
            console.print(f"  {finding.kind.value}: {finding.path} {finding.detail}".rstrip(), markup=False, highlight=False)
        if len(report.findings) > 20:
            console.print(f"  ... and {len(report.findings) - 20} more (--json lists them all)")
        if report.findings and not fix:
            console.print("rerun with --fix to repair", style="bold")
    if report.findings:
        raise typer.Exit(1)
