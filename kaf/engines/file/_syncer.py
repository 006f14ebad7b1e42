"""
The loop of an fsync process (syncer.py beside it starts it): standard library
only, so that it starts fast and small.

    python -I -S _syncer.py FD

FD is a UNIX stream socket.  Each request is one byte carrying one file
descriptor (SCM_RIGHTS); the answer, in the order asked, is a line with
0 when C{fsync} of it succeeded or the errno it failed with.  The loop
ends when the socket does (the server closed it or is gone), never
before: signals meant for the server (^C, a service manager's SIGTERM to
the whole group) must not fail the fsyncs of its last writes.
"""
import errno
import os
import signal
import socket
import sys


def serve(sock: socket.socket) -> None:
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(sock, 1, 1)
        except ConnectionError:
            return
        if not data:
            return
        if len(fds) == 1:
            try:
                os.fsync(fds[0])
                answer = 0
            except OSError as e:
                answer = e.errno or errno.EIO
        else:
            answer = errno.EBADMSG
        for fd in fds:
            os.close(fd)
        try:
            sock.sendall(b"%d\n" % (answer,))
        except ConnectionError:
            return


def main() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    serve(socket.socket(fileno=int(sys.argv[1])))


if __name__ == "__main__":
    main()
