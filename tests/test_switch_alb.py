"""alb backend with moto: the forward action's weights on a listener or a rule, the
other actions kept, stickiness, every preflight refusal, AWS access denied (moto's IAM
enforcement, with deploy/aws's policy shown sufficient), and through `migrator switch`
the stepped switch, a watch failure's automatic rollback and a manual rollback.

moto reports a registered target `healthy` (no health checks run), an EC2 instance that
is stopped `unused` with reason Target.InvalidState, and an empty group no target."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core import set_initial_no_auth_action_count

from migrator import commands
from migrator.errors import ExitCode, GateRefused
from migrator.switch import ALL_BLUE, ALL_GREEN, Split, SwitchFailed, WatchFailed
from migrator.switch.alb import Alb, AlbSettings
from tests.support.switch_env import (
    FakePrometheus,
    SleptTime,
    phase,
    ready_release,
    switch_plan,
    traffic_events,
)

REGION = "eu-west-1"
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "aws" / "alb-switch-policy.json"


@dataclass
class Aws:
    """A VPC with an ALB, a listener forwarding to blue (100) and green (0), a rule
    doing the same for /api/*, and two instances registered in each target group."""

    ec2: Any
    elb: Any
    lb: str
    blue: str
    green: str
    third: str
    listener: str
    rule: str
    green_instances: list[str]

    def actions(self, rule: bool = False) -> list[dict[str, Any]]:
        if rule:
            return list(self.elb.describe_rules(RuleArns=[self.rule])["Rules"][0]["Actions"])
        found = self.elb.describe_listeners(ListenerArns=[self.listener])["Listeners"][0]
        return list(found["DefaultActions"])

    def weights(self, rule: bool = False) -> dict[str, int]:
        forward = next(a for a in self.actions(rule) if a["Type"] == "forward")
        return {
            {self.blue: "blue", self.green: "green", self.third: "third"}[g["TargetGroupArn"]]: g[
                "Weight"
            ]
            for g in forward["ForwardConfig"]["TargetGroups"]
        }

    def forward(self, *groups: tuple[str, int], sticky: int | None = None) -> dict[str, Any]:
        config: dict[str, Any] = {
            "TargetGroups": [{"TargetGroupArn": a, "Weight": w} for a, w in groups]
        }
        if sticky:
            config["TargetGroupStickinessConfig"] = {"Enabled": True, "DurationSeconds": sticky}
        return {"Type": "forward", "ForwardConfig": config}


def _setup(n: int) -> Aws:
    ec2 = boto3.client("ec2", region_name=REGION)
    elb = boto3.client("elbv2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.0.{i}.0/24", AvailabilityZone=f"{REGION}{z}")[
            "Subnet"
        ]["SubnetId"]
        for i, z in ((1, "a"), (2, "b"))
    ]
    lb = elb.create_load_balancer(Name=f"api{n}", Subnets=subnets, Type="application")[
        "LoadBalancers"
    ][0]["LoadBalancerArn"]
    groups = [
        elb.create_target_group(Name=name, Protocol="HTTP", Port=80, VpcId=vpc)["TargetGroups"][0][
            "TargetGroupArn"
        ]
        for name in (f"api{n}-blue", f"api{n}-green", f"api{n}-other")
    ]
    image = "ami-12c6146b"  # one of moto's; describe_images would load them all (30 s)
    instances: list[list[str]] = []
    for group in groups[:2]:
        ids = [
            i["InstanceId"]
            for i in ec2.run_instances(ImageId=image, MinCount=2, MaxCount=2, SubnetId=subnets[0])[
                "Instances"
            ]
        ]
        elb.register_targets(TargetGroupArn=group, Targets=[{"Id": i} for i in ids])
        instances.append(ids)
    aws = Aws(ec2, elb, lb, groups[0], groups[1], groups[2], "", "", instances[1])
    forward = aws.forward((aws.blue, 100), (aws.green, 0))
    aws.listener = elb.create_listener(
        LoadBalancerArn=lb, Protocol="HTTP", Port=80, DefaultActions=[forward]
    )["Listeners"][0]["ListenerArn"]
    aws.rule = elb.create_rule(
        ListenerArn=aws.listener,
        Priority=10,
        Conditions=[{"Field": "path-pattern", "Values": ["/api/*"]}],
        Actions=[forward],
    )["Rules"][0]["RuleArn"]
    return aws


@pytest.fixture(scope="module")
def mocked() -> Iterator[list[int]]:
    """One moto for the module (its EC2 backend takes seconds to build); each test
    gets its own load balancer, groups and IAM user, numbered."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.setenv("AWS_DEFAULT_REGION", REGION)
        with mock_aws():
            yield [0]


@pytest.fixture
def aws(mocked: list[int]) -> Aws:
    mocked[0] += 1
    return _setup(mocked[0])


def _settings(aws: Aws, **extra: Any) -> dict[str, Any]:
    where = {} if "rule_arn" in extra else {"listener_arn": aws.listener}
    return {
        "region": REGION,
        **where,
        "blue": {"target_group_arn": aws.blue},
        "green": {"target_group_arn": aws.green},
        **extra,
    }


def _backend(aws: Aws, **extra: Any) -> Alb:
    return Alb(AlbSettings.model_validate(_settings(aws, **extra)))


def test_weighted_steps_on_a_listener_set_the_forward_weights(aws: Aws) -> None:
    backend = _backend(aws)
    backend.preflight()
    assert backend.current() == ALL_BLUE
    for percent in (1, 5, 25, 50, 100):
        assert backend.set_split(Split(percent)) == Split(percent)
        assert aws.weights() == {"blue": 100 - percent, "green": percent}
        assert backend.current() == Split(percent)
    backend.set_split(ALL_BLUE)
    assert aws.weights() == {"blue": 100, "green": 0}
    assert aws.weights(rule=True) == {"blue": 100, "green": 0}  # the rule was not touched
    assert backend.describe() == f"alb listener {aws.listener}"


def test_a_rule_keeps_its_other_actions_and_its_conditions(aws: Aws) -> None:
    oidc = {
        "Type": "authenticate-oidc",
        "Order": 1,
        "AuthenticateOidcConfig": {
            "Issuer": "https://idp.example",
            "AuthorizationEndpoint": "https://idp.example/auth",
            "TokenEndpoint": "https://idp.example/token",
            "UserInfoEndpoint": "https://idp.example/userinfo",
            "ClientId": "migrator",
        },
    }
    forward = {**aws.forward((aws.blue, 100), (aws.green, 0)), "Order": 2}
    aws.elb.modify_rule(RuleArn=aws.rule, Actions=[oidc, forward])
    backend = _backend(aws, rule_arn=aws.rule)
    backend.preflight()
    backend.set_split(Split(25))
    actions = aws.actions(rule=True)
    assert [a["Type"] for a in actions] == ["authenticate-oidc", "forward"]
    assert actions[0]["AuthenticateOidcConfig"]["ClientId"] == "migrator"
    # describe never returns the client secret; the rewrite asks AWS to keep it.
    assert actions[0]["AuthenticateOidcConfig"]["UseExistingClientSecret"] is True
    assert actions[1]["Order"] == 2 and "TargetGroupArn" not in actions[1]
    assert aws.weights(rule=True) == {"blue": 75, "green": 25}
    rule = aws.elb.describe_rules(RuleArns=[aws.rule])["Rules"][0]
    assert rule["Conditions"][0]["Values"] == ["/api/*"]
    assert aws.weights() == {"blue": 100, "green": 0}  # the listener was not touched


def test_stickiness_is_set_when_asked_and_kept_otherwise(aws: Aws) -> None:
    aws.elb.modify_listener(
        ListenerArn=aws.listener,
        DefaultActions=[aws.forward((aws.blue, 100), (aws.green, 0), sticky=600)],
    )

    def sticky() -> dict[str, Any]:
        forward = aws.actions()[0]
        return dict(forward["ForwardConfig"]["TargetGroupStickinessConfig"])

    _backend(aws).set_split(Split(10))
    assert sticky() == {"Enabled": True, "DurationSeconds": 600}
    _backend(aws, stickiness="5m").set_split(Split(20))
    assert sticky() == {"Enabled": True, "DurationSeconds": 300}
    with pytest.raises(ValueError, match="stickiness is 1s to 7d"):
        AlbSettings.model_validate(_settings(aws, stickiness="8d"))


def test_settings_take_exactly_one_of_listener_and_rule() -> None:
    arn = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/x/1"
    sides = {"blue": {"target_group_arn": arn}, "green": {"target_group_arn": arn + "2"}}
    with pytest.raises(ValueError, match="exactly one of listener_arn and rule_arn"):
        AlbSettings.model_validate(sides)
    with pytest.raises(ValueError, match="exactly one of listener_arn and rule_arn"):
        AlbSettings.model_validate({**sides, "listener_arn": "l", "rule_arn": "r"})
    with pytest.raises(ValueError, match="same target group"):
        AlbSettings.model_validate({**sides, "listener_arn": "l", "green": sides["blue"]})


def test_preflight_refusals_each_name_their_cause_and_move_nothing(aws: Aws) -> None:
    def refused(backend: Alb) -> str:
        before = (aws.actions(), aws.actions(rule=True))
        with pytest.raises(GateRefused) as exc:
            backend.preflight()
        assert exc.value.exit_code == ExitCode.REFUSED
        assert "\n" not in str(exc.value)
        assert (aws.actions(), aws.actions(rule=True)) == before
        return str(exc.value)

    gone = aws.listener[:-4] + "beef"
    assert refused(_backend(aws, listener_arn=gone)).startswith(
        f"alb: no listener {gone} in {REGION} (DescribeListeners: "
    )
    assert refused(_backend(aws, rule_arn=aws.rule + "0")).startswith(
        f"alb: no rule {aws.rule}0 in {REGION} (DescribeRules: "
    )

    # Forwarding to blue alone: green must be in the action (at weight 0) first.
    aws.elb.modify_listener(
        ListenerArn=aws.listener, DefaultActions=[{"Type": "forward", "TargetGroupArn": aws.blue}]
    )
    green_short = aws.green.split(":", 5)[-1]
    assert refused(_backend(aws)) == (
        f"alb: listener {aws.listener} does not forward to green {green_short}; make its "
        "forward action list both target groups (green at Weight 0) first: the split is "
        "their weights (docs/switch.md, alb)"
    )
    # A third group with a weight would take a share nobody counts.
    aws.elb.modify_listener(
        ListenerArn=aws.listener,
        DefaultActions=[aws.forward((aws.blue, 90), (aws.green, 0), (aws.third, 10))],
    )
    assert "also forwards to targetgroup/api" in refused(_backend(aws))
    aws.elb.modify_listener(
        ListenerArn=aws.listener,
        DefaultActions=[aws.forward((aws.blue, 100), (aws.green, 0), (aws.third, 0))],
    )
    _backend(aws).preflight()  # at weight 0 it takes nothing

    # No action that forwards at all.
    fixed = {
        "Type": "fixed-response",
        "FixedResponseConfig": {"StatusCode": "503", "ContentType": "text/plain"},
    }
    aws.elb.modify_rule(RuleArn=aws.rule, Actions=[fixed])
    assert refused(_backend(aws, rule_arn=aws.rule)) == (
        f"alb: rule {aws.rule} has no forward action"
    )

    # Green's targets: one stopped, then both, then none registered.
    aws.ec2.stop_instances(InstanceIds=aws.green_instances[:1])
    _backend(aws).preflight()  # one healthy target is enough
    aws.ec2.stop_instances(InstanceIds=aws.green_instances[1:])
    assert refused(_backend(aws)) == (
        f"alb: green target group {green_short} has no healthy target "
        "(targets: 2 unused (Target.InvalidState))"
    )
    aws.elb.deregister_targets(
        TargetGroupArn=aws.green, Targets=[{"Id": i} for i in aws.green_instances]
    )
    assert refused(_backend(aws)).endswith("has no healthy target (targets: none)")


def _user(aws: Aws, policy: dict[str, Any]) -> Any:
    """An elbv2 client with the keys of an IAM user holding only `policy`."""
    iam = boto3.client("iam", region_name=REGION)
    user = f"migrator-{aws.lb.rsplit('/', 2)[1]}"
    iam.create_user(UserName=user)
    iam.put_user_policy(UserName=user, PolicyName="switch", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=user)["AccessKey"]
    return boto3.client(
        "elbv2",
        region_name=REGION,
        aws_access_key_id=key["AccessKeyId"],
        aws_secret_access_key=key["SecretAccessKey"],
    )


def test_access_denied_is_one_line_naming_the_call_exit_4(aws: Aws) -> None:
    read_only = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "elasticloadbalancing:Describe*", "Resource": "*"}
        ],
    }
    client = _user(aws, read_only)
    backend = Alb(AlbSettings.model_validate(_settings(aws)), client=client)

    @set_initial_no_auth_action_count(0)
    def run() -> None:
        backend.preflight()  # reading is allowed
        with pytest.raises(SwitchFailed) as denied:
            backend.set_split(Split(50))
        assert denied.value.exit_code == ExitCode.RUNTIME
        assert str(denied.value) == (
            "alb: AWS denied elasticloadbalancing:ModifyListener (AccessDenied): User: "
            f"arn:aws:iam::123456789012:user/migrator-{aws.lb.rsplit('/', 2)[1]} is not authorized to perform: "
            "elasticloadbalancing:ModifyListener"
        )

    run()
    assert aws.weights() == {"blue": 100, "green": 0}


def test_the_deploy_policy_allows_a_whole_switch_and_scopes_the_writes(aws: Aws) -> None:
    policy = json.loads(POLICY.read_text())
    writes = next(
        s for s in policy["Statement"] if "elasticloadbalancing:ModifyListener" in s["Action"]
    )
    # moto checks actions, not resource ARNs (it asks for "*"), so the scoping of the
    # writes is checked here: the placeholders filled in, the patterns match the ARNs.
    account, name = "123456789012", aws.lb.rsplit("/", 2)[1]
    patterns = [
        r.replace("REGION", REGION).replace("ACCOUNT_ID", account).replace("LB_NAME", name)
        for r in writes["Resource"]
    ]
    assert any(fnmatch.fnmatchcase(aws.listener, p) for p in patterns)
    assert any(fnmatch.fnmatchcase(aws.rule, p) for p in patterns)
    assert not any(
        fnmatch.fnmatchcase(aws.listener.replace(f"/{name}/", "/web/"), p) for p in patterns
    )
    for statement in policy["Statement"]:
        statement["Resource"] = "*"
    client = _user(aws, policy)

    @set_initial_no_auth_action_count(0)
    def run() -> None:
        for settings in (_settings(aws), _settings(aws, rule_arn=aws.rule)):
            backend = Alb(AlbSettings.model_validate(settings), client=client)
            backend.preflight()
            backend.set_split(Split(5))
            backend.set_split(ALL_GREEN)
            backend.set_split(ALL_BLUE)

    run()


def test_boto3_is_imported_only_when_the_backend_talks_to_aws() -> None:
    import subprocess
    import sys

    code = (
        "import sys; from migrator.switch.alb import Alb, AlbSettings; "
        "a = 'arn:aws:elasticloadbalancing:eu-west-1:1:targetgroup/x/'; "
        "Alb(AlbSettings.model_validate({'listener_arn': 'l', 'blue': {'target_group_arn': a+'1'}, "
        "'green': {'target_group_arn': a+'2'}})); print('boto3' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- through `migrator switch` -----------------------------------------------------------

STEPS = [1, 5, 25, 50, 100]


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus(0.0)
    yield server
    server.stop()


def _plan(aws: Aws, prometheus: FakePrometheus) -> Any:
    # Three rounds a watch (0, 125, 250 ms of slept time), one query each.
    return switch_plan(
        {
            "alb": _settings(aws),
            "steps": STEPS,
            "watch": {
                "duration": "250ms",
                "interval": "125ms",
                "probes": [
                    {"prometheus": {"url": prometheus.url, "query": "error_rate", "max": 0.01}}
                ],
            },
        }
    )


def test_stepped_switch_and_manual_rollback_record_every_change(
    aws: Aws, prometheus: FakePrometheus, fresh_db: str
) -> None:
    plan = _plan(aws, prometheus)
    opts = ready_release(fresh_db, plan)
    result = commands.switch(plan, opts, timing=SleptTime().timing)
    assert [m["to"]["green"] for m in result.moves] == STEPS
    assert aws.weights() == {"blue": 0, "green": 100}
    assert len(prometheus.queries) == 3 * len(STEPS)
    assert phase(fresh_db, plan.release) == "switched"

    back = commands.rollback(plan, opts)
    assert back.ran and "100% green -> 0% green" in back.ran[0]
    assert aws.weights() == {"blue": 100, "green": 0}
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    assert [e["details"]["to"]["green"] for e in events] == [*STEPS, 0]
    assert all(e["details"]["backend"] == f"alb listener {aws.listener}" for e in events)


def test_failed_watch_moves_all_traffic_back_to_blue(
    aws: Aws, prometheus: FakePrometheus, fresh_db: str
) -> None:
    plan = _plan(aws, prometheus)
    opts = ready_release(fresh_db, plan)
    prometheus.bad_from = (8, 0.2)  # the second round of step 3's watch
    with pytest.raises(WatchFailed) as failed:
        commands.switch(plan, opts, timing=SleptTime().timing)
    assert failed.value.exit_code == ExitCode.REFUSED
    message = str(failed.value)
    assert message.startswith("watch of step 3/5 (25% green) failed")
    assert "prometheus 'error_rate' gave 0.2, limit <= 0.01" in message
    assert "moved back to blue" in message
    assert aws.weights() == {"blue": 100, "green": 0}
    assert phase(fresh_db, plan.release) == "expanded"
    events = traffic_events(fresh_db, plan.release)
    assert [e["details"]["to"]["green"] for e in events] == [1, 5, 25, 0]
    assert events[-1]["details"]["reason"].startswith("watch failed: prometheus ")


def test_switch_refused_by_the_preflight_moves_nothing(
    aws: Aws, prometheus: FakePrometheus, fresh_db: str
) -> None:
    plan = _plan(aws, prometheus)
    opts = ready_release(fresh_db, plan)
    aws.ec2.stop_instances(InstanceIds=aws.green_instances)
    with pytest.raises(GateRefused, match="has no healthy target") as refused:
        commands.switch(plan, opts)
    assert refused.value.exit_code == ExitCode.REFUSED
    assert aws.weights() == {"blue": 100, "green": 0}
    assert traffic_events(fresh_db, plan.release) == []


def test_the_deploy_example_is_a_valid_switch_section() -> None:
    import yaml

    example = POLICY.parent / "switch-alb.example.yaml"
    plan = switch_plan(yaml.safe_load(example.read_text())["switch"])
    assert plan.switch is not None and plan.switch.backend_name == "alb"
