"""The security properties SECURITY.md promises of template.yaml, checked on the template itself.

Run by infra/security-lint.sh (with the checkov virtualenv's Python, which has PyYAML):
checkov's generic rules cannot know that the receiver may read webhook secrets but no
credential, or that the admin API's access log names the caller. Each check prints what broke;
the exit status is 1 when any did.
"""

import sys

import yaml

TEMPLATE = sys.argv[1] if len(sys.argv) > 1 else "template.yaml"


class Loader(yaml.SafeLoader):
    """CloudFormation's short tags (!Ref, !Sub, !GetAtt, …) as their long JSON forms."""


def _intrinsic(loader, suffix, node):
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


Loader.add_multi_constructor("!", _intrinsic)

with open(TEMPLATE) as f:
    template = yaml.load(f, Loader=Loader)
resources = template["Resources"]
globals_fn = template.get("Globals", {}).get("Function", {})
problems = []


def check(ok, message):
    if not ok:
        problems.append(message)


def of_type(kind):
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def as_list(value):
    return value if isinstance(value, list) else [value]


def statements(role):
    """A role's inline statements; a statement under !If is taken as present (worst case)."""
    out = []
    for policy in role["Properties"].get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            if "Fn::If" in statement:
                out += [s for s in statement["Fn::If"][1:] if isinstance(s, dict) and "Effect" in s]
            else:
                out.append(statement)
    return out


def text(value):
    """A resource value as comparable text (intrinsics included)."""
    return repr(value)


functions = of_type("AWS::Serverless::Function")
apis = of_type("AWS::Serverless::HttpApi")
binaries = {name: f["Metadata"]["BuildProperties"]["Binary"] for name, f in functions.items()}
receiver = next(name for name, binary in binaries.items() if binary == "webhook-receiver")

# --- 1. A throttled public edge ----------------------------------------------------------------
check("FunctionUrlConfig" not in text(resources) and not of_type("AWS::Lambda::Url"),
      "a Function URL is an unthrottled public entry point: the receiver must sit behind the webhook HTTP API")
public_apis = set()
for name, f in functions.items():
    for event_name, event in f["Properties"].get("Events", {}).items():
        if event["Type"] != "HttpApi":
            continue
        api = event["Properties"].get("ApiId", {}).get("Ref")
        check(api in apis, f"{name}.{event_name}: every HTTP route is on a template HTTP API")
        check("Auth" not in event["Properties"], f"{name}.{event_name}: no route overrides its API's authorizer")
        if "Auth" not in apis.get(api, {}).get("Properties", {}):
            public_apis.add(api)
            check(name == receiver and event["Properties"]["Path"] == "/webhooks/{integration_id}"
                  and event["Properties"]["Method"] == "POST",
                  f"{name}.{event_name}: the only public route is the receiver's POST /webhooks/{{integration_id}}")
check(len(public_apis) == 1, f"exactly one public HTTP API (the webhook one), found {sorted(public_apis)}")
for name, api in apis.items():
    props = api["Properties"]
    throttle = props.get("DefaultRouteSettings", {})
    check("ThrottlingRateLimit" in throttle and "ThrottlingBurstLimit" in throttle,
          f"{name}: default route throttling (rate and burst)")
    if name not in public_apis:
        check(props.get("Auth", {}).get("DefaultAuthorizer") == "AWS_IAM", f"{name}: every admin route needs IAM")
receiver_props = functions[receiver]["Properties"]
check("ReservedConcurrentExecutions" in receiver_props, "the receiver has reserved concurrency")
check(any(a["Properties"].get("MetricName") == "Throttles"
          and a["Properties"].get("Namespace") == "AWS/Lambda"
          and text(a["Properties"].get("Dimensions")) == text([{"Name": "FunctionName", "Value": {"Ref": receiver}}])
          for a in of_type("AWS::CloudWatch::Alarm").values()),
      "an alarm on the receiver's Lambda throttles")

# --- 4. An audit trail: access logs, with the caller's identity on the admin API -------------------
for name, api in apis.items():
    settings = api["Properties"].get("AccessLogSettings", {})
    fmt = settings.get("Format", "")
    check(settings.get("DestinationArn") is not None, f"{name}: access logs")
    for variable in ("$context.requestId", "$context.routeKey", "$context.status", "$context.identity.sourceIp"):
        check(variable in fmt, f"{name}: its access log records {variable}")
    if name not in public_apis:
        for variable in ("$context.identity.userArn", "$context.identity.caller", "$context.identity.accountId"):
            check(variable in fmt, f"{name}: its access log records the caller ({variable})")
    destination = settings.get("DestinationArn", {}).get("Fn::GetAtt", [None])[0]
    check(destination in of_type("AWS::Logs::LogGroup"), f"{name}: access logs go to a log group of this stack")

# --- 6. Logs and tracing ----------------------------------------------------------------------
log_groups = of_type("AWS::Logs::LogGroup")
for name, group in log_groups.items():
    check("RetentionInDays" in group["Properties"], f"{name}: a retention")
check(globals_fn.get("Tracing") == {"Ref": "TracingMode"}, "every function's tracing is the TracingMode parameter")
for name, f in functions.items():
    props = f["Properties"]
    group = props.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
    check(group in log_groups, f"{name}: logs to its own log group of this stack")
    check(f"-{binaries[name]}" in text(log_groups.get(group, {}).get("Properties", {}).get("LogGroupName")),
          f"{name}: its log group is /aws/lambda/<stack>-{binaries[name]}")
    check("Tracing" not in props, f"{name}: does not override TracingMode")

# --- 2, 3. Least privilege per function -------------------------------------------------------
WRITE_SECRETS = {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret", "secretsmanager:CreateSecret",
                 "secretsmanager:PutSecretValue", "secretsmanager:DeleteSecret", "secretsmanager:RestoreSecret"}
EXPECTED_SECRETS = {  # binary → (secret actions, secret kinds)
    "webhook-receiver": ({"secretsmanager:GetSecretValue"}, {"webhook"}),
    "integrations-api": (WRITE_SECRETS, {"credential", "webhook"}),
    "event-publisher": (set(), set()),
}
READ_CREDENTIALS = ({"secretsmanager:GetSecretValue"}, {"credential"})
STREAM_ACTIONS = {"dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"}

for name, f in functions.items():
    props, binary = f["Properties"], binaries[name]
    check("Policies" not in props, f"{name}: no SAM Policies (the role is explicit)")
    role_name = props.get("Role", {}).get("Fn::GetAtt", [None])[0]
    role = resources.get(role_name)
    check(role is not None and role["Type"] == "AWS::IAM::Role", f"{name}: its own IAM role in this stack")
    if role is None:
        continue
    check(sum(1 for g in functions.values() if g["Properties"].get("Role") == props["Role"]) == 1,
          f"{name}: its role is not shared")
    check(not role["Properties"].get("ManagedPolicyArns"), f"{role_name}: no managed policies")
    trust = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    check(trust == [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}],
          f"{role_name}: only Lambda may assume it")
    consumes_stream = any(e["Type"] == "DynamoDB" for e in props.get("Events", {}).values())
    want_actions, want_kinds = EXPECTED_SECRETS.get(binary, READ_CREDENTIALS)
    secret_actions, secret_kinds = set(), set()
    for s in statements(role):
        actions = set(as_list(s["Action"]))
        resources_text = text(s["Resource"])
        check(s["Effect"] == "Allow", f"{role_name}: Allow statements only")
        check(not any(a.endswith("*") for a in actions), f"{role_name}: no wildcard action ({sorted(actions)})")
        if s["Resource"] == "*":
            check(actions <= {"xray:PutTraceSegments", "xray:PutTelemetryRecords"},
                  f"{role_name}: only X-Ray (which has no resource-level permissions) on Resource '*'")
        secrets = {a for a in actions if a.startswith("secretsmanager:")}
        if secrets:
            secret_actions |= secrets
            for r in as_list(s["Resource"]):
                arn = text(r)
                if "${Prefix}/admin-api-token-??????" in arn:
                    # The optional bearer token an admin function accepts besides IAM: read only,
                    # never by the public receiver.
                    check(binary != "webhook-receiver" and secrets == {"secretsmanager:GetSecretValue"},
                          f"{role_name}: the admin token is read-only, and only admin functions read it")
                    continue
                kinds = {k for k in ("credential", "webhook") if f"/*/{k}-??????" in arn}
                check(len(kinds) == 1 and "${Prefix}" in arn, f"{role_name}: secret resource {arn} is one kind under the prefix")
                secret_kinds |= kinds
        if any(a.startswith("kms:") for a in actions):
            check(s["Resource"] == {"Ref": "SecretsKmsKeyArn"}, f"{role_name}: KMS only on SecretsKmsKeyArn")
            check("kms:ViaService" in text(s.get("Condition")) and "kms:EncryptionContext:SecretARN" in text(s.get("Condition")),
                  f"{role_name}: KMS only through Secrets Manager, for the prefix's secrets")
            check(actions <= ({"kms:Decrypt", "kms:GenerateDataKey"} if binary == "integrations-api" else {"kms:Decrypt"}),
                  f"{role_name}: KMS actions {sorted(actions)}")
            context = s.get("Condition", {}).get("StringLike", {}).get("kms:EncryptionContext:SecretARN", [])
            kms_kinds = {k for c in as_list(context) for k in ("credential", "webhook") if f"/*/{k}-??????" in text(c)}
            check(kms_kinds == want_kinds, f"{role_name}: KMS for secret kinds {sorted(kms_kinds)}, expected {sorted(want_kinds)}")
        if actions & STREAM_ACTIONS:
            check(consumes_stream, f"{role_name}: stream actions only for a stream consumer")
            check("StateTable" in resources_text and "stream" in resources_text.lower(),
                  f"{role_name}: stream actions only on this table's stream")
        if any(a.startswith("events:") for a in actions):
            check(actions == {"events:PutEvents"} and s["Resource"] == {"Fn::GetAtt": ["EventBus", "Arn"]},
                  f"{role_name}: events:PutEvents only, on this stack's bus")
            check(binary == "event-publisher", f"{role_name}: only the event publisher puts events")
        if any(a.startswith("logs:") for a in actions):
            own_group = props.get("LoggingConfig", {}).get("LogGroup", {}).get("Ref")
            check(s["Resource"] == {"Fn::GetAtt": [own_group, "Arn"]}, f"{role_name}: logs only to its own log group")
            check(actions <= {"logs:CreateLogStream", "logs:PutLogEvents"}, f"{role_name}: logs actions {sorted(actions)}")
    if binary == "webhook-receiver":
        table_statements = [s for s in statements(role) if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))]
        check(sorted(text(s["Action"]) + text(s.get("Condition")) for s in table_statements) == sorted([
            text("dynamodb:GetItem") + text({"ForAllValues:StringEquals": {"dynamodb:LeadingKeys": ["INTEGRATIONS"]}}),
            text("dynamodb:PutItem") + text({"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["INT#*"]}}),
        ]), f"{role_name}: reads only integration records and writes only under INT# partitions")
    check(secret_actions == want_actions, f"{name}: secret actions {sorted(secret_actions)}, expected {sorted(want_actions)}")
    check(secret_kinds == want_kinds, f"{name}: secret kinds {sorted(secret_kinds)}, expected {sorted(want_kinds)}")

# --- 8. Nothing dropped after its retries ------------------------------------------------------
queues = of_type("AWS::SQS::Queue")
for name, queue in queues.items():
    check(queue["Properties"].get("SqsManagedSseEnabled") is True or "KmsMasterKeyId" in queue["Properties"],
          f"{name}: encrypted at rest")
for name, f in functions.items():
    for event_name, event in f["Properties"].get("Events", {}).items():
        props = event["Properties"]
        if event["Type"] == "DynamoDB":
            destination = props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination", {})
            check(destination.get("Fn::GetAtt", [None])[0] in queues,
                  f"{name}.{event_name}: records past their retries go to an on-failure queue of this stack")
            check("MaximumRecordAgeInSeconds" in props, f"{name}.{event_name}: a maximum record age")
        if event["Type"] == "Schedule":
            check("DeadLetterConfig" in props and "RetryPolicy" in props,
                  f"{name}.{event_name}: the schedule has a dead-letter queue and a retry policy")
        if event["Type"] == "SQS":
            check("ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                  f"{name}.{event_name}: partial batch failures")
            check("MaximumConcurrency" in props.get("ScalingConfig", {}), f"{name}.{event_name}: bounded concurrency")
for name, queue in queues.items():
    redrive = queue["Properties"].get("RedrivePolicy")
    if redrive:
        check(redrive.get("deadLetterTargetArn", {}).get("Fn::GetAtt", [None])[0] in queues,
              f"{name}: its dead-letter queue is in this stack")
alarmed = text([a["Properties"].get("Metrics") for a in of_type("AWS::CloudWatch::Alarm").values()])
for name, queue in queues.items():
    if name.endswith(("DeadLetterQueue", "FailureQueue")):
        check(name in alarmed, f"{name}: an alarm watches its depth")

# SecretPrefix defaults to the stack name.
check(template["Parameters"]["SecretPrefix"].get("Default") == "", "SecretPrefix defaults to empty (the stack name)")
check(globals_fn["Environment"]["Variables"]["SECRET_PREFIX"]
      == {"Fn::If": ["HasSecretPrefix", {"Ref": "SecretPrefix"}, {"Ref": "AWS::StackName"}]},
      "SECRET_PREFIX is the stack name unless SecretPrefix is set")

# --- 7. The table -------------------------------------------------------------------------------
table = resources["StateTable"]["Properties"]
check(table.get("DeletionProtectionEnabled") is True, "StateTable: deletion protection")
check(table.get("StreamSpecification", {}).get("StreamViewType") == "NEW_IMAGE",
      "StateTable: the stream carries new images only (all the consumers read)")
check(table.get("PointInTimeRecoverySpecification", {}).get("PointInTimeRecoveryEnabled") is True, "StateTable: PITR")
check(table.get("SSESpecification", {}).get("SSEEnabled") is True, "StateTable: encryption at rest")
check(resources["StateTable"].get("DeletionPolicy") == "Retain", "StateTable: retained when the stack is deleted")

for problem in problems:
    print(f"security-lint: template invariant broken: {problem}")
print(f"security-lint: template invariants: {'all hold' if not problems else f'{len(problems)} broken'}")
sys.exit(1 if problems else 0)
