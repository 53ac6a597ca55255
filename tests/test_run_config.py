"""One run configuration: every command's flags come from RunConfig; nothing is declared twice."""

from __future__ import annotations

import os
import re
from typing import Optional

import pytest
from pydantic import BaseModel, Field, SecretStr

from humantag.flows import options
from humantag.flows.commands.deploy import nightly_options, schedule_options
from humantag.flows.commands.run import BACKFILL_FIXED, command_options, output_options
from humantag.flows.config import PoolConfig, RunConfig, RunMode, run_options
from humantag.flows.deploy import deployment_parameters
from humantag.flows.errors import UserError
from humantag.flows.resources import fit_pool
from humantag.workers.labelers.base import Placement
from tests.fixtures.cli import run_cli


def _flags(opts: list[options.Option]) -> set[str]:
    return {o.primary for o in opts}


def test_run_backfill_and_deploy_nightly_offer_the_same_run_options():
    run_flags = _flags(command_options({}))
    backfill_flags = _flags(command_options(BACKFILL_FIXED))
    fixed_flags = _flags([o for o in run_options() if o.path in BACKFILL_FIXED])
    assert backfill_flags | fixed_flags == run_flags and not backfill_flags & fixed_flags
    secrets = _flags([o for o in run_options() if o.secret])
    assert secrets == {"--aws-access-key-id", "--aws-secret-access-key", "--opensearch-password"}
    nightly = _flags(nightly_options()) - _flags(schedule_options())
    assert nightly | secrets == _flags(run_options())  # everything `run` can do can be scheduled, secrets aside
    assert run_flags - _flags(output_options()) == _flags(run_options())


def test_the_cli_offers_exactly_the_generated_options():
    import typer.main

    from humantag.flows.cli import app

    click_app = typer.main.get_command(app)
    ctx = click_app.make_context("humantag", ["run"], resilient_parsing=True)
    for path, expected in ((["run"], command_options({})), (["backfill"], command_options(BACKFILL_FIXED)),
                           (["deploy", "nightly"], nightly_options())):
        command = click_app
        for name in path:
            command = command.get_command(ctx, name)
        offered = {p.opts[0] if p.opts[0].startswith("--") else p.name for p in command.params if p.name != "help"}
        wanted = {o.primary if not o.argument else o.param for o in expected}
        assert offered - {"--help"} == wanted, path


class _Inner(BaseModel):
    retry_budget_s: float = Field(default=30.0, description="Seconds of retries before giving up.")
    token: Optional[SecretStr] = Field(default=None, description="A secret.")


class _Outer(BaseModel):
    source: str = Field(description="Where from.", json_schema_extra={"argument": True})
    fancy: dict[str, int] = Field(default={}, description="KEY=VALUE pairs.")
    inner: _Inner = _Inner()


def test_a_new_field_becomes_a_flag_with_its_help_env_var_and_default(monkeypatch):
    opts = {o.primary: o for o in options.options_of(_Outer)}
    budget = opts["--retry-budget-s"]
    assert budget.envvar == ("HUMANTAG_RETRY_BUDGET_S",) and budget.help.startswith("Seconds") and budget.default == 30.0
    assert opts["--token"].secret and opts["--url" if "--url" in opts else "--source"].argument
    model = options.model_from_values(_Outer, list(opts.values()), {"source": "x", "fancy": ["a=1"], "retry_budget_s": 2})
    assert model.inner.retry_budget_s == 2 and model.fancy == {"a": 1}
    with pytest.raises(UserError, match="--retry-budget-s"):
        options.model_from_values(_Outer, list(opts.values()), {"source": "x", "retry_budget_s": "soon"})
    monkeypatch.setenv("HUMANTAG_TOKEN", "s3cr3t")
    filled = options.fill_secrets_from_env(model, list(opts.values()))
    assert filled.inner.token.get_secret_value() == "s3cr3t"
    assert options.dump_without_secrets(filled, list(opts.values()))["inner"]["token"] is None


def test_deployment_stores_everything_but_secrets_with_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {"url": "photos", "out": "out/", "aws_secret_access_key": "s3cr3t", "aws_access_key_id": "AKIA",
              "opensearch_url": ["http://u:pw@127.0.0.1:9200"], "opensearch_password": "pw", "include": ["a/*"],
              "shard_concurrency": 3, "mode": RunMode.incremental}
    config = options.model_from_values(RunConfig, run_options(), values)
    assert config.source.url == str(tmp_path / "photos") and config.dest == str(tmp_path / "out")
    assert config.opensearch is not None and config.opensearch.username == "u"
    stored = deployment_parameters(config)["config"]
    assert stored["storage"]["secret"] is None and stored["storage"]["key"] is None
    assert stored["opensearch"]["password"] is None and stored["opensearch"]["urls"] == ["http://127.0.0.1:9200"]
    assert stored["shard_concurrency"] == 3 and stored["source"]["include"] == ["a/*"] and stored["labeler"] is None
    assert "s3cr3t" not in str(stored) and "AKIA" not in str(stored)
    assert RunConfig.model_validate(stored).mode is RunMode.incremental
    assert options.model_from_values(RunConfig, run_options(), {"url": "s3://b/p", "out": "o"}).opensearch is None


@pytest.mark.parametrize("values, message", [
    ({"shard_size": 0}, "--shard-size"),
    ({"labeler": "nope"}, "unknown labeler"),
    ({"relabel_stale": True}, "--relabel-stale needs --mode incremental"),
    ({"labeler_option": ["novalue"]}, "--labeler-option expects KEY=VALUE"),
])
def test_bad_values_are_named_by_their_flag(values, message):
    with pytest.raises(UserError, match=re.escape(message)):
        options.model_from_values(RunConfig, run_options(), {"url": "/x", "out": "/y", **values})


TWO_CPU = [{"CPU": 2.0}]
TWO_NODES = [{"CPU": 1.0}, {"CPU": 1.0}]


def test_pool_defaults_are_fitted_to_the_cluster_and_impossible_ones_say_how_to_fix_them():
    cpu_labeler = Placement(num_cpus=1.0, num_gpus=0.0)
    assert fit_pool(PoolConfig(replicas=1), cpu_labeler, TWO_CPU).num_cpus == 1.0
    assert fit_pool(PoolConfig(replicas=2), cpu_labeler, TWO_CPU).num_cpus == 0.75
    assert fit_pool(PoolConfig(replicas=2), cpu_labeler, TWO_NODES).num_cpus == 0.5
    with pytest.raises(UserError) as err:
        fit_pool(PoolConfig(replicas=2, num_cpus=1), cpu_labeler, TWO_CPU)
    assert "use --num-cpus 0.75 or --replicas 1" in str(err.value)
    with pytest.raises(UserError, match="GPU"):
        fit_pool(PoolConfig(replicas=1), Placement(num_cpus=1.0, num_gpus=1.0), TWO_CPU)


def test_help_is_readable_at_80_columns():
    env = {"COLUMNS": "80"}
    for command, opts in ((["run"], command_options({})), (["deploy", "nightly"], nightly_options())):
        result = run_cli(*command, "--help", env=env, timeout=60)
        assert result.returncode == 0, result.stderr
        assert max(len(line) for line in result.stdout.splitlines()) <= 80
        words = set(re.findall(r"[-\w]+", result.stdout))
        for opt in opts:
            if not opt.argument:
                assert opt.primary in words, opt.primary
                assert set(opt.envvar) <= words, opt.envvar
    version = run_cli("--version", timeout=60)
    assert version.returncode == 0 and re.fullmatch(r"humantag \S+\n", version.stdout)


def test_a_pool_too_big_for_this_machine_stops_before_ray_starts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8)).save(src / "a.png")
    result = run_cli("run", str(src), "--out", str(tmp_path / "out"), "--labeler", "image-facts",
                     "--replicas", "64", "--num-cpus", "1", timeout=120)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith("humantag: error: 64 replica(s) × 1 CPU + read+decode tasks (0.5 CPU) do not fit")
    assert " use --" in lines[0] and not (tmp_path / "out" / "_runs" / "run").exists()


def test_configurations_stored_before_mode_existed_still_load():
    old = {"source": {"url": "s3://b/p"}, "dest": "s3://b/out", "labeler": "auto", "incremental": True, "backfill": False}
    config = RunConfig.model_validate(old)
    assert config.mode is RunMode.incremental and config.labeler is None
    assert RunConfig.model_validate({**old, "backfill": True, "labeler": "cpu"}).mode is RunMode.backfill
