"""SMTP server for tests: stores every accepted message and indexes it.

Each message is written to a Maildir (one file per message in new/, with the
body exactly as received) and then described by one JSON line in the index file:
{"received_at", "peer", "helo", "tls", "auth_login", "mail_from",
"rcpt_tos", "subject", "message_id", "size", "path"}.

Started by the smtp-sink script. Authentication comes from the environment:
SMTP_SINK_AUTH=user:password accepts only that login; when it is unset, any
login is accepted and recorded.
"""

import argparse
import asyncio
import email.parser
import email.policy
import json
import logging
import mailbox
import os
import signal
import ssl
import time

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

log = logging.getLogger("smtp-sink")


class MaildirHandler:
    """aiosmtpd handler that stores each message and appends it to the index."""

    def __init__(self, maildir_path, index_path):
        # Maildir(create=True) creates tmp/, new/ and cur/ only when the
        # folder itself is missing.
        for folder in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(maildir_path, folder), exist_ok=True)
        self.maildir = mailbox.Maildir(maildir_path, create=False)
        self.maildir_path = maildir_path
        self.index_path = index_path

    async def handle_DATA(self, server, session, envelope):
        content = envelope.original_content or envelope.content
        try:
            key = self.maildir.add(content)
        except OSError as error:
            log.error("storing the message from %s failed: %s", envelope.mail_from, error)
            return "451 4.3.0 Storing the message failed; try again later"
        path = os.path.join(self.maildir_path, "new", key)

        headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(content)
        login = session.auth_data.login.decode() if isinstance(session.auth_data, LoginPassword) else None
        entry = {
            "received_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "peer": f"{session.peer[0]}:{session.peer[1]}",
            "helo": session.host_name,
            "tls": session.ssl is not None,
            "auth_login": login,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": str(headers["Subject"]) if headers["Subject"] is not None else None,
            "message_id": str(headers["Message-ID"]) if headers["Message-ID"] is not None else None,
            "size": len(content),
            "path": path,
        }
        # One write() of one line on an O_APPEND file, so readers never see half a line.
        with open(self.index_path, "a", encoding="utf-8") as index:
            index.write(json.dumps(entry, ensure_ascii=False) + "\n")

        log.info("stored message from %s to %s as %s", envelope.mail_from, ",".join(envelope.rcpt_tos), path)
        return "250 2.0.0 OK: stored as " + key


def make_authenticator(expected):
    """Return an aiosmtpd authenticator that accepts EXPECTED ("user:password"), or any login when it is None."""

    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        if expected is not None:
            user, _, password = expected.partition(":")
            if (auth_data.login.decode(), auth_data.password.decode()) != (user, password):
                log.info("rejected AUTH %s for login %r", mechanism, auth_data.login.decode())
                return AuthResult(success=False, handled=False)
        return AuthResult(success=True, auth_data=auth_data)

    return authenticate


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--maildir", required=True, help="Maildir that receives the messages")
    parser.add_argument("--index", required=True, help="JSON-lines file with one line per message")
    parser.add_argument("--hostname", required=True, help="name sent in the banner and EHLO reply")
    parser.add_argument("--tls-cert", help="PEM certificate for STARTTLS, which is offered only when this is set")
    parser.add_argument("--tls-key", help="private key of --tls-cert (PEM)")
    parser.add_argument("--require-tls", action="store_true", help="reject commands other than EHLO/STARTTLS before TLS")
    parser.add_argument("--auth-required", action="store_true", help="reject MAIL before a successful AUTH")
    return parser.parse_args()


async def serve(args):
    loop = asyncio.get_running_loop()
    handler = MaildirHandler(args.maildir, args.index)
    tls_context = None
    if args.tls_cert:
        tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls_context.load_cert_chain(args.tls_cert, args.tls_key)
    authenticator = make_authenticator(os.environ.get("SMTP_SINK_AUTH") or None)

    def make_protocol():
        return SMTP(
            handler,
            hostname=args.hostname,
            tls_context=tls_context,
            require_starttls=args.require_tls,
            # AUTH needs TLS when STARTTLS is offered, and works over plain SMTP otherwise.
            auth_require_tls=tls_context is not None,
            auth_required=args.auth_required,
            authenticator=authenticator,
            enable_SMTPUTF8=True,
            loop=loop,
        )

    server = await loop.create_server(make_protocol, args.host, args.port)
    log.info("listening on %s:%d as %s (STARTTLS %s)", args.host, args.port, args.hostname,
             "offered" if tls_context else "off")

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    await server.wait_closed()
    log.info("stopped")


def main():
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(parse_args()))


if __name__ == "__main__":
    main()
