"""A real SMTP server for cronmail's integration tests: aiosmtpd on loopback.

Usage: smtpd.py SPEC.json

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
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def main():
    spec = json.load(open(sys.argv[1]))
    out = spec["out"]
    os.makedirs(out, exist_ok=True)
    events_path = os.path.join(out, "events.jsonl")
    counter = {"msg": 0}
    data_replies = list(spec.get("data_replies", []))
    users = spec.get("users", {})

    def log(**event):
        with open(events_path, "a") as f:
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

    class Handler:
        async def auth_XOAUTH2(self, server, args):
            """XOAUTH2 as Google documents it: base64 of user=U^Aauth=Bearer T^A^A.
            A bad token gets 334 + base64 JSON, then, after the client's empty line,
            the final failure reply."""
            blob = base64.b64decode(args[1]).decode("utf-8", "replace") if len(args) > 1 else ""
            log(cmd="XOAUTH2", arg=blob, tls=server.transport.get_extra_info("ssl_object") is not None)
            if xoauth2 and blob == "user=%s\x01auth=Bearer %s\x01\x01" % (xoauth2["user"], xoauth2["token"]):
                return AuthResult(success=True)
            error = json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})
            await server.push("334 " + base64.b64encode(error.encode()).decode())
            line = await server._reader.readline()
            log(cmd="XOAUTH2-CONTINUE", arg=line.decode("utf-8", "replace").strip())
            return AuthResult(success=False, handled=False, message=spec.get("auth_fail_reply"))

        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
            if spec.get("rcpt_reply"):
                return spec["rcpt_reply"]
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):
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
        auth_required=bool(users) or bool(xoauth2),
        auth_require_tls=spec.get("auth_require_tls", False),
        decode_data=False,
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
        print("READY %d" % port, flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
