#!/usr/bin/env python3
"""Static checks of docker-compose.yml (no Docker engine runs in CI).

Checks that the file parses, every service has an image or a build, every depends_on names a
service of the file, every named volume is declared, and that services running the framegate
image use a subcommand the binary actually has.
"""
import subprocess
import sys

import yaml

with open("docker-compose.yml", encoding="utf-8") as f:
    compose = yaml.safe_load(f)

errors = []
services = compose.get("services") or {}
volumes = set((compose.get("volumes") or {}).keys())
if not services:
    errors.append("no services")

help_text = ""
if len(sys.argv) > 1:
    help_text = subprocess.run([sys.argv[1], "--help"], capture_output=True, text=True, check=True).stdout

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
    if help_text and service.get("image", "").startswith("framegate") and command:
        sub = command[0] if isinstance(command, list) else str(command).split()[0]
        if f"  {sub} " not in help_text and f"  {sub}\n" not in help_text:
            errors.append(f"{name}: framegate has no subcommand {sub!r}")

if errors:
    print("docker-compose.yml: " + "; ".join(errors), file=sys.stderr)
    sys.exit(1)
print(f"docker-compose.yml: {len(services)} services OK")
