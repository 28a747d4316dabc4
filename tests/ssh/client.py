#!/usr/bin/python3
"""A scripted SSH client for the otpd tests: keyboard-interactive login with
a password and/or a public key plus a one-time code, then one command.

    client.py --port N --user U --code CODE [--password PW] [--key FILE]
              [--password-method] [--host-key FILE.pub] [--command 'id -un']
              [--timeout S]

Answers "Password:" with --password (default: the environment variable
OTPD_TEST_PASSWORD, which other users cannot read in /proc, unlike the
command line) and "Verification code:" with --code (a combined
"Password & verification code:" prompt gets both). With --key,
public-key authentication comes first (AuthenticationMethods
publickey,keyboard-interactive). A login that is never asked for a code is
reported apart: refused (no-code-prompt), or let in (logged-in-without-code,
e.g. an unenrolled user on a `nullok` line; the command then runs too).

After logging in it opens an interactive shell on a pty, only to collect the
login messages: sshd shows the PAM_TEXT_INFO messages of a successful
authentication (e.g. "Backup code accepted; 9 left.") only there, never to
`ssh host command`. Then it runs the command without a pty.

stdout, one line each, in order:
    prompt: TEXT      a prompt the server sent
    message: TEXT     a message the server relayed (keyboard-interactive
                      name/instruction, text before a prompt, login message)
    output: TEXT      the command's standard output
    stderr: TEXT      the command's standard error
    result: WORD      logged-in | auth-failed | no-code-prompt | error |
                      logged-in-without-code
Diagnostics go to stderr.

Exit status:
    0  logged in, was asked for a code, and the command exited 0
    1  authentication failed after the code was asked for
    2  never asked for a code, and refused
    3  any other error (connection, host key mismatch, timeout, command failed)
    4  never asked for a code, and let in (the command exited 0)

Needs paramiko: run it with Debian's /usr/bin/python3 (python3-paramiko).
"""

import argparse
import os
import socket
import sys
import time
import traceback
import warnings

# paramiko 2.x warns about ciphers deprecated in `cryptography` on import;
# that noise would land in the tests' stderr.
warnings.filterwarnings("ignore")
try:
    import paramiko
except ImportError as e:
    print(f"client: error: {e}: run this with Debian's /usr/bin/python3 "
          "(apt install python3-paramiko)", file=sys.stderr)
    print("result: error")
    sys.exit(3)

LOGGED_IN = 0
AUTH_FAILED = 1
NO_CODE_PROMPT = 2
ERROR = 3
LOGGED_IN_WITHOUT_CODE = 4

RESULT_WORDS = {
    LOGGED_IN: "logged-in",
    AUTH_FAILED: "auth-failed",
    NO_CODE_PROMPT: "no-code-prompt",
    ERROR: "error",
    LOGGED_IN_WITHOUT_CODE: "logged-in-without-code",
}

# Shell prompts of a login shell (dash or bash, user or root), as the end of
# the pty output before anything was typed.
SHELL_PROMPTS = ("$ ", "# ")


class Failure(Exception):
    """An error that ends the session with exit status ERROR."""


def emit(kind, text):
    """One line of the report on stdout."""
    print(f"{kind}: {text}", flush=True)


def emit_lines(kind, text):
    """Each non-blank line of text, without carriage returns."""
    for line in text.replace("\r", "").split("\n"):
        if line.strip():
            emit(kind, line.rstrip())


class Answers:
    """The keyboard-interactive handler: answers prompts, remembers whether
    the code was asked for."""

    def __init__(self, password, code):
        self.password = password
        self.code = code
        self.asked_code = False
        self.unexpected = []

    def __call__(self, title, instructions, prompts):
        emit_lines("message", title or "")
        emit_lines("message", instructions or "")
        answers = []
        for prompt, _echo in prompts:
            # sshd puts PAM messages that came before a prompt in front of
            # it, one per line.
            *before, last = prompt.split("\n")
            emit_lines("message", "\n".join(before))
            emit("prompt", last.strip())
            answers.append(self.answer(last.lower()))
        return answers

    def answer(self, prompt):
        wants_code = "code" in prompt
        wants_password = "password" in prompt
        if wants_code:
            self.asked_code = True
        if wants_password and self.password is None:
            self.unexpected.append(prompt)
            return ""
        if wants_code and wants_password:
            return self.password + self.code
        if wants_code:
            return self.code
        if wants_password:
            return self.password
        self.unexpected.append(prompt)
        return ""


def check_host_key(transport, path):
    """Fails unless the server's host key is the one in `path` (.pub)."""
    with open(path, encoding="ascii") as f:
        fields = f.read().split()
    key = transport.get_remote_server_key()
    if fields[:2] != [key.get_name(), key.get_base64()]:
        raise Failure(f"host key mismatch: the server's key is not {path}")


def load_key(path):
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except paramiko.SSHException:
            continue
    raise Failure(f"cannot load the private key {path}")


def read_until_closed(chan, deadline):
    """stdout and stderr of a channel until the command exits."""
    out, err = b"", b""
    while not (chan.exit_status_ready() and not chan.recv_ready()
               and not chan.recv_stderr_ready() and chan.eof_received):
        if time.monotonic() > deadline:
            raise Failure("timed out waiting for the command")
        progressed = False
        if chan.recv_ready():
            out += chan.recv(65536)
            progressed = True
        if chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
            progressed = True
        if not progressed:
            time.sleep(0.01)
    return out.decode(errors="replace"), err.decode(errors="replace")


def login_messages(transport, timeout):
    """What an interactive login shows before the first shell prompt."""
    chan = transport.open_session(timeout=timeout)
    chan.settimeout(timeout)
    chan.get_pty(term="dumb", width=200, height=24)
    chan.invoke_shell()
    deadline = time.monotonic() + timeout
    text = ""
    while not text.endswith(SHELL_PROMPTS):
        if time.monotonic() > deadline:
            raise Failure(f"no shell prompt within {timeout}s; got {text!r}")
        data = chan.recv(4096)
        if not data:
            raise Failure(f"the shell ended before its prompt; got {text!r}")
        text += data.decode(errors="replace")
    chan.send(b"exit\n")
    chan.close()
    return text[: -len("$ ")]


def run_command(transport, command, timeout):
    chan = transport.open_session(timeout=timeout)
    chan.settimeout(timeout)
    chan.exec_command(command)
    out, err = read_until_closed(chan, time.monotonic() + timeout)
    status = chan.recv_exit_status()
    chan.close()
    return out, err, status


def session(args):
    """The whole exchange; returns the exit status."""
    answers = Answers(args.password, args.code)
    try:
        source = (args.source, 0) if args.source else None
        sock = socket.create_connection((args.host, args.port), timeout=args.timeout,
                                        source_address=source)
    except OSError as e:
        raise Failure(f"cannot connect to port {args.port}: {e}") from e
    transport = paramiko.Transport(sock)
    try:
        transport.banner_timeout = args.timeout
        transport.auth_timeout = args.timeout
        transport.start_client(timeout=args.timeout)
        if args.host_key:
            check_host_key(transport, args.host_key)
        try:
            if args.key:
                allowed = transport.auth_publickey(args.user, load_key(args.key))
                if not transport.is_authenticated():
                    if "keyboard-interactive" not in allowed:
                        print(f"client: after the key the server allows {allowed}",
                              file=sys.stderr)
                    transport.auth_interactive(args.user, answers)
            elif args.password_method:
                # SSH's password method: no prompt reaches the client.
                transport.auth_password(args.user, args.password)
            else:
                transport.auth_interactive(args.user, answers)
        except paramiko.AuthenticationException as e:
            print(f"client: authentication failed: {e!r}", file=sys.stderr)
            if answers.unexpected:
                print(f"client: unexpected prompts: {answers.unexpected}", file=sys.stderr)
            return AUTH_FAILED if answers.asked_code else NO_CODE_PROMPT
        if not transport.is_authenticated():
            raise Failure("the server neither accepted nor refused the login")
        if not answers.asked_code:
            print("client: logged in WITHOUT being asked for a code", file=sys.stderr)
        emit_lines("message", login_messages(transport, args.timeout))
        out, err, status = run_command(transport, args.command, args.timeout)
        emit_lines("output", out)
        emit_lines("stderr", err)
        if status != 0:
            raise Failure(f"the command exited with status {status}")
        return LOGGED_IN if answers.asked_code else LOGGED_IN_WITHOUT_CODE
    finally:
        transport.close()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--source", help="local address to connect from (e.g. 127.0.0.2)")
    p.add_argument("--user", required=True)
    p.add_argument("--code", required=True, help="the answer to the code prompt")
    p.add_argument("--password", default=os.environ.get("OTPD_TEST_PASSWORD"),
                   help="the answer to the password prompt (default: $OTPD_TEST_PASSWORD)")
    p.add_argument("--key", help="private key for public-key authentication first")
    p.add_argument("--password-method", action="store_true",
                   help="use SSH's password method instead of keyboard-interactive")
    p.add_argument("--host-key", help="the server's public host key (.pub) to expect")
    p.add_argument("--command", default="id -un")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per step")
    args = p.parse_args(argv)
    try:
        status = session(args)
    except Failure as e:
        print(f"client: error: {e}", file=sys.stderr)
        status = ERROR
    except (OSError, EOFError, paramiko.SSHException) as e:
        print(f"client: error: {e!r}", file=sys.stderr)
        status = ERROR
    except Exception:  # a bug here must not look like a refused login
        traceback.print_exc()
        status = ERROR
    emit("result", RESULT_WORDS[status])
    return status


if __name__ == "__main__":
    sys.exit(main())
