"""Reads RFC 5322 messages with independent parsers: Python's `email` package with
`email.policy.strict` (defects are errors) and the `icalendar` package.

    python mime_check.py MESSAGE.eml...

Prints one JSON object per message: its headers of interest, each leaf part (type,
parameters, file name, SHA-256 of the decoded payload), and, for a text/calendar part,
what `icalendar` reads in it (method, UID, start with its zone, duration, attendees,
alarms). Exits 1 on any defect."""

import email
import email.policy
import hashlib
import json
import sys

import icalendar


def calendar(data):
    cal = icalendar.Calendar.from_ical(data)
    events = []
    for ev in cal.walk("VEVENT"):
        start = ev.decoded("DTSTART")
        end = ev.decoded("DTEND")
        tz = start.tzinfo
        events.append({
            "uid": str(ev["UID"]),
            "sequence": int(ev.get("SEQUENCE", -1)),
            "start": start.isoformat(),
            "start_utc": start.astimezone(__import__("datetime").timezone.utc).isoformat(),
            "tzid": ev["DTSTART"].params.get("TZID"),
            "zone": getattr(tz, "key", None) or str(tz),
            "duration_s": int((end - start).total_seconds()),
            "summary": str(ev.get("SUMMARY", "")),
            "location": str(ev.get("LOCATION", "")),
            "organizer": str(ev.get("ORGANIZER", "")),
            "attendees": [str(a) for a in (ev.get("ATTENDEE") or [])] if isinstance(ev.get("ATTENDEE"), list)
            else ([str(ev["ATTENDEE"])] if ev.get("ATTENDEE") else []),
            "alarms_s": [int(a.decoded("TRIGGER").total_seconds()) for a in ev.walk("VALARM")],
        })
    return {
        "method": str(cal.get("METHOD", "")),
        "timezones": [str(t["TZID"]) for t in cal.walk("VTIMEZONE")],
        "events": events,
    }


def check(path):
    raw = open(path, "rb").read()
    msg = email.message_from_bytes(raw, policy=email.policy.strict)
    out = {
        "subject": str(msg["Subject"]),
        "message_id": str(msg["Message-ID"]),
        "list_unsubscribe": str(msg["List-Unsubscribe"]) if msg["List-Unsubscribe"] else None,
        "list_unsubscribe_post": str(msg["List-Unsubscribe-Post"]) if msg["List-Unsubscribe-Post"] else None,
        "to": str(msg["To"]) if msg["To"] else None,
        "top": msg.get_content_type(),
        "parts": [],
    }
    defects = list(msg.defects)
    for part in msg.walk():
        defects.extend(part.defects)
        if part.is_multipart():
            out["parts"].append({"type": part.get_content_type()})
            continue
        payload = part.get_payload(decode=True)
        entry = {
            "type": part.get_content_type(),
            "filename": part.get_filename(),
            "sha256": hashlib.sha256(payload).hexdigest(),
            "method": part.get_param("method"),
        }
        if part.get_content_type() in ("text/calendar", "application/ics"):
            entry["calendar"] = calendar(payload)
        out["parts"].append(entry)
    if defects:
        print(f"{path}: defects: {defects}", file=sys.stderr)
        sys.exit(1)
    return out


print(json.dumps([check(p) for p in sys.argv[1:]]))
