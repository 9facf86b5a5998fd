"""How cronmail's cost grows with the number of jobs: 10 to 1,000,000.

For each size: `cronmail check` (time and peak RSS, from wait4), `cronmail run` (peak
RSS while loading, and the settled RSS once start-up is over), and the timer loop's
fire lateness for the jobs spread over a minute (examples/fire_lateness). Jobs beyond
the first 100,000 go in jobs.d/*.toml, 100,000 a file (each file is under the 32 MiB
cap). Schedules are distinct up to 40,320 (minute, hour and day of month vary).
"""

import json
import math
import os
import shutil
import signal
import subprocess
import time

PER_FILE = 100000
# The daemon gives back start-up's pages after start-up and again 10 s later
# (src/daemon/trim.rs): "settled" is read after that.
SETTLE = 12


def write_jobs(folder, n, schedule, body, transport='[outbox]\ndir = "outbox"'):
    os.makedirs(folder, exist_ok=True)
    shutil.rmtree(os.path.join(folder, "state"), ignore_errors=True)
    shutil.rmtree(os.path.join(folder, "jobs.d"), ignore_errors=True)
    head = ['from = "bot@example.com"', 'timezone = "UTC"', 'state_dir = "state"', transport]

    def job(i):
        return '[[job]]\nname = "j%d"\nschedule = "%s"\nto = ["b@example.com"]\nsubject = "s %d"\nbody = "%s"' % (
            i, schedule(i), i, body)
    with open(os.path.join(folder, "jobs.toml"), "w") as f:
        f.write("\n".join(head + [job(i) for i in range(min(n, PER_FILE))]) + "\n")
    if n > PER_FILE:
        os.makedirs(os.path.join(folder, "jobs.d"))
        for k, start in enumerate(range(PER_FILE, n, PER_FILE)):
            with open(os.path.join(folder, "jobs.d", "%03d.toml" % k), "w") as f:
                f.write("\n".join(job(i) for i in range(start, min(n, start + PER_FILE))) + "\n")
    return os.path.join(folder, "jobs.toml")


def check_once(cronmail, path):
    """(seconds, peak RSS in MB) of one `cronmail check`.

    The peak comes from GNU time, not from this process's wait4: a child forked from
    Python starts its count at the size of Python (Linux carries the high-water mark of
    the forked image across exec), 20 MB or more."""
    t = time.time()
    p = subprocess.run(["/usr/bin/time", "-f", "maxrss=%M", cronmail, "-c", path, "check"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    took = time.time() - t
    if p.returncode != 0:
        raise SystemExit("cronmail check failed (%d): %s" % (p.returncode, p.stderr[-500:]))
    kb = int(p.stderr.strip().splitlines()[-1].split("=", 1)[1])
    return took, kb / 1024.0


def run_once(cronmail, path, settle=SETTLE, timeout=900):
    """(peak RSS while loading, settled RSS, seconds to `cronmail started`) of `cronmail run`."""
    folder = os.path.dirname(path)
    log = os.path.join(folder, "run.log")
    with open(log, "w") as f:
        p = subprocess.Popen([cronmail, "-c", path, "run"], stderr=f, cwd=folder)
    t = time.time()
    try:
        while "cronmail started" not in open(log).read():
            if time.time() - t > timeout or p.poll() is not None:
                raise SystemExit("cronmail did not start: %s" % open(log).read()[-500:])
            time.sleep(0.05)
        started = time.time() - t
        time.sleep(settle)
        status = dict(l.split(":", 1) for l in open("/proc/%d/status" % p.pid) if ":" in l)
        kb = lambda k: int(status[k].split()[0]) / 1024.0
        return kb("VmHWM"), kb("VmRSS"), started
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=120)


def fire(fire_bin, n, window):
    out = subprocess.run([fire_bin, "--jobs", str(n), "--mode", "spread", "--window", str(window), "--json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def slope(points):
    """The log-log slope between the first and last (x, y): 1 is linear."""
    (x0, y0), (x1, y1) = points[0], points[-1]
    if y0 <= 0 or y1 <= 0 or x1 == x0:
        return float("nan")
    return math.log(y1 / y0) / math.log(x1 / x0)
