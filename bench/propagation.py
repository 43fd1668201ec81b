#!/usr/bin/env python3
"""Revocation propagation between two `patgate serve` replicas on one PostgreSQL database.

Starts replica A (bootstraps, --demo) and replica B on a fresh database, creates N tokens
through A, then revokes them one at a time through A and measures, for each, how long
from sending the DELETE to A until B's POST /api/v1/decide reports "revoked" (B polled
back to back on a keep-alive connection, starting as the DELETE is sent), and also A's
DELETE latency and B's lag behind A's 204. Prints p50/p90/p99/max in ms; the target is
p99 <= 250 ms. Exits 1 when the target is missed.

Standard library only. Loopback only. Bounded: the revocation loop stops after
PATGATE_BENCH_BUDGET seconds (default 90) and everything is torn down on exit.

Environment:
  PATGATE_BIN                  the binary (default: target/release/patgate)
  PATGATE_BENCH_POSTGRES_URL   server to create the database on (default:
                               $PATGATE_TEST_POSTGRES_URL or postgres://postgres@127.0.0.1:5432/postgres)
  PATGATE_BENCH_TOKENS         N (default 300)
  PATGATE_BENCH_POLL_US        pause between polls of B, microseconds (default 0: back to back)
  PATGATE_BENCH_BUDGET         seconds for the revocation loop (default 90)
"""

import datetime
import http.client
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("PATGATE_BIN", os.path.join(ROOT, "target", "release", "patgate"))
ADMIN_URL = os.environ.get(
    "PATGATE_BENCH_POSTGRES_URL",
    os.environ.get("PATGATE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
)
TOKENS = int(os.environ.get("PATGATE_BENCH_TOKENS", "300"))
POLL_PAUSE = int(os.environ.get("PATGATE_BENCH_POLL_US", "0")) / 1e6
BUDGET = float(os.environ.get("PATGATE_BENCH_BUDGET", "90"))
PER_TOKEN_LIMIT = 5.0
API_REGISTRY = "/api/v4/projects/acme%2Fplatform%2Fapi/registry/repositories"

children = []


def log(message):
    print(message, file=sys.stderr, flush=True)


def psql(url, sql):
    subprocess.run(["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql], check=True)


def with_database(url, name):
    base, sep, query = url.partition("?")
    scheme_end = base.find("://") + 3
    slash = base.find("/", scheme_end)
    authority = base if slash < 0 else base[:slash]
    return f"{authority}/{name}" + (f"?{query}" if sep else "")


class Replica:
    def __init__(self, name, workdir, args):
        self.name = name
        self.lines = []
        self.proc = subprocess.Popen(
            [BIN, "serve", "--listen", "127.0.0.1:0", *args],
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PATGATE_LOG": "patgate=warn,warn"},
        )
        children.append(self.proc)
        ready = threading.Event()
        self.host, self.port = None, None

        def drain():
            for line in self.proc.stderr:
                line = line.rstrip("\n")
                self.lines.append(line)
                found = re.match(r"patgate: serving on http://([\d.]+):(\d+)", line)
                if found:
                    self.host, self.port = found.group(1), int(found.group(2))
                    ready.set()
            ready.set()

        threading.Thread(target=drain, daemon=True).start()
        if not ready.wait(60) or self.port is None:
            raise SystemExit(f"{name} did not start:\n" + "\n".join(self.lines))
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)

    def call(self, method, path, body=None, headers=None):
        headers = dict(headers or {})
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
                return response.status, payload
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt:
                    raise

    def decide(self, token):
        status, payload = self.call("POST", "/api/v1/decide", {"token": token, "method": "GET", "path": API_REGISTRY})
        if status != 200:
            raise SystemExit(f"{self.name}: decide answered {status}: {payload!r}")
        return json.loads(payload)

    def demo_token(self, user):
        for described, token in zip(self.lines, self.lines[1:]):
            if described.startswith(f"  {user}:") and token.startswith("    "):
                return token.strip()
        raise SystemExit(f"{self.name}: no demo token for {user}")


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    # Nearest rank.
    rank = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def summary(label, values):
    values = sorted(values)
    return (
        f"{label:<36} n={len(values):<4} p50 {percentile(values, 50):7.1f}  p90 {percentile(values, 90):7.1f}  "
        f"p99 {percentile(values, 99):7.1f}  max {values[-1] if values else float('nan'):7.1f}  (ms)"
    )


def main():
    if not os.access(BIN, os.X_OK):
        raise SystemExit(f"{BIN} is missing: cargo build --release -p patgate (or set PATGATE_BIN)")
    workdir = tempfile.mkdtemp(prefix="patgate-propagation-")
    database = f"patgate_bench_{os.getpid()}_{int(time.time())}"
    url = with_database(ADMIN_URL, database)
    psql(ADMIN_URL, f"CREATE DATABASE {database}")
    try:
        run(workdir, url)
    finally:
        for proc in children:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        psql(ADMIN_URL, f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        shutil.rmtree(workdir, ignore_errors=True)


def run(workdir, url):
    key = os.path.join(workdir, "patgate.key")
    admin_file = os.path.join(workdir, "admin.token")
    a = Replica("A", workdir, ["--database-url", url, "--secret-key-file", key, "--demo", "--bootstrap-token-file", admin_file])
    b = Replica("B", workdir, ["--database-url", url, "--secret-key-file", key])
    with open(admin_file) as f:
        admin = {"PRIVATE-TOKEN": f.read().strip()}
    log(f"replica A on {a.host}:{a.port}, replica B on {b.host}:{b.port}, database {url}")

    expires = (datetime.date.today() + datetime.timedelta(days=30)).isoformat()
    grants = [{"reach": "selected", "projects": ["acme/platform/api"], "permissions": {"container_registry": ["read"]}}]
    tokens = []
    created_at = time.monotonic()
    for i in range(TOKENS):
        body = {"name": f"bench {i}", "expires_at": expires, "grants": grants}
        status, payload = a.call("POST", "/api/v1/users/alice/personal_access_tokens", body, admin)
        if status != 201:
            raise SystemExit(f"creating token {i} through A: {status} {payload!r}")
        created = json.loads(payload)
        tokens.append((created["id"], created["token"]))
    log(f"created {len(tokens)} tokens through A in {time.monotonic() - created_at:.1f} s")

    # B must know every token before the clock starts.
    deadline = time.monotonic() + 10
    while not all(b.decide(secret)["allowed"] for _, secret in tokens[-3:]):
        if time.monotonic() > deadline:
            raise SystemExit("B did not learn the new tokens within 10 s")
        time.sleep(0.01)

    # For each token: the DELETE goes to A from a helper thread while this thread polls B
    # from the moment it is sent, so B may well see the revocation before A has answered.
    end_to_end, after_ack, acks, polls, missed = [], [], [], [], 0
    loop_started = time.monotonic()
    for token_id, secret in tokens:
        if time.monotonic() - loop_started > BUDGET:
            log(f"budget of {BUDGET:.0f} s spent: stopping after {len(end_to_end)} revocations")
            break
        if b.decide(secret)["reason"] != "allowed":
            raise SystemExit(f"token {token_id} is not allowed on B before its revocation")
        outcome = {}

        def revoke():
            status, payload = a.call("DELETE", f"/api/v1/personal_access_tokens/{token_id}", headers=admin)
            outcome["acknowledged"] = time.perf_counter()
            outcome["status"], outcome["payload"] = status, payload

        helper = threading.Thread(target=revoke)
        sent = time.perf_counter()
        helper.start()
        count = 0
        while True:
            count += 1
            answer = b.decide(secret)
            seen = time.perf_counter()
            if answer["reason"] == "revoked":
                break
            if seen - sent > PER_TOKEN_LIMIT:
                missed += 1
                log(f"token {token_id}: B still answers {answer['reason']!r} {PER_TOKEN_LIMIT} s after the DELETE")
                break
            if POLL_PAUSE:
                time.sleep(POLL_PAUSE)
        helper.join(30)
        if outcome.get("status") != 204:
            raise SystemExit(f"revoking {token_id} through A: {outcome.get('status')} {outcome.get('payload')!r}")
        acks.append((outcome["acknowledged"] - sent) * 1000)
        if answer["reason"] == "revoked":
            end_to_end.append((seen - sent) * 1000)
            after_ack.append((seen - outcome["acknowledged"]) * 1000)
            polls.append(count)

    print(f"patgate revocation propagation: {len(end_to_end)} tokens revoked through A, observed on B")
    pause = "back to back" if not POLL_PAUSE else f"every {POLL_PAUSE * 1e6:.0f} us"
    print(f"  binary {BIN}; B polled {pause} on one keep-alive connection from the moment the DELETE is sent")
    print("  " + summary("DELETE sent -> B revoked", end_to_end))
    print("  " + summary("A's 204 (DELETE latency)", acks))
    print("  " + summary("A's 204 -> B revoked (<0: B first)", after_ack))
    polls.sort()
    if polls:
        print(f"  polls of B per token: median {percentile(polls, 50)}, max {polls[-1]}")
    p99 = percentile(sorted(end_to_end), 99)
    verdict = "PASS" if end_to_end and p99 <= 250 and not missed else "FAIL"
    print(f"  target p99 <= 250 ms (DELETE sent -> B revoked): {verdict} (p99 {p99:.1f} ms, "
          f"{missed} not seen within {PER_TOKEN_LIMIT:.0f} s)")
    if verdict == "FAIL":
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    main()
