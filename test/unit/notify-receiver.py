# A stand-in for systemd's notification socket (tests): binds a unix datagram socket at argv[1] (a path, or
# @name for an abstract one), prints "bound", then one JSON line per datagram received: its text and whether
# the path argv[2] was a symlink at that moment. Ends after argv[3] seconds without a datagram.
import json
import os
import socket
import sys

name, link, idle = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind('\0' + name[1:] if name.startswith('@') else name)
print('bound', flush=True)
s.settimeout(idle)
while True:
    try:
        data = s.recv(65536)
    except socket.timeout:
        break
    print(json.dumps({'text': data.decode(), 'linked': os.path.islink(link)}), flush=True)
