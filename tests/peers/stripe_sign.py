"""Sign and verify Stripe webhook payloads with the official stripe library.

sign   prints the Stripe-Signature header value for a payload, made by
       stripe.WebhookSignature.generate_signature_header(): "t=<timestamp>,v1=<hex>",
       where v1 is the HMAC-SHA256 of "<timestamp>.<payload>" keyed with the
       whole secret string.
verify checks a header with stripe.WebhookSignature.verify_header() and
       exits with status 1 when it is invalid.

A payload file "-" means standard input. The payload is signed as the exact
bytes read, decoded as UTF-8, so send the same bytes that were signed.
"""

import argparse
import os
import sys

import stripe

# stripe.Webhook.construct_event() rejects timestamps older than this by default.
DEFAULT_TOLERANCE_S = 300


def fail(message):
    """Print MESSAGE and exit with status 2, the status of a usage error."""
    print(f"stripe-sign: {message}", file=sys.stderr)
    sys.exit(2)


def read_payload(path):
    if path == "-":
        data = sys.stdin.buffer.read()
    else:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as error:
            fail(f"cannot read payload {path}: {error.strerror}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        fail(f"payload {path} is not valid UTF-8: {error}")


def secret_from(args):
    secret = args.secret or os.environ.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        fail("missing secret: pass --secret or set STRIPE_WEBHOOK_SECRET")
    return secret


def sign(args):
    payload = read_payload(args.payload)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret_from(args), timestamp=args.timestamp)
    print(header)
    return 0


def verify(args):
    payload = read_payload(args.payload)
    try:
        stripe.WebhookSignature.verify_header(payload, args.header, secret_from(args), tolerance=args.tolerance)
    except stripe.SignatureVerificationError as error:
        print(f"invalid: {error.user_message or error}", file=sys.stderr)
        return 1
    print("valid")
    return 0


def parse_args():
    parser = argparse.ArgumentParser(prog="stripe-sign", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    sign_parser = commands.add_parser("sign", help="print the Stripe-Signature header value for a payload")
    sign_parser.add_argument("--secret", help="webhook signing secret (default: $STRIPE_WEBHOOK_SECRET)")
    sign_parser.add_argument("--payload", required=True, help="file with the request body, or - for stdin")
    sign_parser.add_argument("--timestamp", type=int, help="Unix time to sign with (default: now)")
    sign_parser.set_defaults(run=sign)

    verify_parser = commands.add_parser("verify", help="exit 0 when the header is valid for the payload, 1 otherwise")
    verify_parser.add_argument("--secret", help="webhook signing secret (default: $STRIPE_WEBHOOK_SECRET)")
    verify_parser.add_argument("--payload", required=True, help="file with the request body, or - for stdin")
    verify_parser.add_argument("--header", required=True, help="the Stripe-Signature header value")
    verify_parser.add_argument(
        "--tolerance",
        type=int,
        default=DEFAULT_TOLERANCE_S,
        help=f"maximum age of the timestamp in seconds, 0 for none (default {DEFAULT_TOLERANCE_S})",
    )
    verify_parser.set_defaults(run=verify)
    return parser.parse_args()


def main():
    args = parse_args()
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
