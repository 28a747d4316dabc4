#!/usr/bin/python3
"""A real SSH login with a TOTP code, on this machine, with nothing left
behind (`make demo`, after `cargo build --workspace`).

1. starts a private otpd (socket and store in a temporary directory);
2. creates a throwaway user with a random name and password;
3. enrolls it with `otpctl enroll` (the QR code is shown) and confirms it
   with a code computed from the secret, as an authenticator app would;
4. starts a private sshd on 127.0.0.1 (free port, own config and host key)
   with its own PAM service (password, then code via pam_otpd);
5. logs in over SSH with the password and the current code (paramiko, keyboard-
   interactive) and runs `id -un`;
6. shows `otpctl status`;
7. removes everything it created: sshd, PAM service file, user and home,
   otpd, temporary directory.

It never touches /etc/pam.d/sshd or the system's sshd. Needs root (it
creates a user and a PAM service) and Debian's /usr/bin/python3 with
python3-paramiko.
"""

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TARGET = os.environ.get("OTPD_TARGET_DIR", os.path.join(REPO, "target", "debug"))
OTPD = os.path.join(TARGET, "otpd")
OTPCTL = os.path.join(TARGET, "otpctl")
PAM_MODULE = os.path.join(TARGET, "libpam_otpd.so")
SSHD = "/usr/sbin/sshd"

# `import client` below: from this directory, without leaving __pycache__.
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True


def step(text):
    print(f"\n==> {text}", flush=True)


def detail(text):
    print(f"    {text}", flush=True)


def run(args, **kwargs):
    """Runs a command; raises with its output if it fails."""
    r = subprocess.run(args, capture_output=True, text=True, **kwargs)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({r.returncode}): {r.stdout}{r.stderr}")
    return r


def totp(secret_b32, counter, digits=6, algorithm="SHA1"):
    """RFC 6238 / 4226, as an authenticator app computes it."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, counter.to_bytes(8, "big"), getattr(hashlib, algorithm.lower())).digest()
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset:offset + 4], "big") & 0x7FFFFFFF
    return str(value % 10 ** digits).zfill(digits)


class Totp:
    """Codes from an otpauth URI for the real clock, never a step twice
    (otpd refuses a step already used). The previous step is used only while
    it stays valid for a while, so a slow login never carries an expired
    code."""

    MARGIN = 10

    def __init__(self, uri):
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(uri).query))
        self.secret = params["secret"]
        self.digits = int(params.get("digits", 6))
        self.period = int(params.get("period", 30))
        self.algorithm = params.get("algorithm", "SHA1")
        self.last = 0

    def fresh(self):
        now = int(time.time())
        current = now // self.period
        earliest = current - 1 if self.period - now % self.period > self.MARGIN else current
        counter = max(earliest, self.last + 1)
        if counter > current + 1:
            raise RuntimeError("no fresh code before the next time step")
        self.last = counter
        return totp(self.secret, counter, self.digits, self.algorithm)


def start_otpd(workdir):
    """The built otpd on a socket in workdir; waits for READY=1."""
    socket_path = os.path.join(workdir, "otpd.sock")
    config = os.path.join(workdir, "otpd.toml")
    open(config, "w").close()  # empty: not /etc/otpd/otpd.toml
    notify_path = os.path.join(workdir, "notify.sock")
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(notify_path)
    notify.settimeout(0.1)
    log = open(os.path.join(workdir, "otpd.log"), "wb")
    proc = subprocess.Popen(
        [OTPD, "--config", config, "--socket", socket_path,
         "--state-dir", os.path.join(workdir, "state")],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log,
        env=dict(os.environ, NOTIFY_SOCKET=notify_path, RUST_LOG="info"))
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                if b"READY=1" in notify.recv(256):
                    return proc, socket_path
            except socket.timeout:
                continue
        proc.kill()
        proc.wait()
        with open(log.name, encoding="utf-8", errors="replace") as f:
            raise RuntimeError(f"otpd did not start:\n{f.read()}")
    finally:
        notify.close()
        os.unlink(notify_path)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children_of(pid):
    """Processes whose parent is pid (sshd's connections)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat[stat.rindex(")") + 1:].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_until(seconds, done):
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Demo:
    """Everything the demo creates, so that cleanup() can remove it."""

    def __init__(self):
        self.workdir = None
        self.otpd = None
        self.user = None
        self.pam_file = None
        self.sshd = None

    def otpctl(self, *args, **kwargs):
        return run([OTPCTL, "--socket", self.socket, *args], **kwargs)

    def main(self):
        step("[1/7] Starting a private otpd")
        self.workdir = tempfile.mkdtemp(prefix="otpd-demo-")
        os.chmod(self.workdir, 0o755)  # sshd's PAM module must reach the socket
        self.otpd, self.socket = start_otpd(self.workdir)
        # otpd puts its root-only PAM socket beside the public one.
        self.pam_socket = os.path.join(self.workdir, "pam.sock")
        detail(f"otpd pid {self.otpd.pid}, socket {self.socket}")

        step("[2/7] Creating a throwaway user")
        name = "otpdemo" + secrets.token_hex(3)
        password = secrets.token_urlsafe(12)
        run(["useradd", "--create-home", "--shell", "/bin/sh",
             "--comment", "otpd demo user", name])
        self.user = name
        run(["chpasswd"], input=f"{name}:{password}\n")
        detail(f"user {name} with a random password")

        step(f"[3/7] Enrolling {name}: otpctl enroll {name}")
        enrolled = self.otpctl("enroll", name, "--issuer", "otpd-demo",
                               stdin=subprocess.DEVNULL)
        print(enrolled.stdout, flush=True)
        uri = next(line.split(None, 1)[1] for line in enrolled.stdout.splitlines()
                   if line.startswith("URI:"))
        codes = Totp(uri)
        code = codes.fresh()
        detail(f"code computed from the secret (RFC 6238), as an app would: "
               f"otpctl confirm {name} {code}")
        confirmed = self.otpctl("confirm", name, code)
        print(confirmed.stdout, flush=True)

        step("[4/7] Starting a private sshd on 127.0.0.1")
        port, host_key_pub = self.start_sshd(name)

        code = codes.fresh()
        step(f"[5/7] ssh {name}@127.0.0.1 -p {port} 'id -un'  "
             f"(password, then code {code})")
        import client  # tests/ssh/client.py: paramiko, keyboard-interactive
        status = client.main(["--port", str(port), "--user", name, "--password", password,
                              "--code", code, "--host-key", host_key_pub])
        if status == client.LOGGED_IN:
            detail(f"logged in as {name} with password + code")
        else:
            detail(f"the login FAILED (client exit status {status}); sshd's log:")
            with open(os.path.join(self.workdir, "sshd.log"), errors="replace") as f:
                print(f.read(), flush=True)

        step("[6/7] otpctl status")
        print(self.otpctl("status").stdout, flush=True)
        return 0 if status == client.LOGGED_IN else 1

    def start_sshd(self, user):
        """sshd under its own name (= its PAM service), for `user` only."""
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation
        service = "otpd-demo-sshd-" + secrets.token_hex(4)
        pam_file = f"/etc/pam.d/{service}"
        with open(pam_file, "x") as f:
            self.pam_file = pam_file
            f.write(f"# otpd demo (tests/ssh/demo.py); removed when it ends\n"
                    f"auth     required  pam_unix.so\n"
                    f"auth     required  {PAM_MODULE} socket={self.pam_socket}\n"
                    f"account  required  pam_unix.so\n"
                    f"session  required  pam_unix.so\n")
        detail(f"PAM service {pam_file}: pam_unix (password), then pam_otpd (code)")
        exe = os.path.join(self.workdir, service)
        os.symlink(SSHD, exe)
        host_key = os.path.join(self.workdir, "host_ed25519")
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "otpd-demo", "-f", host_key])
        port = free_port()
        config = os.path.join(self.workdir, "sshd_config")
        with open(config, "w") as f:
            f.write(f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {host_key}\n"
                    f"PidFile {self.workdir}/sshd.pid\n"
                    "UsePAM yes\nKbdInteractiveAuthentication yes\n"
                    "PasswordAuthentication no\nPubkeyAuthentication no\n"
                    "AuthenticationMethods keyboard-interactive\n"
                    f"AllowUsers {user}\nPermitRootLogin no\n"
                    "PrintMotd no\nPrintLastLog no\nUseDNS no\nLogLevel DEBUG\n")
        log = open(os.path.join(self.workdir, "sshd.log"), "wb")
        self.sshd = subprocess.Popen([exe, "-D", "-e", "-f", config],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        listening = f"Server listening on 127.0.0.1 port {port}.".encode()

        def ready():
            if self.sshd.poll() is not None:
                raise RuntimeError(f"sshd exited ({self.sshd.returncode}):\n"
                                   + open(log.name, errors="replace").read())
            with open(log.name, "rb") as f:
                if listening not in f.read():
                    return False
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return True
            except OSError:
                return False

        if not wait_until(20, ready):
            raise RuntimeError("sshd is not listening after 20 s")
        detail(f"{exe} -D -e -f {config}")
        detail(f"pid {self.sshd.pid}, port {port}, AllowUsers {user}")
        return port, host_key + ".pub"

    def cleanup(self):
        step("[7/7] Cleaning up")
        if self.sshd is not None:
            listener = self.sshd.pid
            # Connections end with their client; stop those that did not.
            if not wait_until(3, lambda: not children_of(listener)):
                for pid in children_of(listener):
                    os.kill(pid, signal.SIGTERM)
                wait_until(3, lambda: not children_of(listener))
            self.sshd.terminate()
            try:
                self.sshd.wait(5)
            except subprocess.TimeoutExpired:
                self.sshd.kill()
                self.sshd.wait()
            detail("stopped sshd")
        if self.pam_file is not None:
            os.unlink(self.pam_file)
            detail(f"removed {self.pam_file}")
        if self.user is not None:
            r = subprocess.run(["userdel", "--force", "--remove", self.user],
                               capture_output=True, text=True)
            if r.returncode == 0:
                detail(f"removed user {self.user} and its home")
            else:
                detail(f"userdel {self.user} FAILED: {r.stderr.strip()}")
        if self.otpd is not None:
            self.otpd.terminate()
            try:
                self.otpd.wait(10)
            except subprocess.TimeoutExpired:
                self.otpd.kill()
                self.otpd.wait()
            detail("stopped otpd")
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            detail(f"removed {self.workdir} (otpd's store, sshd's config, keys, logs)")


def main():
    if os.geteuid() != 0:
        print("demo.py must run as root: it creates a user and a PAM service "
              "and starts sshd and otpd (sudo make demo)", file=sys.stderr)
        return 1
    missing = [p for p in (OTPD, OTPCTL, PAM_MODULE, SSHD) if not os.path.exists(p)]
    if missing:
        print(f"missing: {', '.join(missing)}; build with `cargo build --workspace` "
              "(make demo does) and install openssh-server", file=sys.stderr)
        return 1
    demo = Demo()
    try:
        return demo.main()
    except Exception as e:  # report, then clean up
        print(f"\ndemo failed: {e}", file=sys.stderr)
        return 1
    finally:
        demo.cleanup()


if __name__ == "__main__":
    sys.exit(main())
