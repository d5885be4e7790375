#!/usr/bin/env python3
"""Writes the fuzz seed corpus from the project's fixtures (run by scripts/fuzz.sh):
  allocate/: every request body in policies/tests/ and tests/fixtures/*/tests/, each
             twice (first byte 0: the shipped policy; 1: the geo fixture policy with a GeoIP database)
  policy/:   the shipped policy directory and every fixture policy, files joined by a line `%%%`
  patterns/: kind (even: glob, odd: regex), fact, a big-endian repeat count, a unit pattern
"""
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
out = Path(sys.argv[1])


def put(target, data):
    d = out / target
    d.mkdir(parents=True, exist_ok=True)
    (d / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


n = {"allocate": 0, "policy": 0, "patterns": 0}
fixtures = sorted(ROOT.glob("policies/tests/*.json")) + sorted(ROOT.glob("tests/fixtures/*/tests/*.json"))
for f in fixtures:
    cases = json.loads(f.read_text())
    for case in cases if isinstance(cases, list) else [cases]:
        body = json.dumps(case["request"]).encode()
        for pick in (b"\x00", b"\x01"):
            put("allocate", pick + body)
            n["allocate"] += 1

dirs = [ROOT / "policies"] + sorted(p.parent for p in ROOT.glob("tests/fixtures/*/policy.toml"))
for d in dirs:
    files = sorted(d.glob("*.toml"))
    put("policy", "\n%%%\n".join(f.read_text() for f in files).encode())
    n["policy"] += 1
    for f in files:
        put("policy", f.read_bytes())
        n["policy"] += 1
for kind, fact, reps, unit in [
    (0, 0, 50_000, b"**"), (0, 1, 1, b"*-contoso-*"), (0, 2, 20_000, b"[a-z]?"), (0, 3, 9_000, b"{a,b}"),
    (1, 0, 30_000, b"(a|b)*"), (1, 1, 1, b"^[a-m]"), (1, 2, 5_000, b"\\w{1,100}"), (1, 3, 60_000, b"."),
]:
    put("patterns", bytes([kind, fact]) + reps.to_bytes(2, "big") + unit)
    n["patterns"] += 1
print(f"seeds: {n['allocate']} requests, {n['policy']} policies, {n['patterns']} patterns -> {out}")
