#!/usr/bin/env python3
"""Soak under policy churn (scripts/soak.sh runs it; .ci/run runs a 30-second version).

Sustained load on loopback while the policy directory is rewritten every second, alternating a valid
revision (new hub weights and a `generation` twin tag) with an invalid one (a syntax error, an unknown
hub, a bad template, in turn). Every answer is checked as it arrives:
  - never a 5xx (and never a connection error);
  - a 200's hub is one of the request's linkedHubs;
  - the decision header names one revision, and the answer matches that revision only: each revision id
    carries exactly one generation tag, and a sample of answers per revision replayed offline through
    `dps-allocator simulate --decisions` on that generation's files gives the same hub.
RSS is sampled every second; from the end of warm-up (the first fifth of the churn) to the end of the
churn it must grow less than 10 %, and over the storm less than 20 % more (each phase on its own: a
change of phase may raise the allocator's high-water mark once, a leak keeps growing within a phase).
At the end, a reload storm (`--storm-seconds`, default 10): a valid change every 100 ms, so the directory
is never quiet for the 250 ms debounce; reloads must still happen, at least one every two seconds.

  scripts/soak.py --seconds 600 [--bin target/release/dps-allocator] [--doc docs/reliability.md]
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAB = ["fabrikam-weu-1.azure-devices.net", "fabrikam-neu-1.azure-devices.net",
       "fabrikam-eus-1.azure-devices.net", "fabrikam-sea-1.azure-devices.net"]
CONTOSO = ["contoso-toasters-hub-1098.azure-devices.net", "contoso-heatpumps-hub-1098.azure-devices.net"]


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def device(i):
    """Device i: mostly Fabrikam sensors (their twin carries the generation tag), some Contoso tutorial
    devices, re-registrations and unknown enrollments."""
    rid = f"soak-{i:06d}"
    kind = i % 8
    if kind == 0:
        ctx = {"registrationId": f"{rid}-contoso-tstrsd-007", "symmetricKey": {}}
        return {"deviceRuntimeContext": ctx, "linkedHubs": CONTOSO,
                "enrollmentGroup": {"enrollmentGroupId": "contoso-devices"}}
    if kind == 1:
        ctx = {"registrationId": rid, "symmetricKey": {}}
        return {"deviceRuntimeContext": ctx, "linkedHubs": ["x-1.azure-devices.net", "x-2.azure-devices.net"],
                "enrollmentGroup": {"enrollmentGroupId": "unknown-group"}}
    ctx = {"registrationId": rid, "symmetricKey": {}, "payload": {"model": f"m{i % 5}"}}
    if kind == 2:
        ctx["currentIotHubHostName"] = FAB[i % 4]
        ctx["currentDeviceId"] = rid
    return {"deviceRuntimeContext": ctx, "linkedHubs": FAB,
            "enrollmentGroup": {"enrollmentGroupId": "fabrikam-sensors"}}


class Churn:
    """Rewrites the policy directory: even steps a valid generation, odd steps an invalid revision. Each
    change is written to a dotfile (ignored by the loader) and renamed into place."""

    BROKEN = [
        ("30-rules.toml", lambda t: t.replace("[[rule]]", "[[rule]", 1)),                       # syntax
        ("30-rules.toml", lambda t: t + '\n[[rule]]\nname = "x"\nhubs = ["no-such.azure-devices.net"]\n'),
        ("30-rules.toml", lambda t: t.replace("${hub.region}", "${hub.nowhere}", 1)),           # template
    ]

    def __init__(self, work):
        self.dir = work / "policies"
        self.gens = work / "generations"
        self.dir.mkdir()
        self.gens.mkdir()
        self.base = {p.name: p.read_text() for p in sorted((ROOT / "policies").glob("*.toml"))}
        self.step = 0
        self.generation = 0
        self.write_generation(0)

    def files(self, gen):
        files = dict(self.base)
        weight = 100 + 50 * (gen % 4)
        files["10-hubs.toml"] = files["10-hubs.toml"].replace("weight = 200", f"weight = {weight}", 1)
        tenants = files["20-tenants.toml"]
        tag = 'twin.tags = { tenant = "fabrikam", support = "gold" }'
        assert tag in tenants, "the shipped fabrikam tenant tags changed: update scripts/soak.py"
        files["20-tenants.toml"] = tenants.replace(tag, tag[:-2] + f', generation = "{gen}" }}', 1)
        return files

    def put(self, name, text):
        tmp = self.dir / f".{name}.tmp"
        tmp.write_text(text)
        os.replace(tmp, self.dir / name)

    def write_generation(self, gen):
        files = self.files(gen)
        keep = self.gens / str(gen)
        keep.mkdir()
        for name, text in files.items():
            (keep / name).write_text(text)
            if not (self.dir / name).exists() or (self.dir / name).read_text() != text:
                self.put(name, text)

    def storm_tick(self):
        """A new valid generation that changes one file only (the weight repeats every four
        generations): a reload storm never catches a half-written generation."""
        self.step += 1
        self.generation += 4
        self.write_generation(self.generation)

    def tick(self):
        self.step += 1
        if self.step % 2 == 0:
            self.generation += 1
            self.write_generation(self.generation)
        else:
            name, breaks = self.BROKEN[(self.step // 2) % len(self.BROKEN)]
            self.put(name, breaks(self.files(self.generation)[name]))


class Results:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = 0
        self.status = {}
        self.errors = []              # violations, first few kept
        self.violations = 0
        self.rev_gen = {}             # revision -> set of generation tags
        self.samples = {}             # revision -> {device index: hub}
        self.conn_errors = 0

    def fail(self, msg):
        with self.lock:
            self.violations += 1
            if len(self.errors) < 20:
                self.errors.append(msg)


def client(port, stop, res, seed, fleet):
    rnd = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    local = {"requests": 0, "status": {}}
    while not stop.is_set():
        i = rnd.randrange(len(fleet))
        body, req = fleet[i]
        try:
            conn.request("POST", "/api/allocate", body, {"Content-Type": "application/json"})
            r = conn.getresponse()
            out = r.read()
        except (OSError, http.client.HTTPException) as e:
            with res.lock:
                res.conn_errors += 1
            res.fail(f"connection error: {e!r}")
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        local["requests"] += 1
        local["status"][r.status] = local["status"].get(r.status, 0) + 1
        if r.status >= 500:
            res.fail(f"{r.status} for device {i}: {out[:200]!r}")
            continue
        header = r.getheader("x-dps-allocator-decision") or ""
        m = re.search(r"revision=(\S+)", header)
        rev = m.group(1) if m else None
        if r.status == 200:
            doc = json.loads(out)
            hub = doc.get("iotHubHostName")
            if hub not in req["linkedHubs"]:
                res.fail(f"device {i}: hub {hub} not in linkedHubs")
            gen = doc.get("initialTwin", {}).get("tags", {}).get("generation")
            with res.lock:
                if gen is not None:
                    res.rev_gen.setdefault(rev, set()).add(gen)
                s = res.samples.setdefault(rev, {})
                if i in s and s[i] != hub:
                    res.violations += 1
                    res.errors.append(f"device {i} got {s[i]} and {hub} under revision {rev}")
                elif len(s) < 400:
                    s[i] = hub
    with res.lock:
        res.requests += local["requests"]
        for k, v in local["status"].items():
            res.status[k] = res.status.get(k, 0) + v


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def replay(binary, gen_dir, fleet, sample, work):
    """Hubs that `simulate --decisions` gives the sampled devices under one generation's files."""
    fleet_file = work / "replay.jsonl"
    with open(fleet_file, "w") as f:
        for i in sample:
            f.write(fleet[i][0].decode() + "\n")
    out = work / "replay.csv"
    subprocess.run([binary, "simulate", "--policies", str(gen_dir), "--fleet", str(fleet_file),
                    "--decisions", str(out), "--format", "json"], check=True, capture_output=True)
    hubs = {}
    for line in out.read_text().splitlines()[1:]:
        rid, status, hub, _rule = line.split(",", 3)
        hubs[rid] = hub
    return hubs


def listening_port(path, proc, timeout=30):
    """The port of the server's `listening` log event (the service logs JSON lines to stdout)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {path.read_text(errors='replace')}")
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if event.get("message") == "listening":
                return int(event["addr"].rsplit(":", 1)[1])
        time.sleep(0.05)
    sys.exit("server not listening")


def reload_counts(port):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    return {m.group(1): int(float(m.group(2)))
            for m in re.finditer(r'dps_allocator_policy_reloads_total\{result="(\w+)"\} (\S+)', text)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--bin", default=str(ROOT / "target" / "release" / "dps-allocator"))
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--devices", type=int, default=20000)
    ap.add_argument("--storm-seconds", type=int, default=10,
                    help="at the end, this long a reload storm: a valid change every 100 ms")
    ap.add_argument("--doc", help="write the figures into this Markdown file's soak section")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="dps-soak-"))
    churn = Churn(work)
    fleet = [(json.dumps(d, separators=(",", ":")).encode(), d) for d in map(device, range(args.devices))]
    logf = open(work / "server.log", "wb")
    server = subprocess.Popen([args.bin, "serve", "--listen", "127.0.0.1:0", "--policies", str(churn.dir),
                               "--log-format", "json"], stdout=logf, stderr=logf)
    port = listening_port(work / "server.log", server)
    log(f"server pid {server.pid} on port {port}; {args.seconds}s, {args.clients} clients, policy rewritten every second")

    res = Results()
    stop = threading.Event()
    threads = [threading.Thread(target=client, args=(port, stop, res, n, fleet)) for n in range(args.clients)]
    for t in threads:
        t.start()
    rss = []
    started = time.monotonic()
    next_tick = started + 1
    while time.monotonic() - started < args.seconds:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        next_tick += 1
        churn.tick()
        rss.append((time.monotonic() - started, rss_kb(server.pid)))
    normal_samples = len(rss)
    # The reload storm: ten changes a second never leave the directory quiet for the 250 ms debounce;
    # reloads must still happen, about once a second.
    time.sleep(1.5)
    before_storm = reload_counts(port)
    storm_started = time.monotonic()
    while time.monotonic() - storm_started < args.storm_seconds:
        churn.storm_tick()
        rss.append((time.monotonic() - started, rss_kb(server.pid)))
        time.sleep(0.1)
    storm_elapsed = time.monotonic() - storm_started
    storm_reloads = reload_counts(port).get("activated", 0) - before_storm.get("activated", 0)
    log(f"reload storm: {storm_elapsed:.1f}s of changes every 100 ms, {storm_reloads} revisions activated meanwhile")
    time.sleep(1.5)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    reloads = reload_counts(port)
    server.terminate()
    code = server.wait(timeout=60)
    logf.close()
    log_text = (work / "server.log").read_text(errors="replace")
    # Refused revisions are logged at ERROR under target "policy", as they should be; anything else is not.
    panics = [l for l in log_text.splitlines()
              if "panicked" in l or ('"level":"ERROR"' in l and '"target":"policy"' not in l)]
    policy_errors = sum(1 for l in log_text.splitlines() if '"level":"ERROR"' in l and '"target":"policy"' in l)

    # One generation per revision, and the sampled answers replayed offline.
    gen_of = {}
    for rev, gens in res.rev_gen.items():
        if len(gens) != 1:
            res.fail(f"revision {rev} answered with generations {sorted(gens)}")
        gen_of[rev] = next(iter(gens))
    replayed = 0
    for rev, sample in res.samples.items():
        gen = gen_of.get(rev)
        if gen is None:
            continue
        hubs = replay(args.bin, churn.gens / gen, fleet, sorted(sample), work)
        for i, hub in sample.items():
            rid = fleet[i][1]["deviceRuntimeContext"]["registrationId"]
            replayed += 1
            if hubs.get(rid) != hub:
                res.fail(f"device {i} under revision {rev} (generation {gen}): served {hub}, replay {hubs.get(rid)}")

    # Growth is measured within each phase, never across the change from churn to storm: a leak keeps
    # growing with the work done, while a phase change can raise the allocator's high-water mark once
    # (a step of about 1 MB on a 15 MB process, seen at the storm's start on a loaded machine).
    warm = max(5.0, args.seconds / 5)
    normal = [kb for t, kb in rss[:normal_samples] if t >= warm]
    base = statistics.mean(normal[:10]) if normal else 0
    end = statistics.mean(normal[-10:]) if normal else 0
    growth = (end - base) / base * 100 if base else 0.0
    storm = [kb for _, kb in rss[normal_samples:]]
    storm_end = statistics.mean(storm[-10:]) if storm else end
    storm_growth = (storm_end - end) / end * 100 if end else 0.0
    fivexx = sum(v for k, v in res.status.items() if k >= 500)
    summary = {
        "seconds": round(elapsed, 1),
        "requests": res.requests,
        "requests_per_second": round(res.requests / elapsed),
        "status": {str(k): v for k, v in sorted(res.status.items())},
        "5xx": fivexx,
        "connection_errors": res.conn_errors,
        "violations": res.violations,
        "revisions_seen": len(res.samples),
        "policy_writes": churn.step,
        "reloads": reloads,
        "storm": {"seconds": round(storm_elapsed, 1), "activated": storm_reloads},
        "answers_replayed": replayed,
        "rss_mb": {"start": round(rss[0][1] / 1024, 1) if rss else None,
                   "after_warmup": round(base / 1024, 1), "end": round(end / 1024, 1),
                   "growth_percent": round(growth, 1),
                   "storm_end": round(storm_end / 1024, 1), "storm_growth_percent": round(storm_growth, 1)},
        "exit_code": code,
        "log_errors": len(panics),
        "policy_error_lines": policy_errors,
    }
    print(json.dumps(summary, indent=2))
    ok = (fivexx == 0 and res.violations == 0 and res.conn_errors == 0 and growth < 10 and storm_growth < 20
          and code == 0
          and not panics and reloads.get("activated", 0) >= 2 and reloads.get("failed", 0) >= 2
          and storm_reloads >= args.storm_seconds // 2)
    for e in res.errors:
        log("VIOLATION " + e)
    for p in panics[:5]:
        log("LOG " + p)
    if args.doc:
        write_doc(Path(args.doc), summary, args)
    shutil.rmtree(work, ignore_errors=True)
    log("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


def write_doc(path, s, args):
    rows = [
        ("duration", f"{s['seconds']} s, {args.clients} keep-alive clients, {args.devices:,} devices"),
        ("requests", f"{s['requests']:,} ({s['requests_per_second']:,}/s)"),
        ("statuses", ", ".join(f"{k}: {v:,}" for k, v in s["status"].items())),
        ("5xx / connection errors", f"{s['5xx']} / {s['connection_errors']}"),
        ("policy rewrites", f"{s['policy_writes']} (alternating valid and invalid)"),
        ("reloads", ", ".join(f"{k}: {v}" for k, v in sorted(s["reloads"].items()))),
        ("reload storm", f"{s['storm']['seconds']} s of a change every 100 ms: {s['storm']['activated']} revisions activated"),
        ("revisions that answered", str(s["revisions_seen"])),
        ("answers replayed offline", f"{s['answers_replayed']:,}, all the same hub"),
        ("invariant violations", str(s["violations"])),
        ("RSS", f"start {s['rss_mb']['start']} MB, after warm-up {s['rss_mb']['after_warmup']} MB, "
                f"end of the churn {s['rss_mb']['end']} MB ({s['rss_mb']['growth_percent']:+} %), "
                f"end of the storm {s['rss_mb']['storm_end']} MB ({s['rss_mb']['storm_growth_percent']:+} %)"),
        ("exit", f"code {s['exit_code']} after SIGTERM; {s['log_errors']} panics or unexpected errors in the log "
                 f"({s['policy_error_lines']} ERROR lines for the refused revisions)"),
    ]
    table = "| | |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
    stamp = time.strftime("%Y-%m-%d")
    block = f"<!-- soak:begin -->\nMeasured {stamp} by `scripts/soak.sh {args.seconds}`:\n\n{table}\n<!-- soak:end -->"
    text = path.read_text() if path.exists() else ""
    if "<!-- soak:begin -->" in text:
        text = re.sub(r"<!-- soak:begin -->.*?<!-- soak:end -->", lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    path.write_text(text)


if __name__ == "__main__":
    main()
