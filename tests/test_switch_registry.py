"""The switch registry: every backend's keys reach the plan model and `migrator plan schema`,
and loading a plan imports no client library (kubernetes, boto3, httpx)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from migrator.cli import app
from migrator.errors import PlanError
from migrator.plan.loader import parse_plan
from migrator.switch import make_backend
from migrator.switch.registry import REGISTRY


def test_plan_schema_shows_every_backends_keys() -> None:
    result = CliRunner().invoke(app, ["plan", "schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.output)
    defs = schema["$defs"]
    switch = defs["SwitchSettings"]["properties"]
    assert set(REGISTRY) <= set(switch)
    for name, kind in REGISTRY.items():
        # The backend's key names its settings model, whose every key is in the schema.
        ref = next(option["$ref"] for option in switch[name]["anyOf"] if "$ref" in option).rsplit(
            "/", 1
        )[1]
        assert defs[ref]["additionalProperties"] is False
        wanted = {f.alias or n for n, f in kind.settings.model_fields.items()}
        assert set(defs[ref]["properties"]) == wanted, name


def test_a_plan_names_its_backend_and_make_backend_builds_that_kind() -> None:
    plan = parse_plan(
        "release: r\nswitch:\n  command: {to_green: 'true', to_blue: 'true'}\n", "p.yaml"
    )
    assert plan.switch is not None and plan.switch.backend_name == "command"
    backend = make_backend(plan.switch)
    assert backend.name == "command"
    assert isinstance(plan.switch.backend, REGISTRY["command"].settings)


def test_a_switch_without_a_backend_names_the_registrys_list() -> None:
    with pytest.raises(PlanError, match="exactly one backend of " + ", ".join(REGISTRY)):
        parse_plan("release: r\nswitch:\n  steps: [100]\n", "p.yaml")


def test_loading_a_plan_imports_no_client_library() -> None:
    code = (
        "import sys\n"
        "from migrator.plan.loader import parse_plan\n"
        "parse_plan('release: r\\nswitch:\\n  kubernetes: {service: a, selector: {key: v, "
        "blue: b, green: g}, blue: {deployment: b}, green: {deployment: g}}\\n', 'p.yaml')\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'kubernetes', 'boto3', 'botocore', 'httpx'})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""
