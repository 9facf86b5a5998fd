#!/usr/bin/env python3
"""cronmail's benchmark: cronmail against its peers and the sink's limit, in one run.

Run through `bench/run` (which installs what this needs and builds cronmail). Every
server listens on 127.0.0.1 only. Comparisons alternate A/B within the run, because
these machines are noisy; each row reports the median of the repetitions and the
worst one (with few repetitions, "p99" is the worst).
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import smtplib
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import plots  # noqa: E402
import scaling  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRONMAIL = os.path.join(ROOT, "target/release/cronmail")
FIRE = os.path.join(ROOT, "target/release/examples/fire_lateness")
FIRE_REPS = 3  # runs of each spread size; the row shows the median
PASSWORD = "bench-pw"
BODY = ("x" * 72 + "\n") * 13  # about 1 KB, as smtp-source -l 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("nothing listens on 127.0.0.1:%d" % port)


def med_worst(xs, worst=max):
    return statistics.median(xs), worst(xs)


class Bench:
    def __init__(self, quick, work):
        self.quick = quick
        self.work = work
        self.rows = []  # (section, what, cronmail, peer, ratio, goal, verdict)
        self.notes = []
        self.fire_runs = {}  # (mode, n) -> the example's JSON
        self.bars = []  # (group, label, msg/s), for the burst plot
        self.scale = {}  # n -> scaling.measure's dict
        self.scaling_rows = []

    def row(self, section, what, ours, peer="", ratio="", goal="", ok=None):
        verdict = "" if ok is None else ("met" if ok else "MISSED")
        self.rows.append((section, what, ours, peer, ratio, goal, verdict))
        print("  %-44s %-34s %-30s %-8s %-18s %s" % (what, ours, peer, ratio, goal, verdict), flush=True)

    # ------------------------------------------------------------------ helpers

    def tls_files(self):
        """A test CA and a leaf for localhost it signed: (ca, cert, key). Clients trust
        the CA; rustls (rightly) refuses a self-signed CA certificate as a server's."""
        ca, ca_key = os.path.join(self.work, "ca.pem"), os.path.join(self.work, "ca.key")
        cert, key = os.path.join(self.work, "cert.pem"), os.path.join(self.work, "key.pem")
        if not os.path.exists(cert):
            ext = os.path.join(self.work, "leaf.ext")
            with open(ext, "w") as f:
                f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
            csr = os.path.join(self.work, "leaf.csr")
            for argv in (
                ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
                 "-days", "2", "-subj", "/CN=cronmail bench CA"],
                ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
                ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
                 "-days", "2", "-extfile", ext],
            ):
                subprocess.run(argv, check=True, capture_output=True)
            os.chmod(key, 0o644)  # read by stunnel and Postfix; a throwaway key
        return ca, cert, key

    def jobs_toml(self, folder, n, smtp, at=None, schedule=None, max_connections=4, transport=None, body=None):
        """A jobs.toml with `n` jobs, all due at `at` (a datetime) or on `schedule(i)`.
        The body is about 1 KB (as smtp-source's), or `body`."""
        lines = ['from = "bot@example.com"', 'timezone = "UTC"', 'state_dir = "state"']
        lines.append(transport or smtp)
        lines.append("[delivery]\nmax_connections = %d\nretry_min = \"1s\"\nretry_max = \"2s\"" % max_connections)
        body = body or BODY.replace("\n", "\\n")
        for i in range(n):
            sched = schedule(i) if schedule else "%d %d %d * * *" % (at.second, at.minute, at.hour)
            lines.append('[[job]]\nname = "j%d"\nschedule = "%s"\nto = ["b@example.com"]\nsubject = "s %d"\nbody = "%s"' % (i, sched, i, body))
        os.makedirs(folder, exist_ok=True)
        shutil.rmtree(os.path.join(folder, "state"), ignore_errors=True)
        path = os.path.join(folder, "jobs.toml")
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def cronmail_burst(self, n, smtp, max_connections=4, env=None):
        """Runs `cronmail run` with n jobs due in the same second; seconds from that
        instant to the last message accepted (the `sent` log line after the 250)."""
        folder = os.path.join(self.work, "burst")
        at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).replace(microsecond=0)
        path = self.jobs_toml(folder, n, smtp, at=at, max_connections=max_connections)
        return self.run_until_sent(folder, path, n, at, 120, env)

    def run_until_sent(self, folder, path, n, at, timeout, env=None):
        """Runs `cronmail run` on `path` until its log has `n` `sent` lines (or an
        error); seconds from `at` to the last of them."""
        log = os.path.join(folder, "log.json")
        with open(log, "w") as f:
            p = subprocess.Popen([CRONMAIL, "-c", path, "--log-format", "json", "run"], stderr=f,
                                 env=dict(os.environ, **(env or {})), cwd=folder)
        deadline = time.time() + 2 + timeout
        last, sent = None, 0
        while time.time() < deadline:
            time.sleep(0.2)
            sent, last, failed = 0, None, 0
            with open(log) as f:
                for line in f:
                    try:
                        d = json.loads(line)
                    except ValueError:
                        continue
                    if d.get("message") == "sent":
                        sent += 1
                        t = datetime.datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00"))
                        last = t if last is None or t > last else last
                    elif d.get("level") == "ERROR":
                        failed += 1
            if sent >= n or failed:
                break
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
        if sent < n:
            raise SystemExit("cronmail sent %d of %d; see %s" % (sent, n, log))
        return (last - at).total_seconds()

    # ------------------------------------------------------------------ 1. fire lateness

    def fire_lateness(self):
        print("1. fire lateness (scheduled instant -> hand-off to delivery)", flush=True)
        spread = [1000, 10000] if self.quick else [1000, 10000, 100000]
        window = 10 if self.quick else 60
        # A spread run's p99 is close to its worst instant (the jobs of one second fire
        # together, and the baseline has one sleeper per second), so one descheduling of
        # the process by a neighbour sets it. Each spread size runs FIRE_REPS times,
        # alternating, and the row shows the run with the median p99 beside the median
        # baseline, as the other sections report medians.
        reps = 1 if self.quick else FIRE_REPS
        spread_runs = {n: [] for n in spread}
        for _ in range(reps):
            for n in spread:
                spread_runs[n].append(self.fire_once("spread", n, window))
        for n in spread:
            runs = sorted(spread_runs[n], key=lambda r: r["p99_ms"])
            r = dict(runs[len(runs) // 2])
            r["baseline_p99_ms"] = statistics.median(x["baseline_p99_ms"] for x in runs)
            r["all_p99_ms"] = [x["p99_ms"] for x in spread_runs[n]]
            r["missed"] = sum(x["missed"] for x in runs)
            r["duplicated"] = sum(x["duplicated"] for x in runs)
            r["once"] = all(x["missed"] == 0 and x["duplicated"] == 0 and x["fired"] == n for x in runs)
            self.fire_runs[("spread", n)] = r
            self.fire_row("spread", n, window, r)
        for n in (1000, 10000):
            r = self.fire_once("burst", n, window)
            r["once"] = r["missed"] == 0 and r["duplicated"] == 0 and r["fired"] == n
            self.fire_runs[("burst", n)] = r
            self.fire_row("burst", n, window, r)

    def fire_once(self, mode, n, window):
        out = subprocess.run([FIRE, "--jobs", str(n), "--mode", mode, "--window", str(window), "--json"],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        self.notes.append("fire %s %d: p99 %.3f ms (sleep_until %.3f), missed %d, duplicated %d, parsed in %.0f ms"
                          % (mode, n, r["p99_ms"], r["baseline_p99_ms"], r["missed"], r["duplicated"], r["parse_ms"]))
        return r

    def fire_row(self, mode, n, window, r):
        what = "%s jobs %s" % (format(n, ","), "spread over %d s" % window if mode == "spread" else "due in the same second")
        ours = "p50 %.3f p99 %.3f max %.3f ms" % (r["p50_ms"], r["p99_ms"], r["max_ms"])
        if len(r.get("all_p99_ms", [])) > 1:
            ours += " (p99 of each run: %s)" % ", ".join("%.3f" % x for x in r["all_p99_ms"])
        base = "sleep_until p99 %.3f ms" % r["baseline_p99_ms"]
        once = r["once"]
        if mode == "spread" and n == 10000:
            self.row("fire", what, ours, base, "", "p99 <= 2 ms, all once", r["p99_ms"] <= 2 and once)
        elif mode == "burst":
            self.row("fire", what, ours, base, "", "every job fires once", once)
        else:
            self.row("fire", what, ours, base, "", "all once", once)

    # ------------------------------------------------------------------ 2a. plaintext sink

    def sink_burst(self):
        n = 1000
        reps = 3 if self.quick else 7
        print("2a. burst of %d messages, plaintext, to Postfix smtp-sink (%d repetitions, alternating)" % (n, reps), flush=True)
        port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", "127.0.0.1:%d" % port, "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            smtp = '[smtp]\nhost = "127.0.0.1"\nport = %d\ntls = "none"\ntimeout = "30s"' % port
            ours, theirs = [], []
            for _ in range(reps):
                t = time.time()
                subprocess.run(["smtp-source", "-s", "4", "-m", str(n), "-l", "1024", "-f", "a@example.com",
                                "-t", "b@example.com", "127.0.0.1:%d" % port], check=True, capture_output=True)
                theirs.append(time.time() - t)
                ours.append(self.cronmail_burst(n, smtp))
        finally:
            sink.terminate()
            sink.wait()
        o, ow = med_worst(ours)
        s, sw = med_worst(theirs)
        ratio = s / o
        self.bars += [("plaintext to smtp-sink", "cronmail", n / o), ("plaintext to smtp-sink", "smtp-source", n / s)]
        self.row("burst", "plaintext -> smtp-sink, 4 connections",
                 "%.0f msg/s (last at %.3f s, worst %.3f)" % (n / o, o, ow),
                 "smtp-source -s 4: %.0f msg/s (%.3f s)" % (n / s, s), "%.2fx" % ratio, ">= 0.8x smtp-source", ratio >= 0.8)

    # ------------------------------------------------------------------ 2c. mail merge

    def merge_burst(self):
        """One job with a recipients_file of 10,000 rows, to smtp-sink: from the
        occurrence to the last row's 250, against smtp-source's 10,000 messages on 4
        connections to the same sink (its ceiling)."""
        n = 2000 if self.quick else 10000
        reps = 1 if self.quick else 3
        print("2c. mail merge: one job, %d rows, plaintext, to Postfix smtp-sink (%d repetitions)" % (n, reps), flush=True)
        port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", "127.0.0.1:%d" % port, "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        folder = os.path.join(self.work, "merge")
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, "rows.csv"), "w") as f:
            f.write("email,name,n\n")
            for i in range(n):
                f.write("r%d@example.com,Row %d,%d\n" % (i, i, i))
        try:
            wait_port(port)
            smtp = '[smtp]\nhost = "127.0.0.1"\nport = %d\ntls = "none"\ntimeout = "30s"' % port
            ours, theirs = [], []
            for _ in range(reps):
                t = time.time()
                subprocess.run(["smtp-source", "-s", "4", "-m", str(n), "-l", "1024", "-f", "a@example.com",
                                "-t", "b@example.com", "127.0.0.1:%d" % port], check=True, capture_output=True)
                theirs.append(time.time() - t)
                ours.append(self.merge_once(folder, n, smtp))
        finally:
            sink.terminate()
            sink.wait()
        o, ow = med_worst(ours)
        s, _ = med_worst(theirs)
        ratio = s / o
        self.bars += [("mail merge, %s rows" % format(n, ","), "cronmail", n / o),
                      ("mail merge, %s rows" % format(n, ","), "smtp-source", n / s)]
        self.row("merge", "one job, %s CSV rows -> smtp-sink, 4 connections" % format(n, ","),
                 "%.0f msg/s (last at %.2f s, worst %.2f)" % (n / o, o, ow),
                 "smtp-source -s 4 -m %d: %.0f msg/s (%.2f s)" % (n, n / s, s), "%.2fx" % ratio,
                 "reported against the ceiling", None)
        self.notes.append("merge: each of the %d rows is claimed in the ledger (one transaction), sent, and recorded on its own; the time runs from the occurrence to the last row's `sent` line" % n)

    def merge_once(self, folder, n, smtp):
        at = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)).replace(microsecond=0)
        shutil.rmtree(os.path.join(folder, "state"), ignore_errors=True)
        body = BODY.replace("\n", "\\n")
        text = "\n".join([
            'from = "bot@example.com"', 'timezone = "UTC"', 'state_dir = "state"', smtp,
            "[delivery]\nmax_connections = 4",
            '[[job]]\nname = "merge"\nschedule = "%d %d %d * * *"\nrecipients_file = "rows.csv"\n'
            'subject = "hello {{ row.name }}"\nbody = "%s"' % (at.second, at.minute, at.hour, body),
        ]) + "\n"
        path = os.path.join(folder, "jobs.toml")
        with open(path, "w") as f:
            f.write(text)
        return self.run_until_sent(folder, path, n, at, 300)

    # ------------------------------------------------------------------ 2b. postfix submission

    def postfix_submission(self):
        n = 200 if self.quick else 1000
        n_msmtp = 50 if self.quick else 200
        reps = 1 if self.quick else 3
        ca, cert, key = self.tls_files()
        port = free_port()
        inst = os.path.join(self.work, "postfix")
        shutil.rmtree(inst, ignore_errors=True)
        subprocess.run([os.path.join(ROOT, "bench/postfix-instance.sh"), "start", inst, str(port), cert, key, PASSWORD],
                       check=True)
        print("2b. STARTTLS + AUTH to Postfix smtpd with SASL (private instance on 127.0.0.1:%d)" % port, flush=True)
        ctx = ssl.create_default_context(cafile=ca)

        def drain():
            # Each run starts with an empty queue, so runs do not slow each other.
            end = time.time() + 60
            while time.time() < end:
                busy = sum(len(files) for sub in ("incoming", "active", "maildrop")
                           for _, _, files in os.walk(os.path.join(inst, "queue", sub)))
                if busy == 0:
                    return
                time.sleep(0.1)

        def msg(i):
            return "From: a@example.com\r\nTo: b@example.com\r\nSubject: m %d\r\n\r\n%s" % (i, BODY.replace("\n", "\r\n"))

        def reused(conns, total):
            """The server's ceiling: `conns` threads, each one connection, reused."""
            errors = []

            def worker(k):
                try:
                    s = smtplib.SMTP("127.0.0.1", port)
                    s.starttls(context=ctx)
                    s.login("bench", PASSWORD)
                    for i in range(k):
                        s.sendmail("a@example.com", ["b@example.com"], msg(i))
                    s.quit()
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(e)
            t = time.time()
            threads = [threading.Thread(target=worker, args=(total // conns,)) for _ in range(conns)]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            if errors:
                raise SystemExit("ceiling run failed: %r" % errors[0])
            return total / (time.time() - t)

        def smtplib_loop(total):
            t = time.time()
            for i in range(total):
                s = smtplib.SMTP("127.0.0.1", port)
                s.starttls(context=ctx)
                s.login("bench", PASSWORD)
                s.sendmail("a@example.com", ["b@example.com"], msg(i))
                s.quit()
            return total / (time.time() - t)

        def msmtp_loop(total):
            argv = ["msmtp", "--host=127.0.0.1", "--port=%d" % port, "--tls=on", "--tls-starttls=on",
                    "--tls-trust-file=%s" % ca, "--auth=plain", "--user=bench",
                    "--passwordeval=echo %s" % PASSWORD, "--from=a@example.com", "b@example.com"]
            t = time.time()
            for i in range(total):
                subprocess.run(argv, input=msg(i).encode(), check=True, capture_output=True)
            return total / (time.time() - t)

        smtp = ('[smtp]\nhost = "localhost"\nport = %d\ntls = "starttls"\nusername = "bench"\n'
                'password_env = "BENCH_PW"\nca_file = "%s"\ntimeout = "30s"' % (port, ca))
        try:
            ceiling, ours, loop, msm = [], [], [], []
            for _ in range(reps):
                drain()
                ceiling.append(max(reused(4, n), (drain(), reused(8, n))[1]))
                drain()
                # max_connections is the knob: the better of 4 and 8, as for the ceiling.
                ours.append(max(n / self.cronmail_burst(n, smtp, 4, {"BENCH_PW": PASSWORD}),
                                (drain(), n / self.cronmail_burst(n, smtp, 8, {"BENCH_PW": PASSWORD}))[1]))
                drain()
                loop.append(smtplib_loop(n))
                drain()
                msm.append(msmtp_loop(n_msmtp))
        finally:
            subprocess.run([os.path.join(ROOT, "bench/postfix-instance.sh"), "stop", inst])
        c = statistics.median(ceiling)
        o, ow = statistics.median(ours), min(ours)
        lp = statistics.median(loop)
        m = statistics.median(msm)
        g = "Postfix STARTTLS+AUTH"
        self.bars += [(g, "cronmail", o), (g, "server ceiling", c), (g, "smtplib loop", lp), (g, "msmtp", m)]
        self.row("submission", "server ceiling (4 or 8 reused connections)", "", "%.0f msg/s" % c)
        self.row("submission", "cronmail, %d due at once, 4 or 8 connections" % n, "%.0f msg/s (worst %.0f)" % (o, ow),
                 "ceiling %.0f msg/s" % c, "%.2fx" % (o / c), ">= 0.95x ceiling", o / c >= 0.95)
        self.row("submission", "vs a Python smtplib loop (connection per msg)", "%.0f msg/s" % o,
                 "smtplib %.0f msg/s" % lp, "%.1fx" % (o / lp), ">= 2x smtplib", o / lp >= 2)
        self.row("submission", "vs msmtp, one process per message (%d msgs)" % n_msmtp, "%.0f msg/s" % o,
                 "msmtp %.0f msg/s" % m, "%.1fx" % (o / m), "")

    # ------------------------------------------------------------------ 2c. implicit TLS

    def implicit_tls(self):
        n = 1000
        reps = 2 if self.quick else 5
        ca, cert, key = self.tls_files()
        sink_port, tls_port = free_port(), free_port()
        conf = os.path.join(self.work, "stunnel.conf")
        with open(conf, "w") as f:
            f.write("foreground = yes\npid =\n[smtps]\naccept = 127.0.0.1:%d\nconnect = 127.0.0.1:%d\ncert = %s\nkey = %s\n"
                    % (tls_port, sink_port, cert, key))
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", "127.0.0.1:%d" % sink_port, "5000"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        tunnel = subprocess.Popen(["stunnel4", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("2c. implicit TLS: smtp-sink behind stunnel, %d messages, 4 connections" % n, flush=True)
        ctx = ssl.create_default_context(cafile=ca)
        try:
            wait_port(sink_port)
            wait_port(tls_port)
            smtp = ('[smtp]\nhost = "localhost"\nport = %d\ntls = "implicit"\nca_file = "%s"\ntimeout = "30s"'
                    % (tls_port, ca))

            def python_ssl(conns, total):
                def worker(k):
                    s = smtplib.SMTP_SSL("127.0.0.1", tls_port, context=ctx)
                    for i in range(k):
                        s.sendmail("a@example.com", ["b@example.com"], "Subject: %d\r\n\r\n%s" % (i, BODY))
                    s.quit()
                t = time.time()
                threads = [threading.Thread(target=worker, args=(total // conns,)) for _ in range(conns)]
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                return total / (time.time() - t)
            ours, py = [], []
            for _ in range(reps):
                ours.append(n / self.cronmail_burst(n, smtp))
                py.append(python_ssl(4, n))
        finally:
            tunnel.terminate()
            sink.terminate()
            tunnel.wait()
            sink.wait()
        o = statistics.median(ours)
        p = statistics.median(py)
        self.bars += [("implicit TLS via stunnel", "cronmail", o), ("implicit TLS via stunnel", "Python SMTP_SSL x4", p)]
        self.row("implicit", "implicit TLS -> stunnel -> smtp-sink", "%.0f msg/s (worst %.0f)" % (o, min(ours)),
                 "4 Python SMTP_SSL, reused: %.0f msg/s" % p, "%.2fx" % (o / p), ">= 1.2x", o / p >= 1.2)

    # ------------------------------------------------------------------ 3-5. memory, idle, start-up

    # A typical reminder: a line with a variable and a date, and one var per job.
    SMALL_BODY = "Hi {{ job }}, the report for week {{ scheduled_at | strftime('%V') }} is due on {{ date }}."

    def spread_schedule(self, i):
        # Distinct schedules (no sharing): minute, hour and day of month vary with i.
        return "%d %d %d * *" % (i % 60, (i // 60) % 24, 1 + (i // 1440) % 28)

    def idle_schedule(self, i):
        # The spread schedules, in a month six months from now: none is due while measured
        # (the spread ones fire every minute on the 1st to the 7th of each month).
        month = (time.gmtime().tm_mon + 5) % 12 + 1
        return "%d %d %d %d *" % (i % 60, (i // 60) % 24, 1 + (i // 1440) % 28, month)

    def rss(self, n, idle_seconds=0):
        folder = os.path.join(self.work, "mem%d" % n)
        path = self.jobs_toml(folder, n, "", schedule=self.idle_schedule,
                              transport='[outbox]\ndir = "outbox"', body=self.SMALL_BODY)
        log = os.path.join(folder, "log.txt")
        with open(log, "w") as f:
            p = subprocess.Popen([CRONMAIL, "-c", path, "run"], stderr=f, cwd=folder)
        try:
            end = time.time() + 120
            while "cronmail started" not in open(log).read():
                if time.time() > end or p.poll() is not None:
                    raise SystemExit("cronmail did not start: %s" % open(log).read())
                time.sleep(0.05)
            time.sleep(scaling.SETTLE)  # past the daemon's second trim (src/daemon/trim.rs)
            status = open("/proc/%d/status" % p.pid).read()
            rss_kb = int([l for l in status.splitlines() if l.startswith("VmRSS:")][0].split()[1])
            idle = None
            if idle_seconds:
                def sample():
                    stat = open("/proc/%d/stat" % p.pid).read().rsplit(")", 1)[1].split()
                    cpu = (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")
                    per_thread = {}
                    for tid in os.listdir("/proc/%d/task" % p.pid):
                        try:
                            fields = dict(l.split(":", 1) for l in open("/proc/%d/task/%s/status" % (p.pid, tid)))
                            per_thread[tid] = (int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"]))
                        except (OSError, KeyError, ValueError):
                            pass
                    return cpu, per_thread
                a = sample()
                time.sleep(idle_seconds)
                b = sample()
                # Per thread, so a thread that exits (tokio's idle blocking threads do) does
                # not make the sum go backwards; a new thread counts from zero.
                vol = sum(v - a[1].get(t, (0, 0))[0] for t, (v, _) in b[1].items())
                inv = sum(i - a[1].get(t, (0, 0))[1] for t, (_, i) in b[1].items())
                idle = ((b[0] - a[0]) / idle_seconds, vol / idle_seconds, inv / idle_seconds)
            return rss_kb / 1024.0, idle
        finally:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)

    def measure(self, n):
        """scaling.py's measurements of n jobs (check, run), once per run."""
        if n not in self.scale:
            folder = os.path.join(self.work, "scale%d" % n)
            path = scaling.write_jobs(folder, n, self.spread_schedule, self.SMALL_BODY)
            checks = [scaling.check_once(CRONMAIL, path) for _ in range(3 if n <= 10000 else 1)]
            peak, settled, started = scaling.run_once(CRONMAIL, path)
            self.scale[n] = dict(n=n, check_s=statistics.median(c[0] for c in checks),
                                 check_peak_mb=max(c[1] for c in checks), run_peak_mb=peak,
                                 settled_mb=settled, started_s=started)
            shutil.rmtree(folder, ignore_errors=True)
        return self.scale[n]

    def memory_idle(self):
        print("3-4. memory (settled RSS, %d s after start; distinct schedules) and idle cost" % scaling.SETTLE,
              flush=True)
        sizes = [10, 1000, 10000] if self.quick else [10, 1000, 10000, 100000]
        goals = {10: 6, 10000: 12}
        for n in sizes:
            m = self.measure(n)
            goal = goals.get(n)
            self.row("memory", "RSS with %s jobs, outbox" % format(n, ","), "%.1f MB" % m["settled_mb"],
                     "peak %.1f MB while loading" % m["run_peak_mb"], "",
                     "<= %d MB" % goal if goal else "", m["settled_mb"] <= goal if goal else None)
            if n == 10:
                folder = os.path.join(self.work, "smtp10")
                smtp = ('[smtp]\nhost = "smtp.example.com"\nport = 587\ntls = "starttls"\n'
                        'username = "bot@example.com"\npassword_env = "BENCH_PW"')
                path = scaling.write_jobs(folder, 10, self.spread_schedule, self.SMALL_BODY, transport=smtp)
                os.environ["BENCH_PW"] = PASSWORD
                peak, settled, _ = scaling.run_once(CRONMAIL, path)
                self.row("memory", "RSS with 10 jobs, SMTP (STARTTLS, no send yet)", "%.1f MB" % settled,
                         "peak %.1f MB while loading" % peak, "", "<= 6 MB", settled <= 6)
            if n == 100000:
                self.row("memory", "peak RSS, `check` of 100,000 jobs", "%.1f MB" % m["check_peak_mb"], "", "",
                         "<= 150 MB", m["check_peak_mb"] <= 150)
                self.row("memory", "peak RSS, `run` loading 100,000 jobs", "%.1f MB" % m["run_peak_mb"], "", "",
                         "<= 150 MB", m["run_peak_mb"] <= 150)
        window = 10 if self.quick else 60
        _, idle = self.rss(10000, window)
        cpu, vol, inv = idle
        self.row("idle", "10,000 jobs, none due, %d s" % window,
                 "%.3f wakeups/s, CPU %.2f ms/s" % (vol, cpu * 1000), "involuntary %.3f/s" % inv, "",
                 "<= 0.1 wakeups/s", vol <= 0.1)

    def scale_table(self):
        sizes = [10, 1000, 10000] if self.quick else [10, 1000, 10000, 100000, 1000000]
        window = 10 if self.quick else 60
        print("7. scaling: %s jobs" % ", ".join(format(n, ",") for n in sizes), flush=True)
        for n in sizes:
            m = dict(self.measure(n))
            r = self.fire_runs.get(("spread", n)) or scaling.fire(FIRE, n, window)
            self.fire_runs[("spread", n)] = r
            m.update(fire_p99_ms=r["p99_ms"], fire_base_p99_ms=r["baseline_p99_ms"],
                     fire_once=r["missed"] == 0 and r["duplicated"] == 0 and r["fired"] == n)
            self.scaling_rows.append(m)
            print("  %9s jobs: check %.3f s (peak %.0f MB), run peak %.0f MB, settled %.1f MB, fire p99 %.3f ms"
                  % (format(n, ","), m["check_s"], m["check_peak_mb"], m["run_peak_mb"], m["settled_mb"],
                     m["fire_p99_ms"]), flush=True)
            if n == 1000000:
                self.row("scaling", "1,000,000 jobs: settled RSS", "%.0f MB" % m["settled_mb"], "", "",
                         "<= 500 MB", m["settled_mb"] <= 500)
                self.row("scaling", "1,000,000 jobs: `check`", "%.1f s" % m["check_s"], "", "", "<= 15 s",
                         m["check_s"] <= 15)

    def scaling_section(self):
        """The scaling table, how each column grows, and the plots."""
        rows = self.scaling_rows
        if not rows:
            return []
        out = ["", "## Scaling", "",
               "`bench/run` step 7 (`bench/scaling.py`): jobs beyond 100,000 are in jobs.d/*.toml, 100,000 a "
               "file; schedules distinct up to 40,320; settled is %d s after `cronmail started`; fire lateness "
               "is examples/fire_lateness with the jobs spread over a minute." % scaling.SETTLE, "",
               "| jobs | `check` | `check` peak RSS | `run` peak RSS | settled RSS | settled per job | "
               "fire p99 (sleep_until p99) | start to `started` |",
               "|---|---|---|---|---|---|---|---|"]
        base = rows[0]["settled_mb"]
        for m in rows:
            per = (m["settled_mb"] - base) * 1048576 / m["n"] if m["n"] > rows[0]["n"] else float("nan")
            out.append("| %s | %.3f s | %.1f MB | %.1f MB | %.1f MB | %s | %.3f ms (%.3f)%s | %.2f s |" % (
                format(m["n"], ","), m["check_s"], m["check_peak_mb"], m["run_peak_mb"], m["settled_mb"],
                "" if per != per else "%.0f B" % per, m["fire_p99_ms"], m["fire_base_p99_ms"],
                "" if m["fire_once"] else " MISSED/DOUBLED", m["started_s"]))
        big = [m for m in rows if m["n"] >= 10000]
        if len(big) >= 2:
            cs = scaling.slope([(m["n"], m["check_s"]) for m in big])
            rs = scaling.slope([(m["n"], m["settled_mb"] - base) for m in big])
            ps = scaling.slope([(m["n"], m["run_peak_mb"]) for m in big])
            out += ["", "Growth from %s to %s jobs, as the log-log slope (1 is linear): `check` time %.2f, "
                    "settled RSS above the 10-job base %.2f, peak while loading %.2f." % (
                        format(big[0]["n"], ","), format(big[-1]["n"], ","), cs, rs, ps)]
        return out

    def startup(self):
        reps = 5 if self.quick else 15
        print("5. start-up: `cronmail check` (%d runs each, alternating)" % reps, flush=True)
        big = self.jobs_toml(os.path.join(self.work, "check10k"), 10000, "", schedule=self.spread_schedule,
                             transport='[outbox]\ndir = "outbox"', body=self.SMALL_BODY)
        small = self.jobs_toml(os.path.join(self.work, "check10"), 10, "", schedule=self.spread_schedule,
                               transport='[outbox]\ndir = "outbox"', body=self.SMALL_BODY)
        tb, ts = [], []
        for _ in range(reps):
            for path, acc in ((big, tb), (small, ts)):
                t = time.time()
                subprocess.run([CRONMAIL, "-c", path, "check"], check=True, capture_output=True)
                acc.append((time.time() - t) * 1000)
        b, bw = med_worst(tb)
        s, _ = med_worst(ts)
        self.row("start-up", "`cronmail check`, 10,000 jobs (distinct schedules)", "%.0f ms (worst %.0f)" % (b, bw),
                 "10 jobs: %.0f ms" % s, "", "<= 200 ms", b <= 200)

    # ------------------------------------------------------------------ 6. catch-up

    def catch_up(self):
        """1,000 jobs at `* * * * *` whose ledger says they last ran 7 days ago: the time
        from start to the first on-time send, and the ledger rows and log lines each job
        adds, for each policy."""
        n = 100 if self.quick else 1000
        print("6. catch-up after 7 days down, %d jobs at * * * * *" % n, flush=True)
        import sqlite3
        for policy in ("skip", "latest", "all"):
            folder = os.path.join(self.work, "catchup-" + policy)
            extra = 'catch_up = "%s"' % policy + ('\nmax_late = "1h"' if policy == "all" else "")
            lines = ['from = "bot@example.com"', 'timezone = "UTC"', 'state_dir = "state"', '[outbox]\ndir = "outbox"']
            for i in range(n):
                lines.append('[[job]]\nname = "j%d"\nschedule = "* * * * *"\nto = ["b@example.com"]\nsubject = "s"\nbody = "b"\n%s' % (i, extra))
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            path = os.path.join(folder, "jobs.toml")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            # Start inside a minute, early enough that nothing new falls due meanwhile.
            while not 3 <= time.time() % 60 <= 30:
                time.sleep(0.2)
            # A first run creates the ledger; then each job's last occurrence is 7 days old.
            log = os.path.join(folder, "create.log")
            with open(log, "w") as f:
                p = subprocess.Popen([CRONMAIL, "-c", path, "run"], stderr=f, cwd=folder)
            while "cronmail started" not in open(log).read():
                time.sleep(0.05)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
            minute = int(time.time()) // 60 * 60
            db = sqlite3.connect(os.path.join(folder, "state", "ledger.sqlite3"))
            db.executemany(
                "INSERT INTO occurrences (job, scheduled_at, state, message_id, attempts, created_at, updated_at) "
                "VALUES (?, ?, 'sent', ?, 1, ?, ?)",
                [("j%d" % i, minute - 7 * 86400, "j%d.old@example.com" % i, minute, minute) for i in range(n)])
            db.commit()
            before = db.execute("SELECT COUNT(*) FROM occurrences").fetchone()[0]
            db.close()
            log = os.path.join(folder, "log.json")
            started = time.time()
            with open(log, "w") as f:
                p = subprocess.Popen([CRONMAIL, "-c", path, "--log-format", "json", "run"], stderr=f, cwd=folder)
            want_sent = n * (61 if policy == "all" else 1)
            want_ranges = n
            first_sent, sent, ranges = None, 0, 0
            deadline = time.time() + 300
            while time.time() < deadline:
                time.sleep(0.2)
                sent, ranges, first_sent = 0, 0, None
                with open(log) as f:
                    for line in f:
                        try:
                            d = json.loads(line)
                        except ValueError:
                            continue
                        msg = d.get("message", "")
                        if msg == "sent":
                            sent += 1
                            if first_sent is None:
                                first_sent = datetime.datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")).timestamp()
                        elif msg.startswith("skipped ") and "occurrences of" in msg:
                            ranges += 1
                if sent >= want_sent and ranges >= want_ranges:
                    break
            time.sleep(1)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=60)
            per_job = {}
            with open(log) as f:
                for line in f:
                    try:
                        d = json.loads(line)
                    except ValueError:
                        continue
                    if d.get("job"):
                        per_job[d["job"]] = per_job.get(d["job"], 0) + 1
            db = sqlite3.connect(os.path.join(folder, "state", "ledger.sqlite3"))
            after = db.execute("SELECT COUNT(*) FROM occurrences").fetchone()[0]
            db.close()
            rows = (after - before) / n
            lines_per_job = sum(per_job.values()) / n if per_job else 0
            to_first = (first_sent - started) if first_sent else float("inf")
            small = policy != "all"
            self.row("catch-up", "%s: start to first on-time send" % policy, "%.2f s" % to_first, "", "",
                     "<= 2 s", to_first <= 2)
            self.row("catch-up", "%s: ledger rows added per job" % policy, "%.2f" % rows,
                     "%d sent, %d stretch lines" % (sent, ranges), "", "<= 2" if small else "", rows <= 2 if small else None)
            self.row("catch-up", "%s: log lines per job" % policy, "%.2f" % lines_per_job, "", "",
                     "<= 2" if small else "", lines_per_job <= 2 if small else None)
        self.notes.append("Catch-up under a +3 h wall-clock jump with 60 every-second jobs is measured on an "
                          "injected clock by `tests/it/faults.rs` (after_a_three_hour_clock_jump...): regular "
                          "sends resume with the first second after the jump, one skipped-stretch row per job.")

    # ------------------------------------------------------------------ report

    def machine(self):
        cpu = "unknown CPU"
        try:
            for l in open("/proc/cpuinfo"):
                if l.startswith("model name"):
                    cpu = l.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        mem = "?"
        try:
            kb = int(open("/proc/meminfo").readline().split()[1])
            mem = "%.0f GiB" % (kb / 1048576)
        except (OSError, ValueError):
            pass
        return "%d cores (%s), %s RAM, Linux %s" % (os.cpu_count(), cpu, mem, platform.release())

    def plot_section(self, folder):
        if not plots.available():
            return ["", "(No plots: matplotlib is not installed; `bench/run` installs it in target/bench-venv.)"]
        fire_runs = [("%s jobs spread over a minute" % format(n, ","), self.fire_runs[("spread", n)])
                     for n in (10000, 1000000) if ("spread", n) in self.fire_runs]
        if not fire_runs and self.fire_runs:
            fire_runs = [(" ".join(map(str, k)), v) for k, v in list(self.fire_runs.items())[:1]]
        names = plots.draw(folder, self.scaling_rows, fire_runs, self.bars)
        titles = {"BENCHMARKS-scaling.svg": "Check time and memory against the number of jobs (log-log)",
                  "BENCHMARKS-fire.svg": "Fire lateness, cronmail's timer loop beside sleep_until in the same process",
                  "BENCHMARKS-bursts.svg": "Burst throughput, cronmail (blue) and each peer"}
        out = ["", "## Plots", ""]
        for n in names:
            out += ["![%s](%s)" % (titles[n], n), ""]
        return out

    def report(self, path, seconds):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out = ["# cronmail benchmarks", "",
               "Written by `bench/run%s` on %s, in %.0f s." % (" --quick" if self.quick else "", now, seconds), "",
               "Machine: %s. Shared and noisy: every comparison ran in the same invocation, alternating." % self.machine(),
               "", "Medians of the repetitions; \"worst\" is the slowest repetition.", "",
               "| section | measurement | cronmail | peer / baseline | ratio | goal | |",
               "|---|---|---|---|---|---|---|"]
        for r in self.rows:
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
        out += self.scaling_section()
        out += self.plot_section(os.path.dirname(os.path.abspath(path)))
        out += ["", "Notes:", ""] + ["- " + n for n in self.notes] + [""]
        # What the numbers mean and what is left, written by hand (bench/notes.md).
        notes = os.path.join(ROOT, "bench/notes.md")
        if os.path.exists(notes) and not self.quick:
            out += [open(notes).read()]
        with open(path, "w") as f:
            f.write("\n".join(out))
        print("wrote %s" % path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller sizes; about 80 s")
    ap.add_argument("--out", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--only", help="comma-separated: fire,sink,merge,submission,implicit,memory,startup,catchup,scaling")
    args = ap.parse_args()
    started = time.time()
    work = tempfile.mkdtemp(prefix="cronmail-bench-")
    os.chmod(work, 0o755)  # Postfix, running as `postfix`, reads its files under it
    b = Bench(args.quick, work)
    steps = [("fire", b.fire_lateness), ("sink", b.sink_burst), ("merge", b.merge_burst),
             ("submission", b.postfix_submission),
             ("implicit", b.implicit_tls), ("memory", b.memory_idle), ("startup", b.startup),
             ("catchup", b.catch_up), ("scaling", b.scale_table)]
    only = set(args.only.split(",")) if args.only else None
    try:
        for name, step in steps:
            if only is None or name in only:
                try:
                    step()
                except (SystemExit, Exception) as e:  # noqa: BLE001 - the report says which step failed
                    print("  step %s failed: %s" % (name, e), flush=True)
                    b.rows.append((name, "step failed", str(e)[:200], "", "", "", "MISSED"))
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(work, ignore_errors=True)
    b.report(args.out, time.time() - started)
    missed = [r for r in b.rows if r[6] == "MISSED"]
    print("%d goals missed" % len(missed))


if __name__ == "__main__":
    sys.exit(main())
