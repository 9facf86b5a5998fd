"""A real SMTP server for cronmail's integration tests: aiosmtpd on loopback.

Usage: smtpd.py SPEC.json

With "oauth" in the spec, the same process also runs an OAuth2 authorization server
over HTTPS (token endpoint with the refresh_token, authorization_code + PKCE and
device_code grants; a device-code endpoint; an authorize page that redirects), and
XOAUTH2 accepts exactly the access tokens it issued and has not expired. It then
prints `READY <smtp port> <https port>`.

The spec says how to behave (TLS mode, users, canned failure replies). The server
prints `READY <port>` on stdout once it listens, appends every command it receives
to <out>/events.jsonl (so a test can prove from the server side that no AUTH and no
message byte arrived), and writes each accepted message to <out>/msg-N.json.
"""

import asyncio
import logging
import warnings

# aiosmtpd warns about test set-ups made on purpose (AUTH offered without TLS).
warnings.filterwarnings("ignore")
logging.getLogger("mail.log").setLevel(logging.CRITICAL)
import base64
import hashlib
import json
import os
import secrets
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    spec = json.load(open(sys.argv[1]))
    out = spec["out"]
    os.makedirs(out, exist_ok=True)
    events_path = os.path.join(out, "events.jsonl")
    counter = {"msg": 0}
    data_replies = list(spec.get("data_replies", []))
    # Seconds to wait before answering each RCPT, in order (a slow server mid-send).
    rcpt_sleeps = list(spec.get("rcpt_sleeps", []))
    users = spec.get("users", {})

    log_lock = threading.Lock()

    def log(**event):
        with log_lock, open(events_path, "a") as f:
            f.write(json.dumps(event) + "\n")

    ctx = None
    if spec.get("cert"):
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(spec["cert"], spec["key"])
        if spec.get("legacy_tls"):
            # Let OpenSSL 3 actually speak TLS 1.0/1.1 (it refuses at its default level).
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        if spec.get("max_tls"):
            ctx.maximum_version = getattr(ssl.TLSVersion, spec["max_tls"])
        if spec.get("min_tls"):
            ctx.minimum_version = getattr(ssl.TLSVersion, spec["min_tls"])

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = False
        login = None
        if isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode()
            ok = users.get(login) == auth_data.password.decode()
        log(cmd="AUTH-RESULT", mechanism=mechanism, login=login, ok=ok)
        if ok:
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False, message=spec.get("auth_fail_reply"))

    xoauth2 = spec.get("xoauth2")  # {"user": ..., "token": ...}
    oauth = spec.get("oauth")
    lock = threading.Lock()
    state = {
        "refresh": set(oauth.get("refresh_tokens", [])) if oauth else set(),
        "access": {},  # token -> {"expires": t, "uses": n}
        "codes": {},  # code -> (challenge, redirect_uri)
        "device_polls": 0,
        "n": 0,
    }

    def issue(with_refresh):
        """A new access token (and refresh token when asked), as a JSON body."""
        state["n"] += 1
        access = "at-%d-%s" % (state["n"], secrets.token_hex(4))
        state["access"][access] = {"expires": time.time() + oauth.get("expires_in", 3600), "uses": 0}
        body = {"token_type": "Bearer", "access_token": access, "expires_in": oauth.get("expires_in", 3600)}
        if with_refresh:
            rt = "rt-%d-%s" % (state["n"], secrets.token_hex(4))
            state["refresh"].add(rt)
            body["refresh_token"] = rt
        return body

    def token_ok(token):
        with lock:
            t = state["access"].get(token)
            if not t or t["expires"] < time.time():
                return False
            limit = oauth.get("token_uses")
            if limit is not None and t["uses"] >= limit:
                return False
            t["uses"] += 1
            return True

    class OAuthHandler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status, body, headers=()):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urllib.parse.urlparse(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            log(cmd="HTTP-GET", arg=url.path, query=q)
            if url.path != "/authorize":
                return self.reply(404, {"error": "not_found"})
            if q.get("client_id") != oauth["client_id"] or q.get("code_challenge_method") != "S256":
                return self.reply(400, {"error": "invalid_request"})
            with lock:
                code = "code-" + secrets.token_hex(4)
                state["codes"][code] = (q["code_challenge"], q["redirect_uri"])
            target = q["redirect_uri"] + "?" + urllib.parse.urlencode({"code": code, "state": q.get("state", "")})
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self):
            length = int(self.headers.get("Content-Length", "0"))
            form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
            url = urllib.parse.urlparse(self.path)
            log(cmd="HTTP-POST", arg=url.path, form=form)
            if form.get("client_id") != oauth["client_id"] or form.get("client_secret") != oauth.get("client_secret"):
                return self.reply(401, {"error": "invalid_client", "error_description": "unknown client"})
            if url.path == "/devicecode":
                return self.reply(200, {
                    "device_code": "dev-123", "user_code": "ABCD-EFGH",
                    "verification_uri": "https://login.example/device", "expires_in": 600, "interval": 0,
                    "message": "To sign in, open https://login.example/device and enter the code ABCD-EFGH.",
                })
            if url.path != "/token":
                return self.reply(404, {"error": "not_found"})
            fail = oauth.get("fail")
            if fail:
                return self.reply(fail.get("status", 400), {k: v for k, v in fail.items() if k != "status"})
            grant = form.get("grant_type")
            with lock:
                if grant == "refresh_token":
                    rt = form.get("refresh_token")
                    if rt not in state["refresh"]:
                        return self.reply(400, {"error": "invalid_grant", "error_description": "AADSTS70008: The provided refresh token has expired or been revoked."})
                    if oauth.get("rotate"):
                        state["refresh"].discard(rt)
                        return self.reply(200, issue(True))
                    return self.reply(200, issue(False))
                if grant == "authorization_code":
                    entry = state["codes"].pop(form.get("code"), None)
                    verifier = form.get("code_verifier", "")
                    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
                    if not entry or entry[0] != challenge or entry[1] != form.get("redirect_uri"):
                        return self.reply(400, {"error": "invalid_grant", "error_description": "bad code, verifier or redirect_uri"})
                    return self.reply(200, issue(True))
                if grant == "urn:ietf:params:oauth:grant-type:device_code":
                    if form.get("device_code") != "dev-123":
                        return self.reply(400, {"error": "invalid_grant"})
                    state["device_polls"] += 1
                    if state["device_polls"] <= oauth.get("device_pending", 1):
                        return self.reply(400, {"error": "authorization_pending", "error_description": "AADSTS70016: pending"})
                    return self.reply(200, issue(True))
            return self.reply(400, {"error": "unsupported_grant_type"})

    https_port = None
    if oauth:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), OAuthHandler)
        http_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        http_ctx.load_cert_chain(spec["cert"], spec["key"])
        httpd.socket = http_ctx.wrap_socket(httpd.socket, server_side=True)
        https_port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()

    class Handler:
        async def auth_XOAUTH2(self, server, args):
            """XOAUTH2 as Google documents it: base64 of user=U^Aauth=Bearer T^A^A.
            A bad token gets 334 + base64 JSON, then, after the client's empty line,
            the final failure reply."""
            blob = base64.b64decode(args[1]).decode("utf-8", "replace") if len(args) > 1 else ""
            log(cmd="XOAUTH2", arg=blob, tls=server.transport.get_extra_info("ssl_object") is not None)
            if xoauth2 and blob == "user=%s\x01auth=Bearer %s\x01\x01" % (xoauth2["user"], xoauth2["token"]):
                return AuthResult(success=True)
            prefix = "user=%s\x01auth=Bearer " % (oauth or {}).get("user")
            if oauth and blob.startswith(prefix) and blob.endswith("\x01\x01") and token_ok(blob[len(prefix):-2]):
                return AuthResult(success=True)
            error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})
            await server.push("334 " + base64.b64encode(error.encode()).decode())
            line = await server._reader.readline()
            log(cmd="XOAUTH2-CONTINUE", arg=line.decode("utf-8", "replace").strip())
            return AuthResult(success=False, handled=False, message=spec.get("auth_fail_reply"))

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if rcpt_sleeps:
                await asyncio.sleep(rcpt_sleeps.pop(0))
            if spec.get("rcpt_reply"):
                return spec["rcpt_reply"]
            # {"address": "550 ..."}: refuse those recipients only.
            if address in spec.get("rcpt_refuse", {}):
                return spec["rcpt_refuse"][address]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
            # Seconds to stall after the whole message arrived, before the reply.
            if spec.get("data_sleep"):
                await asyncio.sleep(spec["data_sleep"])
            if data_replies:
                return data_replies.pop(0)
            counter["msg"] += 1
            n = counter["msg"]
            path = os.path.join(out, "msg-%d.json" % n)
            with open(path + ".tmp", "w") as f:
                json.dump(
                    {
                        "mail_from": envelope.mail_from,
                        "rcpt_tos": envelope.rcpt_tos,
                        "data": envelope.original_content.decode("utf-8", "replace"),
                        "tls": server.transport.get_extra_info("ssl_object") is not None,
                    },
                    f,
                )
            os.rename(path + ".tmp", path)
            return "250 2.0.0 OK queued as %d" % n

    class LoggingSMTP(SMTP):
        """Records each command, with whether TLS was up, before handling it."""

        def _note(self, cmd, arg):
            log(cmd=cmd, arg=arg, tls=self.transport.get_extra_info("ssl_object") is not None)

        async def smtp_EHLO(self, arg):
            self._note("EHLO", arg)
            return await super().smtp_EHLO(arg)

        async def smtp_STARTTLS(self, arg):
            self._note("STARTTLS", arg)
            if spec.get("starttls_reply"):
                await self.push(spec["starttls_reply"])
                return
            return await super().smtp_STARTTLS(arg)

        async def smtp_AUTH(self, arg):
            self._note("AUTH", arg)
            return await super().smtp_AUTH(arg)

        async def smtp_MAIL(self, arg):
            self._note("MAIL", arg)
            return await super().smtp_MAIL(arg)

        async def smtp_RCPT(self, arg):
            self._note("RCPT", arg)
            return await super().smtp_RCPT(arg)

        async def smtp_DATA(self, arg):
            self._note("DATA", arg)
            return await super().smtp_DATA(arg)

        async def smtp_QUIT(self, arg):
            self._note("QUIT", arg)
            return await super().smtp_QUIT(arg)

    mode = spec["mode"]
    kwargs = dict(
        hostname="cronmail-test",
        authenticator=authenticator if users else None,
        auth_required=bool(users) or bool(xoauth2) or bool(oauth),
        auth_require_tls=spec.get("auth_require_tls", False),
        decode_data=False,
        # Seconds of silence before the server closes a connection (aiosmtpd's default: 300).
        timeout=spec.get("idle_timeout", 300),
    )
    if mode == "starttls":
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = True
    elif mode == "plain":
        pass  # no STARTTLS advertised at all
    elif mode != "implicit":
        raise SystemExit("unknown mode " + mode)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: LoggingSMTP(Handler(), **kwargs),
            host="127.0.0.1",
            port=spec.get("port", 0),
            ssl=ctx if mode == "implicit" else None,
        )
        port = server.sockets[0].getsockname()[1]
        if https_port:
            print("READY %d %d" % (port, https_port), flush=True)
        else:
            print("READY %d" % port, flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
