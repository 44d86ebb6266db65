#!/usr/bin/env python3
"""Process helpers for tests/offsite/servers.sh (stdlib only).

  proc.py spawn PIDFILE LOG CMD [ARG...]
      Starts CMD as a detached daemon and returns once it has exec'd:
      - double fork, so the daemon is not a child of the test shell (a test's bare `wait`
        would otherwise wait for it, and bash prints "Killed" when a test kill -9s it);
      - setsid, so a terminal's or ctest's signals to the test's process group miss it;
      - stdin /dev/null, stdout+stderr appended to LOG, every other inherited descriptor
        closed: a test harness's pipes held open by a daemon keep the harness waiting for
        EOF long after the test ended (ctest, `$(...)`, `| tee`).
      Writes the daemon's pid to PIDFILE. Exits 127 with a message when CMD cannot be
      executed (reported through a close-on-exec pipe, so there is no guessing).

  proc.py watchdog OWNER_PID DIR
      Run through `spawn`. Polls once a second; when the process OWNER_PID (the test shell
      that started the servers) is gone, which is what happens when ctest kills a test on
      timeout and its EXIT trap never runs, it kill -9s every pid listed in DIR/pids/*.pid,
      unmounts every mount point listed in DIR/mounts, removes the directories listed in
      DIR/rmdirs, and exits. It also exits quietly when DIR/pids disappears. The owner's
      start time is compared too, so a recycled pid does not keep the watchdog alive.
"""
import os
import signal
import subprocess
import sys
import time


def spawn(pidfile, log, argv):
    rfd, wfd = os.pipe()  # both close-on-exec (PEP 446)
    first = os.fork()
    if first == 0:
        os.close(rfd)
        try:
            os.setsid()
            second = os.fork()
            if second:
                os._exit(0)
            null = os.open("/dev/null", os.O_RDONLY)
            out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(out, 2)
            # keep only 0-2 and the exec-report pipe (close-on-exec, so it closes at exec)
            os.closerange(3, wfd)
            os.closerange(wfd + 1, 1 << 20)
            with open(pidfile + ".tmp", "w") as f:
                f.write("%d\n" % os.getpid())
            os.rename(pidfile + ".tmp", pidfile)
            os.execvp(argv[0], argv)
        except BaseException as e:  # exec failed (or the set-up before it)
            try:
                os.write(wfd, ("%s: %s" % (argv[0], e)).encode())
            finally:
                os._exit(127)
    os.close(wfd)
    os.waitpid(first, 0)
    msg = b""
    while True:
        chunk = os.read(rfd, 4096)
        if not chunk:
            break
        msg += chunk
    if msg:
        sys.stderr.write("proc.py spawn: cannot start %s\n" % msg.decode(errors="replace"))
        try:
            os.unlink(pidfile)
        except OSError:
            pass
        return 127
    return 0


def start_time(pid):
    """The process's start time in clock ticks, or None when it is gone (or a zombie)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return fields[19]  # field 22 of stat(5); fields[] starts at field 3


def read_lines(path):
    try:
        with open(path) as f:
            return [line.strip() for line in f if line.strip()]
    except OSError:
        return []


def watchdog(owner, directory):
    born = start_time(owner)
    piddir = os.path.join(directory, "pids")
    while born is not None and start_time(owner) == born:
        if not os.path.isdir(piddir):
            return 0  # stopped normally
        time.sleep(1)
    # the owner died without stopping its servers: clean up after it
    for name in sorted(os.listdir(piddir)) if os.path.isdir(piddir) else []:
        for line in read_lines(os.path.join(piddir, name)):
            try:
                os.kill(int(line), signal.SIGKILL)
            except (ValueError, OSError):
                pass
    for mnt in read_lines(os.path.join(directory, "mounts")):
        subprocess.call(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
    for d in read_lines(os.path.join(directory, "rmdirs")):
        subprocess.call(["rm", "-rf", "--", d])
    sys.stderr.write("watchdog: owner %d gone, killed the servers of %s\n" % (owner, directory))
    return 0


def main():
    if len(sys.argv) >= 5 and sys.argv[1] == "spawn":
        return spawn(sys.argv[2], sys.argv[3], sys.argv[4:])
    if len(sys.argv) == 4 and sys.argv[1] == "watchdog":
        return watchdog(int(sys.argv[2]), sys.argv[3])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
