"""infra/ agrees with the code and docs/deploy.md: services, ports, URLs, env var names, GPUs, telemetry.

Docker cannot run on the development machines, so the compose file, the Dockerfile
and the KubeRay manifest are checked by parsing them. The set of environment
variables the code reads is derived by scanning the sources, not listed by hand.
"""

from __future__ import annotations

import ast
import re
import shlex
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
COMPOSE = INFRA / "docker-compose.yml"
DOCKERFILE = INFRA / "Dockerfile"
DOCKERIGNORE = INFRA / "Dockerfile.dockerignore"
KUBERAY = INFRA / "kuberay" / "raycluster.yaml"
DOCS = ROOT / "docs" / "deploy.md"
CODE_DIRS = ("flows", "workers", "indexers")

# Names the stack sets before the code that reads them lands (none now). Delete a name once the scan finds it.
PENDING_READS: set[str] = set()
# Read by the OS, CPython, pip or apt inside the image build, never by our code.
IMAGE_RUNTIME_VARS = {"PATH", "DEBIAN_FRONTEND", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "RAY_USAGE_STATS_ENABLED": "0"}
# What docs/deploy.md must tell a newcomer to set.
DOCUMENTED_VARS = {
    "PREFECT_API_URL", "RAY_ADDRESS", "OPENSEARCH_URL", "OPENSEARCH_USER", "OPENSEARCH_PASSWORD",
    "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
}
WORK_POOL = "humantag-process"
ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
ENV_RECEIVERS = {"os.environ", "environ", "env"}


# ---- what the code reads --------------------------------------------------------------------


def _module_constants(tree: ast.Module) -> dict[str, str]:
    consts: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
                consts[node.targets[0].id] = node.value.value
    return consts


def _resolve(node: ast.AST, consts: dict[str, str]) -> str | None:
    """A string expression made of literals, module constants and `+` (e.g. PREFIX + "URL")."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return consts.get(node.id)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _resolve(node.left, consts), _resolve(node.right, consts)
        return left + right if left is not None and right is not None else None
    return None


def env_reads_in_source(source: str) -> set[str]:
    """Names read through os.environ/os.getenv/env.get(...)/env[...] or declared as a typer envvar."""
    tree = ast.parse(source)
    consts = _module_constants(tree)
    found: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and node.args:
                receiver = ast.unparse(func.value)
                if (func.attr in {"get", "setdefault", "pop"} and receiver in ENV_RECEIVERS) or (
                    func.attr == "getenv" and receiver == "os"
                ):
                    found.append(node.args[0])
            for kw in node.keywords:
                if kw.arg == "envvar":
                    found.extend(kw.value.elts if isinstance(kw.value, (ast.List, ast.Tuple)) else [kw.value])
        elif isinstance(node, ast.Subscript) and ast.unparse(node.value) in ENV_RECEIVERS:
            found.append(node.slice)
        elif isinstance(node, ast.Compare) and any(isinstance(op, ast.In) for op in node.ops):
            if any(ast.unparse(c) in ENV_RECEIVERS for c in node.comparators):
                found.append(node.left)
    names = {_resolve(n, consts) for n in found}
    # PREFIX + suffix with suffix a loop variable: PREFIX + each upper-case literal of the module.
    literals = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for node in found:
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add) and _resolve(node, consts) is None:
            prefix = _resolve(node.left, consts)
            if prefix and prefix.endswith("_"):
                names |= {prefix + lit for lit in literals if lit != prefix and re.fullmatch(r"[A-Z][A-Z0-9_]*[A-Z0-9]", lit)}
    return {n for n in names if n and ENV_NAME.match(n)}


@cache
def code_reads() -> frozenset[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            names |= env_reads_in_source(path.read_text())
    # Flags generated from the configuration models read env vars derived from their names (flows/options.py).
    from humantag.flows.commands.deploy import schedule_options
    from humantag.flows.commands.opensearch_options import opensearch_options
    from humantag.flows.commands.run import output_options
    from humantag.flows.config import run_options

    for option in run_options() + output_options() + schedule_options() + opensearch_options():
        names |= set(option.envvar)
    return frozenset(names)


@cache
def prefect_settings() -> frozenset[str]:
    from prefect.settings import Settings
    from prefect.settings.legacy import _get_valid_setting_names

    return frozenset(_get_valid_setting_names(Settings))


@cache
def hf_hub_constants_source() -> str:
    import huggingface_hub.constants

    return Path(huggingface_hub.constants.__file__).read_text()


def read_by_something(name: str) -> bool:
    """Our code reads it, our CLI sets it as a default for Prefect/Ray, or the library it is for reads it."""
    from humantag.flows.runtime import DEFAULT_ENV

    if name in code_reads() or name in DEFAULT_ENV or name in PENDING_READS:
        return True
    if name.startswith("PREFECT_"):
        return name in prefect_settings()
    if name.startswith("HF_"):
        return f'"{name}"' in hf_hub_constants_source()
    return False


# ---- parsing the files ----------------------------------------------------------------------

_INTERPOLATION = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} with no VAR set: the default."""
    return _INTERPOLATION.sub(lambda m: m.group(2) or "", value)


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def command_of(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [interpolate(str(c)) for c in cmd]


def flag(cmd: list[str], name: str) -> str | None:
    """--name=value or --name value."""
    for i, arg in enumerate(cmd):
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
        if arg == name and i + 1 < len(cmd):
            return cmd[i + 1]
    return None


def our_services() -> dict[str, dict[str, Any]]:
    """Services running the project's image."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def published(service: dict[str, Any]) -> list[tuple[str, int, int]]:
    out = []
    for entry in service.get("ports", []):
        ip, host, container = str(entry).split(":")
        out.append((ip, int(host), int(container)))
    return out


def container_ports(service: dict[str, Any]) -> set[int]:
    return {c for _, _, c in published(service)} | {int(p) for p in service.get("expose", [])}


def dockerfile_instructions() -> list[tuple[str, str]]:
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            current += raw.rstrip()[:-1] + " "
            continue
        current += raw
        keyword, _, rest = current.strip().partition(" ")
        lines.append((keyword.upper(), rest.strip()))
        current = ""
    return lines


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            env.update(token.split("=", 1) for token in shlex.split(rest))
    return env


def dockerfile_args() -> dict[str, str]:
    return dict(rest.split("=", 1) for keyword, rest in dockerfile_instructions() if keyword == "ARG" and "=" in rest)


@cache
def kuberay_docs() -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(KUBERAY.read_text()) if d]


def ray_cluster() -> dict[str, Any]:
    (cluster,) = [d for d in kuberay_docs() if d["kind"] == "RayCluster"]
    return cluster


def pod_specs() -> dict[str, dict[str, Any]]:
    spec = ray_cluster()["spec"]
    pods = {"head": spec["headGroupSpec"]["template"]["spec"]}
    pods.update({g["groupName"]: g["template"]["spec"] for g in spec["workerGroupSpecs"]})
    return pods


def pyproject_requirement(name: str) -> Requirement:
    """The requirement on `name` among pyproject's quoted requirement strings (no tomllib on 3.10)."""
    quoted = re.findall(r'^\s*"([A-Za-z0-9_.\[\]-]+\s*[=<>!~][^"]*)",?\s*$', (ROOT / "pyproject.toml").read_text(), flags=re.M)
    (req,) = [Requirement(q) for q in quoted if Requirement(q).name == name]
    return req


def docs_text() -> str:
    return DOCS.read_text()


def docs_service_table() -> set[str]:
    """First-column `names` of the docs' service table."""
    return set(re.findall(r"^\| `([a-z0-9-]+)` \| [^|]*(?:image|humantag|/)[^|]*\|", docs_text(), flags=re.M))


def url_parts(value: str) -> tuple[str, str, int] | None:
    m = re.match(r"^(\w+)://([\w.-]+):(\d+)", value)
    return (m.group(1), m.group(2), int(m.group(3))) if m else None


# ---- the scanner itself ---------------------------------------------------------------------


def test_scanner_reads_every_form_the_code_uses() -> None:
    source = '''
import os
PREFIX = "OPENSEARCH_"
def f(env):
    os.environ.get("A_ONE"); os.getenv("A_TWO"); os.environ["A_THREE"]; env.get(PREFIX + "URL")
    os.environ.setdefault("A_FOUR", "1"); "A_FIVE" in os.environ
    other.get("NOT_ENV"); env.get(f"{PREFIX}DYNAMIC")
def cmd(x = typer.Option(None, envvar="A_SIX"), y = typer.Option(None, envvar=["A_SEVEN", "A_EIGHT"])): ...
'''
    assert env_reads_in_source(source) == {
        "A_ONE", "A_TWO", "A_THREE", "OPENSEARCH_URL", "A_FOUR", "A_FIVE", "A_SIX", "A_SEVEN", "A_EIGHT",
    }


def test_scanner_expands_a_prefix_over_the_suffixes_in_its_module() -> None:
    source = '''
import os
ENV_PREFIX = "OPENSEARCH_"
def from_env(env=None):
    env = dict(os.environ if env is None else env)
    for key, suffix in {"username": "USER", "ca_file": "CA_FILE"}.items():
        if env.get(ENV_PREFIX + suffix): pass
'''
    assert env_reads_in_source(source) == {"OPENSEARCH_USER", "OPENSEARCH_CA_FILE"}


def test_scan_of_the_code_finds_what_it_reads() -> None:
    assert {"RAY_ADDRESS", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
            "AWS_REGION", "AWS_DEFAULT_REGION", "HUMANTAG_OUT", "HUMANTAG_MODEL"} <= code_reads()


def test_unknown_names_are_not_read_by_anything() -> None:
    for name in ("AWS_ENDPOINT", "RAY_ADRESS", "PREFECT_API_URI", "HF_HOMEDIR", "OPENSEARCH_HOST"):
        assert not read_by_something(name), name


# ---- docker compose -------------------------------------------------------------------------


def test_compose_has_the_stack_and_the_docs_name_the_same_services() -> None:
    expected = {"opensearch", "opensearch-dashboards", "seaweedfs", "prefect-server", "prefect-worker",
                "ray-head", "ray-worker-gpu"}
    assert set(services()) == expected
    assert docs_service_table() == expected
    assert set(our_services()) == {"prefect-worker", "ray-head", "ray-worker-gpu"}
    images = {svc["image"] for svc in our_services().values()}
    assert len(images) == 1, images
    for svc in our_services().values():
        assert svc["build"] == {"context": "..", "dockerfile": "infra/Dockerfile"}
    assert (COMPOSE.parent / our_services()["ray-head"]["build"]["context"] / "infra" / "Dockerfile").is_file()
    assert services()["prefect-server"]["image"] == "prefecthq/prefect:3.8.8-python3.11"
    assert f"prefect=={services()['prefect-server']['image'].split(':')[1].split('-')[0]}" == str(pyproject_requirement("prefect"))


@pytest.mark.parametrize("name", ["prefect-worker", "ray-head", "ray-worker-gpu"])
def test_every_variable_our_containers_get_is_read(name: str) -> None:
    unread = {k for k in env_of(services()[name]) if not read_by_something(k)}
    assert not unread, f"{name} sets variables nothing reads: {sorted(unread)}"


def test_prefect_server_settings_are_real_prefect_settings() -> None:
    env = env_of(services()["prefect-server"])
    assert {k for k in env if k.startswith("PREFECT_")} <= prefect_settings()
    assert set(env) - {"DO_NOT_TRACK"} <= prefect_settings()


def test_urls_in_the_environment_point_at_service_ports() -> None:
    for name, svc in our_services().items():
        for key, value in env_of(svc).items():
            parts = url_parts(value)
            if parts is None:
                continue
            _, host, port = parts
            assert host in services(), f"{name}: {key}={value} names no service"
            assert port in container_ports(services()[host]), f"{name}: {key}={value}: {host} has no port {port}"
    worker = env_of(services()["prefect-worker"])
    assert worker["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert worker["OPENSEARCH_URL"] == "http://opensearch:9200"
    assert worker["AWS_ENDPOINT_URL"] == "http://seaweedfs:8333"
    assert worker["RAY_ADDRESS"] == "ray://ray-head:10001"
    for svc in our_services().values():
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "OPENSEARCH_URL"} <= set(env_of(svc))


def test_service_commands_agree_with_the_ports() -> None:
    head = command_of(services()["ray-head"])
    assert head[:3] == ["ray", "start", "--head"] and "--block" in head
    assert flag(head, "--port") == "6379" and 6379 in container_ports(services()["ray-head"])
    assert flag(head, "--ray-client-server-port") == "10001"
    assert flag(head, "--dashboard-port") == "8265" and flag(head, "--dashboard-host") == "0.0.0.0"
    worker = command_of(services()["ray-worker-gpu"])
    assert worker[:2] == ["ray", "start"] and flag(worker, "--address") == "ray-head:6379" and "--block" in worker
    prefect = command_of(services()["prefect-server"])
    assert prefect[:3] == ["prefect", "server", "start"] and flag(prefect, "--host") == "0.0.0.0"
    assert 4200 in container_ports(services()["prefect-server"]) and flag(prefect, "--port") in (None, "4200")
    pool_worker = command_of(services()["prefect-worker"])
    assert pool_worker[:3] == ["prefect", "worker", "start"]
    assert flag(pool_worker, "--pool") == WORK_POOL and flag(pool_worker, "--type") == "process"
    weed = command_of(services()["seaweedfs"])
    assert weed[0] == "mini" and flag(weed, "-s3.port") == "8333" and 8333 in container_ports(services()["seaweedfs"])
    assert env_of(services()["seaweedfs"])["AWS_ACCESS_KEY_ID"] == env_of(services()["ray-head"])["AWS_ACCESS_KEY_ID"]
    assert env_of(services()["seaweedfs"])["AWS_SECRET_ACCESS_KEY"] == env_of(services()["ray-head"])["AWS_SECRET_ACCESS_KEY"]


def test_ports_are_loopback_only_and_match_the_docs() -> None:
    host_ports: set[int] = set()
    for name, svc in services().items():
        for ip, host, container in published(svc):
            assert ip == "127.0.0.1", f"{name} publishes on {ip}"
            assert host == container, f"{name}: {host}->{container}; the docs use the same number inside and out"
            host_ports.add(host)
    doc_ports = {int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", docs_text())}
    assert doc_ports == host_ports
    assert host_ports == {9200, 5601, 8333, 4200, 8265, 10001}


def test_gpu_services_reserve_an_nvidia_device() -> None:
    gpu_services = []
    for name, svc in services().items():
        num_gpus = float(flag(command_of(svc), "--num-gpus") or 0)
        devices = svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
        if num_gpus > 0:
            gpu_services.append(name)
            assert len(devices) == 1, name
            (device,) = devices
            assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
            assert device["count"] == num_gpus, f"{name}: reserves {device['count']} GPUs, tells Ray {num_gpus}"
        else:
            assert not devices, f"{name} reserves a GPU it does not give Ray"
    assert gpu_services == ["ray-worker-gpu"]


def test_dependencies_wait_for_health_and_volumes_are_named() -> None:
    declared = set(compose().get("volumes") or {})
    for name, svc in services().items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services() and "healthcheck" in services()[dep], f"{name} -> {dep}"
            assert cond == {"condition": "service_healthy"}
        for volume in svc.get("volumes", []):
            source = interpolate(str(volume)).split(":")[0]
            assert source.startswith(("/", ".")) or source in declared, f"{name}: volume {source} not declared"
    for name in ("opensearch", "seaweedfs", "prefect-server", "ray-head"):
        assert "healthcheck" in services()[name], name
    assert {"opensearch", "prefect-server", "ray-head", "seaweedfs"} <= set(services()["prefect-worker"]["depends_on"])
    assert any(str(v).endswith(":/models") for v in services()["ray-worker-gpu"]["volumes"])


def test_telemetry_is_off_wherever_our_code_or_prefect_runs() -> None:
    for name in [*our_services(), "prefect-server"]:
        env = env_of(services()[name])
        wanted = TELEMETRY_OFF if name in our_services() else {k: v for k, v in TELEMETRY_OFF.items() if not k.startswith("RAY")}
        assert {k: env.get(k) for k in wanted} == wanted, name
    assert "-master.telemetry=false" in command_of(services()["seaweedfs"])
    assert {k: dockerfile_env().get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF
    for group, pod in pod_specs().items():
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert {k: env.get(k) for k in TELEMETRY_OFF} == TELEMETRY_OFF, group


# ---- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_pins_torch_as_pyproject_does_and_installs_it_first() -> None:
    (pin,) = pyproject_requirement("torch").specifier
    assert pin.operator == "=="
    assert dockerfile_args()["TORCH_VERSION"] == pin.version
    instructions = dockerfile_instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("nvidia/cuda:")
    runs = [rest for keyword, rest in instructions if keyword == "RUN"]
    torch_first = next(i for i, r in enumerate(runs) if "pip install" in r and '"torch==${TORCH_VERSION}"' in r)
    project = next(i for i, r in enumerate(runs) if re.search(r"pip install \.(\s|$)", r))
    assert torch_first < project
    assert '"torch==${TORCH_VERSION}"' in runs[project], "the project install must keep the pin"
    assert not any(re.search(r"\btorch(?![=\w])", r) for r in runs if "pip install" in r and "torch==" not in r)


# What `pip install .` needs: the project files and the three folders installed as humantag.*.
BUILD_INPUTS = {"pyproject.toml", "setup.py", "README.md", "flows", "workers", "indexers"}


def test_dockerfile_copies_sources_only_never_weights() -> None:
    weights = re.compile(r"(safetensors|\.bin\b|\.pt\b|\.pth\b|\.gguf|models?\b|Human_LLaVA|/models)", re.I)
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD"):
            assert keyword == "COPY", "ADD can fetch URLs; use COPY"
            *sources, dest = shlex.split(rest)
            assert set(sources) <= BUILD_INPUTS, sources
            assert not weights.search(rest), rest
    env = dockerfile_env()
    assert env["HF_HOME"].startswith("/models/") and env["HF_HUB_OFFLINE"] == "1"
    assert env["HUMANTAG_MODEL_CACHE"].startswith("/models/")
    unread = {k for k in env if k not in IMAGE_RUNTIME_VARS and not read_by_something(k)}
    assert not unread, sorted(unread)
    ignore = [line.strip() for line in DOCKERIGNORE.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", "the context must start from nothing"
    assert {"**/*.safetensors", "**/*.bin", "**/*.pt"} <= set(ignore)
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert allowed == BUILD_INPUTS


# ---- KubeRay --------------------------------------------------------------------------------


def test_kuberay_cluster_has_gpu_workers_running_our_image() -> None:
    cluster = ray_cluster()
    assert cluster["apiVersion"] == "ray.io/v1"
    ray_version = cluster["spec"]["rayVersion"]
    assert ray_version == dockerfile_args()["RAY_VERSION"]
    assert pyproject_requirement("ray").specifier.contains(ray_version)
    image = next(iter(our_services().values()))["image"]
    groups = cluster["spec"]["workerGroupSpecs"]
    assert groups, "no worker group"
    for group in groups:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (container,) = group["template"]["spec"]["containers"]
        assert container["image"] == image
        limits = container["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1
        assert int(container["resources"]["requests"].get("nvidia.com/gpu", limits["nvidia.com/gpu"])) == int(limits["nvidia.com/gpu"])
    (head,) = cluster["spec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert head["image"] == image and "nvidia.com/gpu" not in head["resources"].get("limits", {})
    assert {p["containerPort"] for p in head["ports"]} == {6379, 8265, 10001}


def test_kuberay_env_comes_from_a_secret_and_is_read_by_the_code() -> None:
    claims = {d["metadata"]["name"] for d in kuberay_docs() if d["kind"] == "PersistentVolumeClaim"}
    for group, pod in pod_specs().items():
        (container,) = pod["containers"]
        names = [e["name"] for e in container["env"]]
        unread = {n for n in names if not read_by_something(n)}
        assert not unread, f"{group}: {sorted(unread)}"
        from_secret = {e["name"] for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
        assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_REGION",
                "OPENSEARCH_URL", "OPENSEARCH_USER", "OPENSEARCH_PASSWORD"} <= from_secret
        for e in container["env"]:
            if e["name"] in from_secret:
                assert e["valueFrom"]["secretKeyRef"]["key"] == e["name"]
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        assert mounts["models"] == "/models"
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["models"]["persistentVolumeClaim"]["claimName"] in claims


# ---- docs/deploy.md -------------------------------------------------------------------------


def _backticked_env_names(text: str) -> set[str]:
    """Variable names in inline `code`, and NAME= assignments in fenced code blocks."""
    names: set[str] = set()
    fences = re.compile(r"^```.*?^```", flags=re.M | re.S)
    for block in fences.findall(text):
        names |= set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)=", block))
    for span in re.findall(r"`([^`\n]+)`", fences.sub("", text)):
        names |= set(re.findall(r"\b([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b", span))
    return names


def test_docs_explain_every_variable_and_name_only_real_ones() -> None:
    text = docs_text()
    mentioned = _backticked_env_names(text)
    assert DOCUMENTED_VARS <= mentioned, sorted(DOCUMENTED_VARS - mentioned)
    compose_vars = {m[0] for m in _INTERPOLATION.findall(COMPOSE.read_text())}
    server_vars = {k for svc in services().values() for k in env_of(svc)} | {"OPENSEARCH_INITIAL_ADMIN_PASSWORD"}
    build_args = set(dockerfile_args())
    bogus = {n for n in mentioned if not (read_by_something(n) or n in compose_vars | server_vars | build_args)}
    assert not bogus, f"docs/deploy.md names variables nothing reads: {sorted(bogus)}"
    for var in ("S3_ACCESS_KEY", "S3_SECRET_KEY", "HUMANTAG_MODELS_DIR", "S3_BUCKETS"):
        assert var in compose_vars and var in mentioned, var


def test_deploy_command_defaults_to_the_pool_the_worker_polls() -> None:
    from humantag.flows.commands.deploy import Schedule

    assert Schedule.model_fields["work_pool"].default == WORK_POOL


def test_docs_commands_match_the_files() -> None:
    text = docs_text()
    for path in set(re.findall(r"\binfra/[\w./-]+\w", text)) - {"infra/.env"}:  # .env: the user writes it
        assert (ROOT / path).exists(), path
    assert f"prefect work-pool create {WORK_POOL} --type process" in text
    assert f"prefect worker start --pool {WORK_POOL}" in text
    assert "prefect server start" in text
    assert 'humantag deploy nightly s3://' in text and '--cron "0 2 * * *"' in text
    assert "--labeler humanvlm --model /models/Human_LLaVA" in text
    for version in re.findall(r"ray\[default\]==([\w.]+)", text):
        assert version == dockerfile_args()["RAY_VERSION"]
    assert "ray job submit --address http://127.0.0.1:8265" in text
    assert "RAY_ADDRESS=ray://127.0.0.1:10001" in text
    head_svc = f"{ray_cluster()['metadata']['name']}-head-svc"
    assert head_svc in text
    assert "cannot run" in text.lower(), "the docs must say the files were not run here"
    for image in {svc["image"] for name, svc in services().items() if name not in our_services()}:
        assert image in text, f"docs do not name {image}"
