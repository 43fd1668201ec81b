#!/usr/bin/env python3
"""The leak-report endpoint under abuse, on PostgreSQL (POST /api/v1/credentials/revoke).

Starts one `patgate serve --demo` on a fresh PostgreSQL database and measures:

1. 10,000 random strings in 10 bursts of 1,000 (half garbage, half shaped like tokens
   `pgfgt-…`/`pgpat-…` with a wrong checksum) from one client address: every burst answered
   202, its latency, and the database transactions the bursts cost (pg_stat_database
   xact_commit + xact_rollback, read before and after), against the same count over an idle
   window of the same length measured in the same run (the background jobs' baseline).
   Target: no database work for malformed strings (delta - idle = 0).
2. 100 valid tokens hidden among 900 malformed strings in one report: all 100 revoked (each
   then denied `revoked`), one write transaction each, and the report's latency.
3. Abuse: one address sends 100 reports back to back while another address sends one report
   per second: the first is limited (429 after its burst of 30), the second never is.

Standard library only (plus psql). Exits 1 when a target is missed.

Environment: PATGATE_BIN (default target/release/patgate), PATGATE_BENCH_POSTGRES_URL.
"""

import datetime
import http.client
import json
import os
import random
import shutil
import string
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import propagation  # noqa: E402  (the replica harness and PostgreSQL helpers)

ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
REPORT = "/api/v1/credentials/revoke"


def malformed(rng):
    if rng.random() < 0.5:
        return "".join(rng.choice(string.printable[:94]) for _ in range(rng.randint(8, 60)))
    return rng.choice(["pgfgt-", "pgpat-"]) + "".join(rng.choice(ALPHABET) for _ in range(38))


def transactions(url):
    out = propagation.subprocess.run(
        ["psql", "-X", "-A", "-t", "-d", url, "-c",
         "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"],
        check=True, capture_output=True, text=True)
    return int(out.stdout.strip())


def settle():
    # A backend reports its transactions to pg_stat_database at most once a second while busy
    # and within 10 s once idle (PostgreSQL 15+): wait that out, so each window counts only
    # what happened inside it.
    time.sleep(11)


def report(replica, strings, address):
    started = time.perf_counter()
    status, payload = replica.call("POST", REPORT, strings, {"X-Forwarded-For": address})
    return status, payload, (time.perf_counter() - started) * 1000


def main():
    if not os.access(propagation.BIN, os.X_OK):
        raise SystemExit(f"{propagation.BIN} is missing: cargo build --release -p patgate (or set PATGATE_BIN)")
    workdir = tempfile.mkdtemp(prefix="patgate-leak-")
    database = f"patgate_leak_{os.getpid()}_{int(time.time())}"
    url = propagation.with_database(propagation.ADMIN_URL, database)
    propagation.psql(propagation.ADMIN_URL, f"CREATE DATABASE {database}")
    try:
        return run(workdir, url)
    finally:
        for proc in propagation.children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        propagation.psql(propagation.ADMIN_URL, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(workdir, ignore_errors=True)


def run(workdir, url):
    rng = random.Random(20261128)
    key = os.path.join(workdir, "patgate.key")
    admin_file = os.path.join(workdir, "admin.token")
    server = propagation.Replica("patgate", workdir, ["--database-url", url, "--secret-key-file", key, "--demo",
                                                      "--bootstrap-token-file", admin_file])
    with open(admin_file) as f:
        admin = {"PRIVATE-TOKEN": f.read().strip()}
    failures = []
    print(f"patgate leak-report benchmark: {propagation.BIN}, PostgreSQL database {database_name(url)}")

    # 1. 10,000 malformed strings in 10 bursts, against an idle window of the same length.
    bursts = [[malformed(rng) for _ in range(1000)] for _ in range(10)]
    settle()
    before = transactions(url)
    started = time.monotonic()
    latencies = []
    for burst in bursts:
        status, payload, took = report(server, burst, "203.0.113.10")
        if status != 202 or json.loads(payload)["received"] != 1000:
            failures.append(f"burst answered {status} {payload[:200]!r}")
        latencies.append(took)
    busy = time.monotonic() - started
    settle()
    during = transactions(url) - before
    before = transactions(url)
    time.sleep(busy)
    settle()
    idle = transactions(url) - before
    latencies.sort()
    print(f"1. 10,000 malformed strings in 10 bursts of 1,000 from one address: all 202; per burst "
          f"median {latencies[5]:.1f} ms, max {latencies[-1]:.1f} ms "
          f"({10000 / (sum(latencies) / 1000):,.0f} strings/s checked)")
    extra = during - idle
    print(f"   database transactions: {during} during the bursts ({busy:.2f} s), {idle} in an idle window of the same "
          f"length: {extra} caused by the bursts (target 0: {'PASS' if extra <= 0 else 'FAIL'})")
    if extra > 0:
        failures.append(f"{extra} database transactions for malformed strings")

    # 2. 100 valid tokens among 900 malformed strings.
    expires = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    grants = [{"reach": "selected", "projects": ["acme/platform/api"], "permissions": {"container_registry": ["read"]}}]
    valid = []
    for i in range(100):
        status, payload = server.call("POST", "/api/v1/users/alice/personal_access_tokens",
                                      {"name": f"leak {i}", "expires_at": expires, "grants": grants}, admin)
        if status != 201:
            raise SystemExit(f"creating token {i}: {status} {payload!r}")
        valid.append(json.loads(payload)["token"])
    mixed = [{"token": t, "type": "patgate_token", "url": "https://example.com/leak"} for t in valid]
    mixed += [malformed(rng) for _ in range(900)]
    rng.shuffle(mixed)
    settle()
    before = transactions(url)
    status, payload, took = report(server, mixed, "203.0.113.11")
    settle()
    writes = transactions(url) - before
    still = [t for t in valid if server.decide(t)["reason"] != "revoked"]
    print(f"2. 100 valid tokens among 900 malformed strings: {status}, {took:.1f} ms; "
          f"{100 - len(still)} of 100 now denied `revoked`; {writes} database transactions in all "
          f"(one write per revoked token, the index catching up, the jobs)")
    if status != 202 or still:
        failures.append(f"valid tokens not revoked: {len(still)} (status {status})")

    # 3. One abusive address, one well-behaved one, at the same time.
    small = [malformed(rng) for _ in range(10)]
    polite = []

    def well_behaved():
        other = http.client.HTTPConnection(server.host, server.port, timeout=10)
        for _ in range(5):
            other.request("POST", REPORT, body=json.dumps(small),
                          headers={"Content-Type": "application/json", "X-Forwarded-For": "198.51.100.7"})
            response = other.getresponse()
            response.read()
            polite.append(response.status)
            time.sleep(1)

    helper = threading.Thread(target=well_behaved)
    helper.start()
    abusive = {}
    for _ in range(100):
        status, _, _ = report(server, small, "203.0.113.66")
        abusive[status] = abusive.get(status, 0) + 1
    helper.join(30)
    print(f"3. abuse: 100 back-to-back reports from one address answered {dict(sorted(abusive.items()))}; "
          f"meanwhile another address got {polite}")
    if abusive.get(202, 0) > 35 or abusive.get(429, 0) < 60 or any(s != 202 for s in polite) or len(polite) != 5:
        failures.append("rate limiting did not hold the abusive address back or blocked the other one")

    print("result: " + ("PASS" if not failures else "FAIL: " + "; ".join(failures)))
    return 1 if failures else 0


def database_name(url):
    return url.rsplit("/", 1)[-1]


if __name__ == "__main__":
    propagation.signal.signal(propagation.signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
