#!/usr/bin/env python3
"""Structural checks of the Dockerfile that hadolint does not make (no Docker engine in CI).

- multi-stage: the toolchain never reaches the runtime image;
- every base image has a pinned tag (or digest), never `latest` or none;
- the final stage switches to a non-root USER before its ENTRYPOINT/CMD;
- the final stage has a HEALTHCHECK;
- no ENV or ARG carries a secret (…SECRET, …PASSWORD, …TOKEN, …_KEY): build arguments and
  environment stay in the image's history for anyone who pulls it;
- the lockfile is copied in and every cargo build, cook or install is `--locked`;
- .dockerignore keeps .env and target/ out of the build context.

Usage: check-dockerfile.py [Dockerfile]   |   check-dockerfile.py --self-test
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY\b|APIKEY)", re.IGNORECASE)


def instructions(text):
    """(keyword, arguments) per instruction, continuations joined, comments dropped."""
    result, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def check(text, dockerignore):
    errors = []
    steps = instructions(text)
    stages, names = [], set()
    for keyword, args in steps:
        if keyword == "FROM":
            parts = args.split()
            image = next(p for p in parts if not p.startswith("--"))
            if " AS " in f" {args.upper()} ":
                names.add(parts[-1].lower())
            stages.append([])
            if image.lower() in names:
                continue
            if "@sha256:" not in image:
                tag = image.rsplit("/", 1)[-1].partition(":")[2]
                if not tag:
                    errors.append(f"FROM {image}: no tag")
                elif tag == "latest":
                    errors.append(f"FROM {image}: `latest` is not a pinned tag")
        elif stages:
            stages[-1].append((keyword, args))
    if len(stages) < 2:
        errors.append("not a multi-stage build")
    final = stages[-1] if stages else []

    user = None
    for keyword, args in final:
        if keyword == "USER":
            user = args.split(":")[0]
        if keyword in ("ENTRYPOINT", "CMD") and user in (None, "root", "0"):
            errors.append(f"{keyword} runs as root: no non-root USER before it")
    if not any(k == "HEALTHCHECK" and not a.upper().startswith("NONE") for k, a in final):
        errors.append("no HEALTHCHECK in the final stage")

    for keyword, args in steps:
        if keyword in ("ENV", "ARG"):
            for name in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", args):
                if SECRET_NAME.search(name):
                    errors.append(f"{keyword} {name}: secrets do not belong in the image")
        if keyword == "RUN":
            for command in re.findall(r"cargo\s+(?:chef\s+cook|build|install)[^&;|]*", args):
                if "--locked" not in command:
                    errors.append(f"RUN {command.strip()}: not --locked")
    copies = " ".join(a for k, a in steps if k in ("COPY", "ADD"))
    if "Cargo.lock" not in copies and not re.search(r"(^|\s)\.\s", copies):
        errors.append("the lockfile (Cargo.lock) is never copied in")

    ignored = {line.strip().lstrip("/") for line in (dockerignore or "").splitlines()}
    for needed in (".env", "target"):
        if needed not in ignored:
            errors.append(f".dockerignore does not exclude {needed}")
    return errors


GOOD = """FROM rust:1.95 AS build
COPY Cargo.toml Cargo.lock ./
RUN cargo build --release --locked
FROM debian:bookworm-slim
USER 10001
HEALTHCHECK CMD ["framegate", "healthcheck"]
ENTRYPOINT ["framegate"]
"""
BAD = {
    "single stage": GOOD.split("FROM debian")[0] + 'USER 1\nHEALTHCHECK CMD ["x"]\n',
    "latest": GOOD.replace("debian:bookworm-slim", "debian:latest"),
    "untagged": GOOD.replace("debian:bookworm-slim", "debian"),
    "root": GOOD.replace("USER 10001\n", ""),
    "root after": GOOD.replace("USER 10001\n", "").replace(
        'ENTRYPOINT ["framegate"]', 'ENTRYPOINT ["framegate"]\nUSER 10001'
    ),
    "no healthcheck": GOOD.replace('HEALTHCHECK CMD ["framegate", "healthcheck"]\n', ""),
    "secret env": GOOD.replace("USER 10001", "ENV FRAMEGATE_JWT_SECRET=x\nUSER 10001"),
    "secret arg": GOOD.replace("FROM debian", "ARG STRIPE_API_KEY\nFROM debian"),
    "unlocked": GOOD.replace(" --locked", ""),
    "no lockfile": GOOD.replace(" Cargo.lock", ""),
}


def self_test():
    failures = []
    ignore = ".env\n/target\n"
    good = check(GOOD, ignore)
    if good:
        failures.append(f"a good Dockerfile is refused: {good}")
    for name, text in BAD.items():
        if not check(text, ignore):
            failures.append(f"{name}: not refused")
    if not check(GOOD, "/target\n"):
        failures.append(".dockerignore without .env: not refused")
    if failures:
        print("check-dockerfile self-test: " + "; ".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"check-dockerfile self-test: {len(BAD) + 1} bad Dockerfiles refused, the good one passes")


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "Dockerfile")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ignore_path = os.path.join(os.path.dirname(os.path.abspath(path)), ".dockerignore")
    dockerignore = open(ignore_path, encoding="utf-8").read() if os.path.exists(ignore_path) else ""
    errors = check(text, dockerignore)
    if errors:
        print(f"{path}: " + "; ".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"{path}: multi-stage, pinned bases, non-root, HEALTHCHECK, no secrets, locked build: OK")


if __name__ == "__main__":
    main()
