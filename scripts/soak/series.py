#!/usr/bin/env python3
"""The soak's sampler and its judge (used by scripts/soak.sh; standard library only).

  series.py sample --pid PID --metrics URL --store DB --out CSV --phase P [--interval S] [--stop FILE] [--once]
  series.py analyze CSV --calls C [--rss-pct 10] [--fd-slack N] [--thread-slack 2] [--task-slack N]
  series.py sipp STAT_CSV... [--max-failed-pct 5]
  series.py self-test

A sample is one row: seconds since the first sample, phase (idle / churn / drain), the server's
RSS (KiB), open file descriptors, OS threads (all from /proc/PID), tokio tasks alive, calls active
and RTP packets sent (from /metrics), and call records written (rows in the store's `calls`).

The growth rule (analyze): the churn samples are cut in thirds; the first third is warm-up (pools,
caches and the allocator settle there) and is ignored. The median of the last third is compared
with the median of the middle third: RSS may not grow by more than --rss-pct percent, descriptors,
threads and tasks by no more than their slack (a few, for calls that happen to be in setup when a
sample is taken). Medians, not the last sample, so one busy moment is not a leak. Records and RTP
must keep rising through the last third (a stalled churn proves nothing), the calls active must
reach half the target, and after the churn stops the server must drain: no call active, and
descriptors and tasks back within their slack of the idle figures taken before the churn.
"""

import argparse
import csv
import math
import os
import re
import sqlite3
import statistics
import sys
import time
import urllib.request

FIELDS = [
    "t_s",
    "phase",
    "rss_kib",
    "fds",
    "threads",
    "tasks",
    "calls_active",
    "records",
    "rtp_sent",
]


def proc_status(pid):
    """VmRSS (KiB) and Threads from /proc/PID/status."""
    rss = threads = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss, threads


def metric(text, name):
    """The value of an unlabelled series in Prometheus text, or -1 when it is absent."""
    m = re.search(r"^" + re.escape(name) + r" ([0-9.eE+-]+)$", text, re.M)
    return int(float(m.group(1))) if m else -1


def records(store):
    """Rows in the store's call records; -1 when the store cannot be read right now."""
    try:
        conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def take(pid, metrics_url, store):
    rss, threads = proc_status(pid)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            text = r.read().decode("utf-8", "replace")
    except OSError:
        text = ""
    return {
        "rss_kib": rss,
        "fds": fds,
        "threads": threads,
        "tasks": metric(text, "wasm_ivr_runtime_tasks_alive"),
        "calls_active": metric(text, "wasm_ivr_calls_active"),
        "records": records(store),
        "rtp_sent": metric(text, "wasm_ivr_rtp_packets_sent_total"),
    }


def header_line():
    return (
        f"{'t_s':>6} {'phase':<6} {'rss_MiB':>8} {'fds':>5} {'threads':>7} {'tasks':>6} "
        f"{'active':>6} {'records':>8} {'rtp_sent':>10}"
    )


def row_line(row):
    return (
        f"{int(row['t_s']):>6} {row['phase']:<6} {int(row['rss_kib']) / 1024:>8.1f} "
        f"{row['fds']:>5} {row['threads']:>7} {row['tasks']:>6} {row['calls_active']:>6} "
        f"{row['records']:>8} {row['rtp_sent']:>10}"
    )


def cmd_sample(a):
    new = not os.path.exists(a.out) or os.path.getsize(a.out) == 0
    t0 = float(open(a.t0_file).read()) if a.t0_file and os.path.exists(a.t0_file) else None
    if t0 is None:
        t0 = time.time()
        if a.t0_file:
            with open(a.t0_file, "w") as f:
                f.write(str(t0))
    with open(a.out, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
            print(header_line(), flush=True)
        next_at = time.monotonic()
        while True:
            if not os.path.exists(f"/proc/{a.pid}"):
                print(f"series: the server (pid {a.pid}) is gone", file=sys.stderr)
                return 2
            row = take(a.pid, a.metrics, a.store)
            row["t_s"] = round(time.time() - t0)
            row["phase"] = a.phase
            w.writerow(row)
            f.flush()
            print(row_line(row), flush=True)
            if a.once:
                return 0
            next_at += a.interval
            while time.monotonic() < next_at:
                if a.stop and os.path.exists(a.stop):
                    return 0
                time.sleep(min(0.5, max(0.0, next_at - time.monotonic())))
            if a.stop and os.path.exists(a.stop):
                return 0


def load(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {k: (r[k] if k == "phase" else int(float(r[k]))) for k in FIELDS}
            rows.append(row)
    return rows


def judge(rows, calls, rss_pct=10.0, fd_slack=None, thread_slack=2, task_slack=None):
    """(failures, notes): the growth rule applied to a series. Pure, so self-test can feed it."""
    fd_slack = fd_slack if fd_slack is not None else max(4, math.ceil(calls * 0.05))
    task_slack = task_slack if task_slack is not None else max(4, math.ceil(calls * 0.05))
    fails, notes = [], []
    churn = [r for r in rows if r["phase"] == "churn"]
    idle = [r for r in rows if r["phase"] == "idle"]
    drain = [r for r in rows if r["phase"] == "drain"]
    n = len(churn)
    if n < 9:
        return [f"only {n} churn samples; the rule needs at least 9 (3 per third)"], notes
    mid = churn[n // 3 : 2 * n // 3]
    last = churn[2 * n // 3 :]

    def med(rs, k):
        return statistics.median(r[k] for r in rs)

    notes.append(
        f"churn samples {n}: warm-up {n // 3}, middle {len(mid)}, last {len(last)}; "
        f"slack fds {fd_slack}, threads {thread_slack}, tasks {task_slack}, RSS {rss_pct:g}%"
    )
    a, b = med(mid, "rss_kib"), med(last, "rss_kib")
    growth = (b - a) / a * 100 if a > 0 else 0.0
    notes.append(f"RSS median: middle {a / 1024:.1f} MiB, last {b / 1024:.1f} MiB ({growth:+.1f}%)")
    if growth > rss_pct:
        fails.append(f"RSS grew {growth:.1f}% (> {rss_pct:g}%): {a / 1024:.1f} -> {b / 1024:.1f} MiB")
    for key, slack in (("fds", fd_slack), ("threads", thread_slack), ("tasks", task_slack)):
        if any(r[key] < 0 for r in churn):
            fails.append(f"{key}: not measured in every sample (is the metric there?)")
            continue
        a, b = med(mid, key), med(last, key)
        notes.append(f"{key} median: middle {a:g}, last {b:g} ({b - a:+g})")
        if b - a > slack:
            fails.append(f"{key} grew by {b - a:g} (> {slack}): {a:g} -> {b:g}")
    for key in ("records", "rtp_sent"):
        a, b = last[0][key], last[-1][key]
        notes.append(f"{key}: {churn[0][key]} at the start of the churn, {b} at its end")
        if a < 0 or b <= a:
            fails.append(f"{key} did not rise in the last third ({a} -> {b}): the churn stalled")
    peak = max(r["calls_active"] for r in churn)
    typical = med(churn[n // 3 :], "calls_active")
    notes.append(f"calls active: median {typical:g} after warm-up, peak {peak} (target {calls})")
    if typical < calls / 2:
        fails.append(f"the load never held: median {typical:g} calls active for a target of {calls}")
    if not idle or not drain:
        fails.append("no idle sample before the churn or no drain sample after it")
    else:
        i, d = idle[-1], drain[-1]
        notes.append(
            f"drain vs idle: calls {d['calls_active']}, fds {i['fds']} -> {d['fds']}, "
            f"tasks {i['tasks']} -> {d['tasks']}, threads {i['threads']} -> {d['threads']}"
        )
        if d["calls_active"] != 0:
            fails.append(f"{d['calls_active']} calls still active after the churn stopped")
        if d["fds"] - i["fds"] > fd_slack:
            fails.append(f"descriptors did not come back: {i['fds']} idle, {d['fds']} drained")
        if d["tasks"] - i["tasks"] > task_slack:
            fails.append(f"tasks did not come back: {i['tasks']} idle, {d['tasks']} drained")
    return fails, notes


def cmd_analyze(a):
    rows = load(a.csv)
    print(header_line())
    for r in rows:
        print(row_line(r))
    fails, notes = judge(rows, a.calls, a.rss_pct, a.fd_slack, a.thread_slack, a.task_slack)
    for n in notes:
        print(f"  {n}")
    for f in fails:
        print(f"FAIL: {f}")
    print("soak: growth check FAILED" if fails else "soak: growth check passed")
    return 1 if fails else 0


def cmd_sipp(a):
    total_ok = total_failed = 0
    for path in a.stats:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
        if len(rows) < 2:
            print(f"FAIL: {path}: no statistics")
            return 1
        head, last = rows[0], rows[-1]
        ok = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
        name = os.path.basename(path).split("_")[0]
        print(f"  sipp {name:<12} successful {ok:>7}  failed {failed:>5}")
        total_ok += ok
        total_failed += failed
    total = total_ok + total_failed
    pct = total_failed / total * 100 if total else 100.0
    print(f"  sipp total        successful {total_ok:>7}  failed {total_failed:>5} ({pct:.2f}%)")
    if total_ok == 0 or pct > a.max_failed_pct:
        print(f"FAIL: {pct:.2f}% of the calls failed (> {a.max_failed_pct:g}%)")
        return 1
    return 0


def cmd_self_test(_a):
    """The rule must pass a steady series and catch each kind of growth."""
    import random

    rnd = random.Random(15)

    def series(rss=lambda i: 0, fds=lambda i: 0, threads=lambda i: 0, tasks=lambda i: 0,
               records=lambda i: 40 * i, drain_fds=0, drain_calls=0, n=30):
        rows = [dict(t_s=0, phase="idle", rss_kib=60000, fds=20, threads=5, tasks=12,
                     calls_active=0, records=0, rtp_sent=0)]
        for i in range(n):
            rows.append(dict(
                t_s=10 * (i + 1), phase="churn",
                rss_kib=int(90000 + rnd.randint(-2000, 2000) + rss(i)),
                fds=int(20 + 2 * 200 + rnd.randint(-6, 6) + fds(i)),
                threads=int(6 + rnd.randint(0, 1) + threads(i)),
                tasks=int(12 + 3 * 200 + rnd.randint(-6, 6) + tasks(i)),
                calls_active=200 + rnd.randint(-5, 5),
                records=int(records(i)), rtp_sent=100000 * i,
            ))
        rows.append(dict(t_s=10 * (n + 1), phase="drain", rss_kib=91000, fds=20 + drain_fds,
                         threads=6, tasks=12, calls_active=drain_calls,
                         records=int(records(n)), rtp_sent=100000 * n))
        return rows

    cases = [
        ("steady", series(), None),
        ("RSS +1 MiB per sample", series(rss=lambda i: 1024 * i), "RSS grew"),
        ("one fd per sample", series(fds=lambda i: i), "fds grew"),
        ("a thread every 3 samples", series(threads=lambda i: i // 3), "threads grew"),
        ("two tasks per sample", series(tasks=lambda i: 2 * i), "tasks grew"),
        ("records stop", series(records=lambda i: min(i, 12) * 40), "records did not rise"),
        ("fds kept after drain", series(drain_fds=50), "descriptors did not come back"),
        ("a call never ends", series(drain_calls=1), "still active"),
        ("too few samples", series(n=6), "only 6 churn samples"),
    ]
    bad = 0
    for name, rows, expect in cases:
        fails, _ = judge(rows, 200)
        if expect is None:
            ok = not fails
        else:
            ok = any(expect in f for f in fails)
        print(f"  {'ok  ' if ok else 'WRONG'} {name:<28} -> {'; '.join(fails) or 'passed'}")
        bad += 0 if ok else 1
    print("self-test: the growth rule " + ("works" if not bad else f"is WRONG in {bad} case(s)"))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample")
    s.add_argument("--pid", type=int, required=True)
    s.add_argument("--metrics", required=True)
    s.add_argument("--store", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--phase", required=True, choices=["idle", "churn", "drain"])
    s.add_argument("--interval", type=float, default=10.0)
    s.add_argument("--stop")
    s.add_argument("--t0-file")
    s.add_argument("--once", action="store_true")
    s.set_defaults(func=cmd_sample)
    an = sub.add_parser("analyze")
    an.add_argument("csv")
    an.add_argument("--calls", type=int, required=True)
    an.add_argument("--rss-pct", type=float, default=10.0)
    an.add_argument("--fd-slack", type=int)
    an.add_argument("--thread-slack", type=int, default=2)
    an.add_argument("--task-slack", type=int)
    an.set_defaults(func=cmd_analyze)
    sp = sub.add_parser("sipp")
    sp.add_argument("stats", nargs="+")
    sp.add_argument("--max-failed-pct", type=float, default=5.0)
    sp.set_defaults(func=cmd_sipp)
    st = sub.add_parser("self-test")
    st.set_defaults(func=cmd_self_test)
    a = p.parse_args()
    sys.exit(a.func(a))


if __name__ == "__main__":
    main()
