#!/usr/bin/env python3
"""Static checks of docker-compose.yml (no Docker engine runs in CI).

Structure: the file parses, every service has an image or a build, every depends_on names a
service of the file, every named volume is declared, and services running the framegate image
use a subcommand the binary actually has.

Safe by default (ADR 0036): every framegate service runs with FRAMEGATE_ENV=production; every
secret-looking setting (…PASSWORD, …SECRET, …_KEY, …TOKEN, a password in DATABASE_URL) comes
from a required `${VAR:?message}` interpolation, never a literal; no placeholder we ever
shipped appears anywhere; Kafka publishes no port; and scripts/gen-secrets.sh, run in a
temporary directory, writes a private .env with every variable the file requires, refuses to
overwrite it without --force, and (given the binary) writes secrets the binary accepts in
production.

Usage: check-compose.py [path/to/framegate]
"""
import os
import re
import stat
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPOSE = os.path.join(ROOT, "docker-compose.yml")
GEN_SECRETS = os.path.join(ROOT, "scripts", "gen-secrets.sh")

# Everything published as a secret value before ADR 0036, and the usual stand-ins.
PLACEHOLDERS = ["change-me", "changeme", "change_me", "replace-me", "framegate:framegate@"]
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|_KEY$|TOKEN)", re.IGNORECASE)
REQUIRED = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?\?[^}]*\}")
KAFKA_PORTS = {"9092", "9093", "29092"}

with open(COMPOSE, encoding="utf-8") as f:
    text = f.read()
compose = yaml.safe_load(text)

errors = []
services = compose.get("services") or {}
volumes = set((compose.get("volumes") or {}).keys())
if not services:
    errors.append("no services")

help_text = ""
binary = sys.argv[1] if len(sys.argv) > 1 else None
if binary:
    help_text = subprocess.run([binary, "--help"], capture_output=True, text=True, check=True).stdout


def environment(service):
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def is_framegate(service):
    return str(service.get("image", "")).startswith("framegate") or "build" in service


for name, service in services.items():
    if "image" not in service and "build" not in service:
        errors.append(f"{name}: neither image nor build")
    depends = service.get("depends_on") or {}
    for dep in depends if isinstance(depends, (list, dict)) else []:
        if dep not in services:
            errors.append(f"{name}: depends_on unknown service {dep}")
    for mount in service.get("volumes") or []:
        source = str(mount).split(":", 1)[0]
        if not source.startswith((".", "/")) and source not in volumes:
            errors.append(f"{name}: volume {source} is not declared")
    command = service.get("command")
    if help_text and is_framegate(service) and command:
        sub = command[0] if isinstance(command, list) else str(command).split()[0]
        if f"  {sub} " not in help_text and f"  {sub}\n" not in help_text:
            errors.append(f"{name}: framegate has no subcommand {sub!r}")

    env = environment(service)
    if is_framegate(service) and str(env.get("FRAMEGATE_ENV")) != "production":
        errors.append(f"{name}: a framegate service without FRAMEGATE_ENV=production")
    for key, value in env.items():
        value = "" if value is None else str(value)
        if SECRET_NAME.search(key) and not REQUIRED.fullmatch(value.strip()):
            errors.append(f"{name}: {key} is not a required ${{VAR:?message}} from .env")
        if "://" in value and "@" in value:
            userinfo = value.split("://", 1)[1].split("@", 1)[0]
            if ":" in userinfo and not REQUIRED.fullmatch(userinfo.split(":", 1)[1]):
                errors.append(f"{name}: {key} holds a literal password")

    for port in service.get("ports") or []:
        published = str(port.get("target") if isinstance(port, dict) else port).split(":")[-1]
        if name == "kafka" or published.split("/")[0] in KAFKA_PORTS:
            errors.append(f"{name}: publishes {port}: the broker has no authentication")

for placeholder in PLACEHOLDERS:
    if placeholder in text.lower():
        errors.append(f"the placeholder {placeholder!r} appears in the file")



def strings(node):
    if isinstance(node, dict):
        for value in node.values():
            yield from strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from strings(value)
    elif isinstance(node, str):
        yield node


# What compose will insist on from .env (in values, not comments), and what gen-secrets.sh
# writes.
required = sorted({var for value in strings(compose) for var in REQUIRED.findall(value)})
if not required:
    errors.append("no ${VAR:?} interpolation: secrets are not taken from .env")
with tempfile.TemporaryDirectory() as tmp:
    env_file = os.path.join(tmp, ".env")
    subprocess.run([GEN_SECRETS, "--output", env_file], check=True, capture_output=True)
    mode = stat.S_IMODE(os.stat(env_file).st_mode)
    if mode != 0o600:
        errors.append(f"gen-secrets.sh wrote .env with mode {mode:o}, not 600")
    generated = {}
    with open(env_file, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, value = line.split("=", 1)
                generated[key] = value
    for var in required:
        if not generated.get(var):
            errors.append(f"docker-compose.yml requires {var}, which gen-secrets.sh does not write")
    again = subprocess.run([GEN_SECRETS, "--output", env_file], capture_output=True, text=True)
    if again.returncode == 0:
        errors.append("gen-secrets.sh overwrote an existing .env without --force")
    forced = subprocess.run([GEN_SECRETS, "--force", "--output", env_file], capture_output=True)
    if forced.returncode != 0:
        errors.append("gen-secrets.sh --force failed")
    else:
        with open(env_file, encoding="utf-8") as f:
            if any(f"{k}={v}" in f.read() for k, v in generated.items()):
                errors.append("gen-secrets.sh --force kept an old secret")

    if binary:
        # The generated secrets must pass the binary's production checks: `migrate` against
        # a closed port then fails connecting, after the checks, never on configuration.
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMEGATE_")}
        run_env.update(generated)
        run_env["FRAMEGATE_ENV"] = "production"
        run_env["DATABASE_URL"] = (
            f"postgres://framegate:{generated.get('POSTGRES_PASSWORD', '')}@127.0.0.1:1/framegate"
        )
        run = subprocess.run([binary, "migrate"], env=run_env, capture_output=True, text=True)
        if "cannot connect to DATABASE_URL" not in run.stderr or "configuration:" in run.stderr:
            errors.append(f"the binary refuses gen-secrets.sh's secrets: {run.stderr.strip()}")

if errors:
    print("docker-compose.yml: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print(
    f"docker-compose.yml: {len(services)} services OK; "
    f"{len(required)} secrets from .env ({', '.join(required)}), all written by gen-secrets.sh"
)
