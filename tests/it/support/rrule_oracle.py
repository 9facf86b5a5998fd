"""An independent expansion of RFC 5545 rules, to check cronmail's against: Python's
`dateutil.rrule` in wall-clock time, each instance then mapped to an instant with
`zoneinfo` (fold=0: a repeated time is its first instance, and a time in a DST gap is
read with the offset before the gap, as RFC 5545 3.3.5 reads DATE-TIME values).

    python rrule_oracle.py SEED COUNT

Prints [{"rrule", "start", "tz", "from", "expected": [UTC instants]}, ...]: random
rules over 2026-2035, each with the first instants after "from"."""

import json
import random
import sys
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from dateutil.rrule import rrulestr

ZONES = [
    "Europe/Berlin",        # northern hemisphere, 1 h at 02:00
    "America/New_York",
    "Australia/Sydney",     # southern hemisphere
    "Australia/Lord_Howe",  # a 30-minute shift
    "America/Santiago",     # southern, at midnight
    "Pacific/Chatham",      # +12:45 / +13:45
    "Asia/Seoul",           # no DST
    "UTC",
]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]
END = datetime(2035, 12, 31, 23, 59, 59)
TAKE = 25


def rule(r):
    freq = r.choice(["YEARLY", "MONTHLY", "MONTHLY", "WEEKLY", "WEEKLY", "DAILY", "DAILY", "HOURLY"])
    parts = [f"FREQ={freq}"]
    if r.random() < 0.5:
        parts.append(f"INTERVAL={r.randint(2, 4)}")
    if freq == "WEEKLY" and r.random() < 0.8:
        parts.append("BYDAY=" + ",".join(sorted(r.sample(DAYS, r.randint(1, 3)), key=DAYS.index)))
    if freq == "MONTHLY":
        pick = r.random()
        if pick < 0.3:
            parts.append("BYMONTHDAY=" + ",".join(map(str, sorted(r.sample([1, 10, 15, 28, 31, -1], r.randint(1, 2))))))
        elif pick < 0.6:
            parts.append(f"BYDAY={r.choice(['1', '2', '-1'])}{r.choice(DAYS)}")
        elif pick < 0.8:
            parts.append("BYDAY=MO,TU,WE,TH,FR;BYSETPOS=-1")
    if freq == "YEARLY" and r.random() < 0.5:
        parts.append(f"BYMONTH={r.choice([3, 4, 10, 11])};BYDAY=-1SU")
    if freq == "DAILY" and r.random() < 0.4:
        parts.append("BYHOUR=" + ",".join(map(str, sorted(r.sample([0, 1, 2, 3, 9, 17], r.randint(1, 3))))))
    if freq in ("DAILY", "HOURLY") and r.random() < 0.3:
        parts.append("BYMINUTE=" + ",".join(map(str, sorted(r.sample([0, 15, 30, 45], r.randint(1, 2))))))
    if r.random() < 0.2:
        parts.append(f"COUNT={r.randint(3, 40)}")
    return ";".join(parts)


def transitions(zone, year):
    """The local dates in `year` on which `zone` changes its offset."""
    out = []
    day = datetime(year, 1, 1, 12)
    prev = day.replace(tzinfo=zone).utcoffset()
    while day.year == year:
        day += timedelta(days=1)
        off = day.replace(tzinfo=zone).utcoffset()
        if off != prev:
            out.append(day - timedelta(days=1))
        prev = off
    return out


def main():
    seed, count = int(sys.argv[1]), int(sys.argv[2])
    r = random.Random(seed)
    out = []
    for _ in range(count):
        tz = r.choice(ZONES)
        text = rule(r)
        # Times near the usual transitions, so that gaps and repeats are hit.
        hour, minute = r.choice([(0, 0), (0, 30), (1, 30), (2, 0), (2, 15), (2, 30), (3, 0), (9, 0), (17, 45)])
        start = datetime(2026, 1, 1, hour, minute) + timedelta(days=r.randint(0, 3000))
        if "HOURLY" in text:
            start = start.replace(year=r.randint(2026, 2034))
        frm = start - timedelta(days=1) + timedelta(days=r.randint(0, 400 if "HOURLY" not in text else 30))
        zone = ZoneInfo(tz)
        # Most daily and hourly rules start just before a DST change.
        near = transitions(zone, r.randint(2026, 2034))
        if near and r.random() < 0.8 and ("DAILY" in text or "HOURLY" in text):
            day = r.choice(near) - timedelta(days=r.randint(0, 2))
            start = datetime(day.year, day.month, day.day, hour, minute)
            frm = start - timedelta(days=1)
        frm_utc = frm.replace(tzinfo=zone).astimezone(timezone.utc)
        instants = set()
        for local in rrulestr(text, dtstart=start):
            if local > END or (len(instants) > 10 * TAKE and local > frm + timedelta(days=2)):
                break
            t = local.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
            if t > frm_utc:
                instants.add(t)
        expected = sorted(instants)[:TAKE]
        out.append({
            "rrule": text,
            "start": start.strftime("%Y-%m-%dT%H:%M"),
            "tz": tz,
            "from": frm_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "expected": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in expected],
        })
    json.dump(out, sys.stdout)


main()
